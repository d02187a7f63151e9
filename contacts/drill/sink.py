"""The drill's mailboxes: a real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what Lifeline
sends (each message's bytes and its envelope sender, the VERP return path a late bounce goes
back to), and refuses the addresses the drill made stale (550, as a dead mailbox would)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser


@dataclass(frozen=True)
class Received:
    recipient: str
    subject: str
    list_id: str
    message_id: str
    at: float  # time.monotonic() when the message was accepted
    text: str = ""  # the plain-text body, kept only for the support desk's request emails
    envelope_sender: str = ""  # MAIL FROM: where the recipient's servers send bounces
    content: bytes = b""  # the message as it arrived, for answers and bounces to it


REQUEST_SUBJECT = "[LL-"  # a support request's emails: the drill reads their codes


class Sink:
    """Accepts every message to a live address; `dead` addresses get 550 at RCPT TO."""

    def __init__(self, dead: set[str] | None = None):
        self.dead = {address.lower() for address in dead or ()}
        self.received: list[Received] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._controller = None
        self.port = 0

    # aiosmtpd handler hooks
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.lower() in self.dead:
            with self._lock:
                self.refused += 1
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        headers = BytesHeaderParser().parsebytes(envelope.content)  # compat32: fast
        subject = str(make_header(decode_header(headers.get("Subject", ""))))
        text = _plain_text(envelope.content) if subject.startswith(REQUEST_SUBJECT) else ""
        now = time.monotonic()
        with self._lock:
            for recipient in envelope.rcpt_tos:
                self.received.append(Received(
                    recipient=recipient.lower(), subject=subject,
                    list_id=str(headers.get("List-Id", "")),
                    message_id=str(headers.get("Message-ID", "")), at=now, text=text,
                    envelope_sender=envelope.mail_from or "", content=envelope.content))
        return "250 Message accepted"

    def start(self, port: int = 0) -> int:
        """Listen on `port` of 127.0.0.1 (0: a free one); the port."""
        from aiosmtpd.controller import Controller

        logging.getLogger("mail.log").setLevel(logging.WARNING)  # a line per SMTP command
        if not port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        self.port = port
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self.port

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_for(self, found, *, timeout: float, interval: float = 0.2):
        """Poll until `found(messages)` gives something; that, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            result = found(self.messages())
            if result or time.monotonic() >= deadline:
                return result or None
            time.sleep(interval)


def _plain_text(content: bytes) -> str:
    body = message_from_bytes(content, policy=policy.default).get_body(("plain",))
    return body.get_content() if body is not None else ""

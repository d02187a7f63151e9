"""One asyncio SMTP session to a relay, small on purpose: open it (greeting, EHLO, STARTTLS or
TLS, AUTH), then send messages over it, pipelined (RFC 2920) when the relay offers PIPELINING.

Pipelined, a message costs one round trip: its end of data goes in the same write as the next
message's MAIL, RCPT and DATA, and their four replies come back together. `SmtpSession.send`
hands each message's outcome to the caller as soon as its reply is read; when the
connection drops, it says which messages were on the wire (their outcome is unknown) and
which had only their envelope sent (known not delivered). Nothing here logs an address.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from contacts.core.mail import Mailer, MailFailed
from contacts.core.mail import _dot_stuffed as dot_stuffed
from contacts.core.mail import _envelope as envelope

MAX_REPLY_LINES = 100
LOCAL_NAME = socket.gethostname() or "localhost"


class RelayUnavailable(Exception):  # noqa: N818 - a state, not a programming error
    """The relay could not be reached or refused the session (connection, greeting, EHLO,
    STARTTLS, AUTH): another relay may take it."""


class ConnectionLost(Exception):  # noqa: N818
    """The session ended mid-way: dropped, timed out, a 421, or a reply that is no SMTP."""


@dataclass
class Letter:
    """One message to send: its envelope recipient and its bytes (not yet dot-stuffed), and
    its own envelope sender (a VERP return path naming it; empty: the relay's sender)."""

    to: str
    data: bytes
    tag: object = None  # the caller's, handed back with the outcome
    sender: str = ""


@dataclass
class Dropped:
    """What a lost connection leaves: `unknown` had their data sent and no answer read
    (they may have been delivered); `unsent` had at most their envelope sent."""

    reason: str
    unknown: list[Letter] = field(default_factory=list)
    unsent: list[Letter] = field(default_factory=list)


# outcome(letter, failure or None for delivered): may block briefly (the outcome writer)
Outcome = Callable[[Letter, MailFailed | None], None]


class SmtpSession:
    def __init__(self, relay: Mailer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, timeout: float):
        self.relay, self.reader, self.writer, self.timeout = relay, reader, writer, timeout
        self.extensions: set[str] = set()
        self.where = f"{relay.host}:{relay.port}"
        self.carried = 0  # messages handed to this session

    @classmethod
    async def open(cls, relay: Mailer, timeout: float | None = None) -> SmtpSession:
        timeout = timeout or relay.timeout
        context = ssl.create_default_context() if relay.security in ("tls", "starttls") else None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                relay.host, relay.port, ssl=context if relay.security == "tls" else None,
                limit=65536), timeout)
        except (OSError, TimeoutError) as exc:
            raise RelayUnavailable(f"{type(exc).__name__}") from None
        session = cls(relay, reader, writer, timeout)
        try:
            await session._start(context)
        except (ConnectionLost, RelayUnavailable, OSError, ssl.SSLError) as exc:
            session.abort()
            reason = (exc.args[0] if isinstance(exc, RelayUnavailable | ConnectionLost)
                      else type(exc).__name__)
            raise RelayUnavailable(reason) from None
        return session

    async def _start(self, context: ssl.SSLContext | None) -> None:
        code, _ = await self.reply()
        if code != 220:
            raise RelayUnavailable(f"greeting {code}")
        await self._hello()
        if self.relay.security == "starttls":
            if "STARTTLS" not in self.extensions:
                raise RelayUnavailable("STARTTLS not offered")
            if (await self.command("STARTTLS"))[0] != 220:
                raise RelayUnavailable("STARTTLS refused")
            await self.writer.start_tls(context, server_hostname=self.relay.host)
            await self._hello()
        if self.relay.username:
            await self._login()

    async def _hello(self) -> None:
        code, lines = await self.command(f"EHLO {LOCAL_NAME}")
        if code == 250:
            self.extensions = {line.split(" ", 1)[0].upper() for line in lines[1:]}
            self.extensions |= {f"AUTH={method.upper()}" for line in lines[1:]
                                if line.upper().startswith("AUTH ")
                                for method in line.split()[1:]}
        elif (await self.command(f"HELO {LOCAL_NAME}"))[0] != 250:
            raise RelayUnavailable(f"EHLO and HELO refused: {code}")

    async def _login(self) -> None:
        user, password = self.relay.username, self.relay.password or ""
        if "AUTH=LOGIN" in self.extensions and "AUTH=PLAIN" not in self.extensions:
            steps = [("AUTH LOGIN", 334), (_b64(user), 334), (_b64(password), 235)]
        else:
            token = _b64("\0" + user + "\0" + password)
            steps = [(f"AUTH PLAIN {token}", 235)]
        for line, expected in steps:
            code, _ = await self.command(line)
            if code != expected:
                raise RelayUnavailable(f"AUTH refused: {code}")

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.extensions

    async def command(self, line: str) -> tuple[int, list[str]]:
        self.writer.write(line.encode() + b"\r\n")
        return await self.reply()

    async def reply(self) -> tuple[int, list[str]]:
        """One reply, all its lines; a drop, a timeout or a malformed reply is ConnectionLost."""
        return (await self.replies(1, []))[0]

    async def replies(self, count: int, answers: list) -> list[tuple[int, list[str]]]:
        """The next `count` replies (a flight's), within one timeout, into `answers`: when
        the connection is lost mid-way, those read before are there."""
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(count):
                    answers.append(await self._read_reply())
        except (OSError, ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            raise ConnectionLost("dropped") from None
        except TimeoutError:
            raise ConnectionLost("timed out") from None
        return answers

    async def _read_reply(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        while len(lines) < MAX_REPLY_LINES:
            raw = await self.reader.readline()
            if not raw.endswith(b"\n"):
                raise ConnectionLost("dropped")
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(text) < 3 or not text[:3].isdigit() or text[3:4] not in ("", " ", "-"):
                raise ConnectionLost("not an SMTP reply")
            lines.append(text[4:])
            if text[3:4] != "-":
                code = int(text[:3])
                if code == 421:
                    raise ConnectionLost("421 closing")
                return code, lines
        raise ConnectionLost("a reply of too many lines")

    async def send(self, take: Callable[[], Awaitable[Letter | None]],
                   outcome: Outcome, limit: int) -> Dropped | None:
        """Send what `take` gives (None: nothing more) until `limit` messages in all have
        gone through this session; None when it is still good to use, else what was lost."""
        if self.pipelining:
            return await self._send_pipelined(take, outcome, limit)
        return await self._send_in_lockstep(take, outcome, limit)

    def _refusal(self, letter: Letter) -> MailFailed | None:
        """What the relay would refuse before anything is sent for this letter."""
        sender = letter.sender or self.relay.sender
        if any(mark in address for address in (sender, letter.to) for mark in "\r\n"):
            return _recipient_refused(self.where, 501)
        if not (letter.to.isascii() and sender.isascii()) and "SMTPUTF8" not in self.extensions:
            return MailFailed(f"{self.where} does not offer SMTPUTF8, which this address "
                              "needs", permanent=True, bounced=True)
        return None

    def _mail_from(self, letter: Letter) -> str:
        """The letter's MAIL FROM command, SMTPUTF8 when its sender or recipient needs it."""
        sender = letter.sender or self.relay.sender
        utf8 = not (letter.to.isascii() and sender.isascii())
        return f"MAIL FROM:{envelope(sender)}{' SMTPUTF8' if utf8 else ''}"

    def _envelope(self, letter: Letter) -> bytes:
        return (f"{self._mail_from(letter)}\r\nRCPT TO:{envelope(letter.to)}\r\n"
                "DATA\r\n").encode()

    async def _next(self, take: Callable[[], Awaitable[Letter | None]], outcome: Outcome,
                    limit: int) -> Letter | None:
        """The next letter this session can send (refused ones settled on the way)."""
        while self.carried < limit:
            letter = await take()
            if letter is None:
                return None
            self.carried += 1
            refusal = self._refusal(letter)
            if refusal is None:
                return letter
            outcome(letter, refusal)
        return None

    async def _send_pipelined(self, take, outcome: Outcome, limit: int) -> Dropped | None:
        on_wire: Letter | None = None  # its DATA got 354; its body goes in the next flight
        reset = False  # a refused transaction to clear (RSET) at the head of the next flight
        while True:
            letter = await self._next(take, outcome, limit)
            if on_wire is None and letter is None:
                return await self._reset() if reset else None
            flight = [dot_stuffed(on_wire.data)] if on_wire is not None else []
            flight += [b"RSET\r\n"] if reset else []
            flight += [self._envelope(letter)] if letter is not None else []
            self.writer.write(b"".join(flight))
            expected = (on_wire is not None) + reset + 3 * (letter is not None)
            read: list[tuple[int, list[str]]] = []
            try:
                await self.replies(expected, read)
            except ConnectionLost as lost:
                if on_wire is not None and read:  # its answer came before the loss
                    outcome(on_wire, _data_outcome(self.where, read[0][0]))
                    on_wire = None
                return Dropped(lost.args[0], unknown=[on_wire] if on_wire else [],
                               unsent=[letter] if letter else [])
            answers = iter(read)
            if on_wire is not None:
                finished, on_wire = on_wire, None
                outcome(finished, _data_outcome(self.where, next(answers)[0]))
            if reset:
                reset = False
                if next(answers)[0] != 250:
                    return Dropped("RSET refused", unsent=[letter] if letter else [])
            if letter is None:
                continue
            (mail, _), (rcpt, _), (data, _) = answers
            if data == 354 and mail == 250 and rcpt in (250, 251):
                on_wire = letter
                continue
            if data == 354:  # a server that said 354 anyway: end the empty message
                self.writer.write(b".\r\n")
                try:
                    await self.reply()
                except ConnectionLost as lost:
                    return Dropped(lost.args[0], unsent=[letter])
            outcome(letter, _envelope_outcome(self.where, mail, rcpt, data))
            reset = True
            if mail != 250:  # our sender refused: every message would be; stop here
                return await self._reset() or Dropped(f"sender refused: {mail}")

    async def _send_in_lockstep(self, take, outcome: Outcome, limit: int) -> Dropped | None:
        """Without PIPELINING: one command, one reply."""
        while (letter := await self._next(take, outcome, limit)) is not None:
            sent_data = False
            try:
                mail, rcpt, data = await self._lockstep_envelope(letter)
                if data == 354:
                    self.writer.write(dot_stuffed(letter.data))
                    sent_data = True
                    code, _ = await self.reply()
                    outcome(letter, _data_outcome(self.where, code))
                    continue
                outcome(letter, _envelope_outcome(self.where, mail, rcpt, data))
                if (await self.command("RSET"))[0] != 250:
                    raise ConnectionLost("RSET refused")
            except ConnectionLost as lost:
                return (Dropped(lost.args[0], unknown=[letter]) if sent_data
                        else Dropped(lost.args[0], unsent=[letter]))
            if mail != 250:
                return Dropped(f"sender refused: {mail}")
        return None

    async def _lockstep_envelope(self, letter: Letter) -> tuple[int, int, int]:
        mail, _ = await self.command(self._mail_from(letter))
        if mail != 250:
            return mail, 0, 0
        rcpt, _ = await self.command(f"RCPT TO:{envelope(letter.to)}")
        if rcpt not in (250, 251):
            return mail, rcpt, 0
        data, _ = await self.command("DATA")
        return mail, rcpt, data

    async def _reset(self) -> Dropped | None:
        try:
            if (await self.command("RSET"))[0] != 250:
                return Dropped("RSET refused")
        except ConnectionLost as lost:
            return Dropped(lost.args[0])
        return None

    async def quit(self) -> None:
        try:
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reader.read(1024), min(self.timeout, 2.0))
        except (OSError, TimeoutError, ConnectionError):
            pass
        self.abort()

    def abort(self) -> None:
        self.writer.transport.abort()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _recipient_refused(where: str, code: int) -> MailFailed:
    return MailFailed(f"{where} refused the recipient: {code}", permanent=code >= 500,
                      bounced=code >= 500)


def _envelope_outcome(where: str, mail: int, rcpt: int, data: int) -> MailFailed:
    """Why a transaction whose DATA got no 354 failed: the sender, the recipient (a 5xx
    there bounces: the address is dead) or the message."""
    if mail != 250:
        return MailFailed(f"sending through {where} failed: sender refused {mail}",
                          server_down=True)
    if rcpt not in (250, 251):
        return _recipient_refused(where, rcpt)
    return MailFailed(f"{where} refused the message: {data}", permanent=data >= 500)


def _data_outcome(where: str, code: int) -> MailFailed | None:
    if code == 250:
        return None
    return MailFailed(f"{where} refused the message: {code}", permanent=code >= 500)

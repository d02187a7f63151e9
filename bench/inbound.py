"""Inbound mail (issue 19): 1,000 messages in a real Dovecot mailbox read by Lifeline in one
pass, stored sealed, handled, and moved to Done, in at most 60 s.

    .venv/bin/python bench/inbound.py                   # 1,000 messages, SQLite and PostgreSQL
    .venv/bin/python bench/inbound.py --messages 5000 --backend sqlite

Dovecot is started as the tests start it (tests/inbound/dovecot.py: free ports, scratch
Maildir, STARTTLS). The messages are the tests' customer messages (multipart text and HTML,
about 3 KB; one in ten with a 100 KB attachment), APPENDed before each measured run.
Baseline, measured in the same run: the IMAP fetch alone of the same messages with
imap-tools (one session, STARTTLS, bulk fetch of 100 by 100, nothing marked read). Lifeline's
pass is `read_mailbox` with a handler doing what the router does to a message (parse it,
seal subject, text, shown text and HTML, index the sender, store the attachments sealed).
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from imap_tools import MailBoxStartTls  # noqa: E402
from vault import scratch_database  # noqa: E402

from contacts.core.crypto import Crypto  # noqa: E402
from contacts.core.db import make_engine  # noqa: E402
from contacts.core.mailboxes import Mailbox  # noqa: E402
from contacts.core.schema import upgrade_database  # noqa: E402
from contacts.inbound import models  # noqa: E402
from contacts.inbound.mailbox import ReaderSettings, read_mailbox, store_only  # noqa: E402
from tests.inbound.dovecot import remove, start_dovecot  # noqa: E402
from tests.inbound.messages import customer_message  # noqa: E402

TARGET_SECONDS = 60.0


def routing_like(crypto: Crypto):
    """A handler that costs what the router's work on a message costs."""
    cipher = crypto.cipher

    def handle(session, row, raw: bytes) -> None:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        plain = text.get_content() if text else ""
        row.subject_encrypted = cipher.encrypt(str(message["Subject"] or ""),
                                               context=models.INBOUND_SUBJECT)
        row.text_encrypted = cipher.encrypt(plain, context=models.INBOUND_TEXT)
        row.shown_encrypted = cipher.encrypt(plain.split("\n-- \n")[0],
                                             context=models.INBOUND_SHOWN)
        if html:
            row.html_encrypted = cipher.encrypt(html.get_content(),
                                                context=models.INBOUND_HTML)
        row.sender_index = crypto.index.email(message["From"].addresses[0].addr_spec)
        row.outcome = "reply"
        session.flush()  # the attachments name the row
        for part in message.iter_attachments():
            data = part.get_content()
            session.add(models.InboundAttachment(
                message_id=row.id, content_type=part.get_content_type(), size=len(data),
                filename_encrypted=cipher.encrypt(part.get_filename() or "",
                                                  context=models.ATTACHMENT_FILENAME),
                data_encrypted=cipher.encrypt(base64.b64encode(data).decode(),
                                              context=models.ATTACHMENT_DATA)))

    return handle


def fetch_alone(server, count: int) -> float:
    """The baseline: every message of INBOX fetched whole with imap-tools, nothing else."""
    started = time.perf_counter()
    with MailBoxStartTls(server.host, server.imap_port, ssl_context=server.ssl_context()
                         ).login(server.user, server.password) as box:
        fetched = sum(1 for _ in box.fetch(mark_seen=False, bulk=100))
    seconds = time.perf_counter() - started
    assert fetched == count, (fetched, count)
    return seconds


def lifeline_pass(server, backend: str, workdir: Path, count: int, handler: str) -> float:
    url, drop = scratch_database(backend, workdir, "inbound")
    try:
        engine = make_engine(url)
        upgrade_database(engine)
        crypto = Crypto((("k1", os.urandom(32)),), os.urandom(32))
        handle = routing_like(crypto) if handler == "routing" else store_only
        mailbox = Mailbox(name="bench", host=server.host, port=server.imap_port,
                          security="starttls", username=server.user, password=server.password)
        started = time.perf_counter()
        report = read_mailbox(engine=engine, crypto=crypto, mailbox=mailbox,
                              reader=ReaderSettings(), handle=handle,
                              ssl_context=server.ssl_context())
        seconds = time.perf_counter() - started
        engine.dispose()
    finally:
        drop()
    assert report.processed == count and report.failed == 0, report
    assert server.count("INBOX") == 0 and server.count("Lifeline.Done") == count
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    count = args.messages
    messages = [customer_message(n, attachment_bytes=100_000 if n % 10 == 0 else 0)
                for n in range(count)]
    size = sum(map(len, messages))
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory(prefix="lifeline-inbound-bench-") as work:
        server = start_dovecot()  # in a folder of its own, which Dovecot's users can reach
        try:
            server.append(messages)
            baseline = fetch_alone(server, count)
            print(f"{count} messages, {size / 1e6:.1f} MB, Dovecot {server.imap_port} "
                  "(STARTTLS)")
            print(f"baseline  {'IMAP fetch alone (imap-tools)':<43} {baseline:6.2f} s  "
                  f"{count / baseline:7.0f} messages/s")
            worst = 0.0
            for backend in backends:
                for handler, what in (("store_only", "reader alone (store_only)"),
                                      ("routing", "full pass, routing-like handler")):
                    server.empty()
                    server.append(messages)
                    seconds = lifeline_pass(server, backend, Path(work), count, handler)
                    if handler == "routing":
                        worst = max(worst, seconds)
                    print(f"lifeline  {backend:<10} {what:<32} {seconds:6.2f} s  "
                          f"{count / seconds:7.0f} messages/s  "
                          f"ratio to baseline {seconds / baseline:5.2f}x")
        finally:
            remove(server)
    verdict = "met" if worst * 1000 / count <= TARGET_SECONDS else "MISSED"
    print(f"target: 1,000 messages in <= {TARGET_SECONDS:.0f} s: {verdict} "
          f"({worst * 1000 / count:.1f} s per 1,000 at worst)")
    return 0 if verdict == "met" else 1


if __name__ == "__main__":
    sys.exit(main())

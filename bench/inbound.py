"""Inbound mail (issue 19): 1,000 messages in a real Dovecot mailbox read by Lifeline in one
pass, stored sealed, handled, and moved to Done, in at most 60 s.

    .venv/bin/python bench/inbound.py                   # 1,000 messages, SQLite and PostgreSQL
    .venv/bin/python bench/inbound.py --messages 5000 --backend sqlite

Dovecot is started as the tests start it (tests/inbound/dovecot.py: free ports, scratch
Maildir, STARTTLS). The messages are the tests' customer messages (multipart text and HTML,
about 3 KB; one in ten with a 100 KB attachment), APPENDed before each measured run.
Baseline, measured in the same run: the IMAP fetch alone of the same messages with
imap-tools (one session, STARTTLS, bulk fetch of 100 by 100, nothing marked read). Lifeline's
pass is `read_mailbox` with the app's own handler, the mailroom: each message parsed, sealed
with its attachments, routed, and (these are new messages to the support address) made a
request with its receipt queued; and, for comparison, with `store_only` (the reader alone).
"""

from __future__ import annotations

import argparse
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
from contacts.inbound.mailbox import (  # noqa: E402
    MailHandler,
    ReaderSettings,
    read_mailbox,
    store_only,
)
from tests.inbound.dovecot import remove, start_dovecot  # noqa: E402
from tests.inbound.messages import customer_message  # noqa: E402

TARGET_SECONDS = 60.0


def mailroom(url: str, workdir: Path):
    """The app's own handler (contacts/mailroom.py: parse, seal, route, act), over `url`."""
    from contacts.app import create_app
    from contacts.core.services import services
    from contacts.core.settings import load_secrets

    keys = workdir / "keys"
    keys.mkdir(exist_ok=True)
    app = create_app({"database_url": url, "secrets": load_secrets(keys, {}, generate=True),
                      "intake_spool_dir": str(workdir / "spool")})
    built = services(app)
    return built.crypto, built.get(MailHandler).handle


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
        if handler == "mailroom":
            crypto, handle = mailroom(url, workdir)
        else:
            crypto, handle = Crypto((("k1", os.urandom(32)),), os.urandom(32)), store_only
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
                                      ("mailroom", "full pass, the mailroom")):
                    server.empty()
                    server.append(messages)
                    seconds = lifeline_pass(server, backend, Path(work), count, handler)
                    if handler == "mailroom":
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

"""The outbox under faults, with real processes: `flask worker`s (three on PostgreSQL, which
share the rows with SKIP LOCKED; one on SQLite) deliver a 10,000-recipient fan-out while one
of them is killed with SIGKILL ten times and the SMTP server is stopped for 60 seconds.
Every recipient gets the message; a duplicate can only come from a kill between the SMTP
server's acceptance and our commit, so there are no more of them than the kills times what
one worker's pool has in flight (`smtp_lane.in_flight_per_worker`), and each carries the
same Message-ID. The SMTP server offers PIPELINING, as production servers do, so the
workers' sessions send a message's end and the next one's envelope in one flight."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlmodel import func, select

from contacts.app import create_app
from contacts.core.db import session_scope, utcnow
from contacts.core.services import services
from contacts.core.settings import load_secrets
from contacts.delivery import outbox, smtp_lane
from contacts.delivery.models import OutboxMessage

ROOT = Path(__file__).resolve().parents[2]
RECIPIENTS = 10_000
KILLS = 10
CONNECTIONS = 8  # SMTP sessions per worker


class Sink:
    """Offers PIPELINING, as Postfix and most servers do, so the workers take the path they
    take in production: envelope and DATA in one write."""

    def __init__(self):
        self.received: list[tuple[str, str]] = []  # (recipient, Message-ID)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        message_id = next(line.split(":", 1)[1].strip() for line in
                          envelope.content.decode("utf-8", "replace").splitlines()
                          if line.lower().startswith("message-id:"))
        self.received.append((envelope.rcpt_tos[0], message_id))
        return "250 OK"


def _worker(database_url: str, keys_dir: Path, port: int, workdir: Path) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")},
           "DATABASE_URL": database_url, "LIFELINE_SECRETS_KEYS_DIR": str(keys_dir),
           "LIFELINE_MAIL_PORT": str(port), "LIFELINE_MAIL_TIMEOUT_SECONDS": "2",
           "LIFELINE_DELIVERY_SMTP_CONNECTIONS": str(CONNECTIONS),
           "LIFELINE_DELIVERY_LEASE_SECONDS": "5", "LIFELINE_DELIVERY_DRAIN_SECONDS": "1",
           "LIFELINE_BACKUP_INTERVAL_HOURS": "0", "LIFELINE_BACKUP_DRILL_INTERVAL_HOURS": "0",
           "LIFELINE_INTAKE_SPOOL_DIR": str(workdir / "spool")}
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _sent(engine) -> int:
    with session_scope(engine) as session:
        return session.exec(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.state == "sent")).one()


def _states(engine) -> dict[str, int]:
    """The outbox by state (with its last error's first words): what a failure shows."""
    with session_scope(engine) as session:
        return {f"{state} {(error or '')[:40]}".strip(): count for state, error, count in
                session.exec(select(OutboxMessage.state, OutboxMessage.last_error, func.count())
                             .group_by(OutboxMessage.state, OutboxMessage.last_error))}


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_fan_out_survives_killed_workers_and_a_stopped_smtp_server(backend, database_url,
                                                                     tmp_path):
    keys_dir = tmp_path / "keys"
    app = create_app({"database_url": database_url, "intake_spool_dir": str(tmp_path / "sp"),
                      "secrets": load_secrets(keys_dir, {}, generate=True)})
    engine = services(app).engine
    cipher = services(app).crypto.cipher
    now = utcnow()
    with session_scope(engine) as session:  # the rows one update's fan-out writes
        outbox.enqueue_rows(session=session, rows=[outbox.email_row(
            cipher=cipher, key=f"update:upd_fault:acc_fault:ctc_{n:05d}",
            purpose="incident_update", now=now,
            topic=outbox.Topic("update", "upd_fault", "contact", f"ctc_{n:05d}", "acc_fault"),
            email=outbox.Email(to=f"r{n:05d}@example.org", subject="Update 1",
                               text="Sites restored: 40%")) for n in range(RECIPIENTS)])
    sink, port = Sink(), _free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=port)
    smtp.start()
    workers = [_worker(database_url, keys_dir, port, tmp_path)
               for _ in range(3 if backend == "postgresql" else 1)]
    chooser = random.Random(3)
    kills = 0
    try:
        deadline = time.monotonic() + 60
        while _sent(engine) < 300 and time.monotonic() < deadline:
            time.sleep(0.2)
        for round_ in range(KILLS):
            if round_ == KILLS // 2:
                smtp.stop()  # the SMTP server goes away for a minute...
                outage_ends = time.monotonic() + 60
            victim = chooser.randrange(len(workers))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(timeout=10)
            kills += 1
            workers[victim] = _worker(database_url, keys_dir, port, tmp_path)
            time.sleep(1.5 if round_ < KILLS // 2 else 10)
        time.sleep(max(0.0, outage_ends - time.monotonic()))
        smtp = Controller(sink, hostname="127.0.0.1", port=port)  # ...and comes back
        smtp.start()
        # Messages that failed in the outage come back after their backoff (30 s, 1, 2, 4
        # minutes...), and a killed worker's lease runs out first: on a loaded machine the
        # last ones take minutes. The wait ends as soon as every message is sent.
        deadline = time.monotonic() + 900
        while _sent(engine) < RECIPIENTS and time.monotonic() < deadline:
            time.sleep(1)
        states = _states(engine)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
        smtp.stop()
        engine.dispose()
    by_recipient: dict[str, set[str]] = defaultdict(set)
    for recipient, message_id in sink.received:
        by_recipient[recipient].add(message_id)
    duplicates = len(sink.received) - len(by_recipient)
    print(f"\n{backend}: {len(workers)} workers, {kills} kills, SMTP stopped 60 s; "
          f"{RECIPIENTS} recipients, {len(by_recipient)} reached, {len(sink.received)} "
          f"messages received, {duplicates} duplicates")
    # None lost; a failure says whether the missing ones were still queued or marked sent.
    assert len(by_recipient) == RECIPIENTS, states
    assert duplicates <= kills * smtp_lane.in_flight_per_worker(CONNECTIONS)
    assert all(len(ids) == 1 for ids in by_recipient.values())  # a copy keeps its Message-ID

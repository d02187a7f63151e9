"""Fan-out benchmark (issue 6): publishing one update to 100,000 recipients, then delivering
it to Postfix's smtp-sink with 1, 2 and 4 connections, against smtp-source sending messages
of the same size to the same sink with the same connection counts, in the same run.

PostgreSQL (several senders share the outbox only there). `--recipients` sizes the vault,
`--deliver` how many messages each delivery run sends (the rate is what is compared).
Postfix's tools come from Debian (`scripts/ensure-postfix-tools.sh`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlmodel import select  # noqa: E402

from app import create_app  # noqa: E402
from contacts.audit import Actor  # noqa: E402
from contacts.db import session_scope, utcnow  # noqa: E402
from contacts.delivery import outbox  # noqa: E402
from contacts.delivery.models import OUTBOX_PAYLOAD, OutboxMessage  # noqa: E402
from contacts.incidents import service  # noqa: E402
from contacts.mail import Mailer  # noqa: E402
from contacts.schema import upgrade_database  # noqa: E402
from contacts.settings import load_secrets  # noqa: E402
from contacts.vault import service as vault_service  # noqa: E402
from contacts.vault.schemas import AccountIn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CONTACTS_PER_ACCOUNT = 3
CONNECTIONS = (1, 2, 4)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def entries(recipients: int) -> list[vault_service.AccountEntry]:
    accounts = []
    for number in range(-(-recipients // CONTACTS_PER_ACCOUNT)):
        contacts = [{"external_id": f"C{number:06d}-{n}", "name": f"Admin {number} {n}",
                     "email": f"admin{n}@a{number:06d}.example.net", "role": "site_admin",
                     "locale": "fr" if number % 4 == 0 else "en", "timezone": "UTC",
                     "sites": [f"S{number:06d}"]} for n in range(CONTACTS_PER_ACCOUNT)]
        accounts.append(AccountIn.model_validate({
            "external_id": f"A{number:06d}", "name": f"Account {number}",
            "sites": [{"external_id": f"S{number:06d}", "url": f"https://s{number}.example.net",
                       "name": f"Site {number}"}], "contacts": contacts}))
    return [vault_service.AccountEntry.from_document(account, index)
            for index, account in enumerate(accounts)]


def smtp_sink(port: int) -> subprocess.Popen:
    return subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def smtp_source_rate(port: int, sessions: int, messages: int, size: int) -> float:
    started = time.perf_counter()
    subprocess.run(["smtp-source", "-d", "-s", str(sessions), "-m", str(messages), "-l",
                    str(size), "-t", "someone@example.net", f"127.0.0.1:{port}"], check=True,
                   stdout=subprocess.DEVNULL)
    return messages / (time.perf_counter() - started)


def requeue(engine, limit: int) -> None:
    """Put `limit` messages back in the queue (the rest stay sent), for the next run."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE outbox_message SET state = 'sent'"))
        connection.execute(text(
            "UPDATE outbox_message SET state = 'queued', attempts = 0, sent_at = NULL, "
            "lease_until = NULL WHERE id IN (SELECT id FROM outbox_message ORDER BY id "
            "LIMIT :limit)"), {"limit": limit})


def queued(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text(
            "SELECT count(*) FROM outbox_message WHERE state = 'queued'")).scalar_one()


def delivery_rate(database_url: str, keys_dir: Path, port: int, senders: int,
                  engine, messages: int) -> float:
    """`senders` processes, one SMTP connection each, drain until nothing is queued. The
    clock starts when every sender has started up (as the delivery loops of running workers
    have), so Python's start-up is not counted against the senders."""
    requeue(engine, messages)
    command = [sys.executable, __file__, "--sender", database_url, str(keys_dir), str(port)]
    processes = [subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(senders)]
    try:
        for process in processes:
            if process.stdout.readline().strip() != "ready":
                raise SystemExit("a sender did not start")
        started = time.perf_counter()
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        for process in processes:
            if process.wait(timeout=3600) != 0:
                raise SystemExit("a sender failed")
    finally:
        for process in processes:
            process.kill()
    seconds = time.perf_counter() - started
    if queued(engine):
        raise SystemExit(f"{queued(engine)} messages were left queued")
    return messages / seconds


def sender(database_url: str, keys_dir: str, port: int) -> int:
    """One sender process: drains the outbox over one SMTP connection until it is empty."""
    app = create_app({"database_url": database_url,
                      "secrets": load_secrets(Path(keys_dir), {}, generate=False)})
    engine = app.extensions["lifeline.engine"]
    cipher = app.extensions["lifeline.crypto"].cipher
    mailer = Mailer(host="127.0.0.1", port=port, sender="status@lifeline.bench")
    with engine.connect() as connection:  # the pool's first connection, opened before "go"
        connection.exec_driver_sql("SELECT 1")
    print("ready", flush=True)
    sys.stdin.readline()
    while True:
        report = outbox.drain(engine=engine, cipher=cipher, mailer=mailer, now=utcnow(),
                              limit=500, lease=timedelta(minutes=5))
        if report.retried or report.failed:
            print(f"sender: {report.retried} to retry, {report.failed} failed", file=sys.stderr)
            return 1
        if not report.sent:
            return 0


def average_message_size(engine, cipher) -> int:
    """Bytes of text and HTML of the first messages: smtp-source sends bodies this long."""
    with session_scope(engine) as session:
        rows = session.exec(select(OutboxMessage).limit(200)).all()
        emails = [outbox.Email(**json.loads(cipher.decrypt(row.payload_encrypted,
                                                           context=OUTBOX_PAYLOAD)))
                  for row in rows]
    return int(statistics.mean(len(email.text) + len(email.html or "") for email in emails))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--deliver", type=int, default=20_000,
                        help="messages sent per delivery run")
    parser.add_argument("--sender", nargs=3, metavar=("URL", "KEYS", "PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sender:
        return sender(args.sender[0], args.sender[1], int(args.sender[2]))
    subprocess.run([str(ROOT / "scripts" / "ensure-postfix-tools.sh")], check=True)
    if not shutil.which("smtp-sink"):
        raise SystemExit("smtp-sink is not installed")
    database = f"lifeline_bench_fanout_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    port = free_port()
    sink = smtp_sink(port)
    try:
        with tempfile.TemporaryDirectory(prefix="lifeline-fanout-") as work:
            keys_dir = Path(work) / "keys"
            app = create_app({"database_url": database_url,
                              "secrets": load_secrets(keys_dir, {}, generate=True)})
            engine = app.extensions["lifeline.engine"]
            upgrade_database(engine)
            settings, crypto = app.extensions["lifeline.settings"], app.extensions[
                "lifeline.crypto"]
            vault = vault_service.Vault.from_settings(settings, crypto)
            desk = service.Desk.from_settings(settings, crypto, Path(app.template_folder))
            actor = Actor.system("bench")
            print(f"fan-out benchmark: {args.recipients:,} recipients, PostgreSQL, "
                  f"smtp-sink on 127.0.0.1:{port}")
            loaded = entries(args.recipients)
            started = time.perf_counter()
            with session_scope(engine) as session:
                vault_service.sync(session=session, vault=vault, actor=actor, entries=loaded,
                                   source="import", parallel=True)
                incident = service.create_incident(session=session, actor=actor,
                                                   title="Bench incident",
                                                   severity="critical", started_at=utcnow(),
                                                   now=utcnow())
                service.add_sites(session=session, desk=desk, actor=actor,
                                  incident_id=incident.id, now=utcnow(),
                                  refs=[entry.account.sites[0].external_id
                                        for entry in loaded])
            print(f"vault and incident ready in {time.perf_counter() - started:.1f} s")
            draft = service.UpdateDraft(
                state="identified", what_happened="Sites were deleted.",
                timeline="Restores run in waves.", data_loss="At most 5 minutes.",
                next_update_at=utcnow() + timedelta(hours=4), confidence_timeline="medium",
                confidence_restore="high", confidence_data_loss="high")
            started = time.perf_counter()
            with session_scope(engine) as session:
                update = service.publish(session=session, desk=desk, vault=vault,
                                         actor=actor, incident_id=incident.id, draft=draft,
                                         now=utcnow())
            enqueue = time.perf_counter() - started
            print(f"render + enqueue: {update.recipients:,} messages in {enqueue:.1f} s "
                  f"(target <= 15 s: {'met' if enqueue <= 15 else 'NOT MET'})")
            size = average_message_size(engine, crypto.cipher)
            wait_for_port(port)
            print(f"{'connections':<12}{'lifeline msg/s':>16}{'smtp-source msg/s':>19}"
                  f"{'ratio':>8}")
            for connections in CONNECTIONS:
                ours = delivery_rate(database_url, keys_dir, port, connections, engine,
                                     args.deliver)
                theirs = smtp_source_rate(port, connections, args.deliver, size)
                print(f"{connections:<12}{ours:>16,.0f}{theirs:>19,.0f}{ours / theirs:>8.2f}")
            print(f"ratio = Lifeline's delivery rate / smtp-source -d's, same sink, same "
                  f"connection count, messages of about {size:,} bytes (target >= 0.5)")
            engine.dispose()
    finally:
        sink.kill()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())

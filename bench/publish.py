"""Publish benchmark (issue 18): an update to 1,000,000 recipients.

Publishing answers at once and a job queues the audience in batches. Measured, on
PostgreSQL and on SQLite:

- publish: `POST /api/v1/incidents/<id>/updates` through the app, until its answer
  (target <= 300 ms whatever the audience);
- first email on the wire: from that answer to the first message an SMTP server on
  127.0.0.1 receives, with the scheduler running the fan-out job (every
  `incidents.fanout_seconds`) and, as in production, a worker's delivery loop sending on
  PostgreSQL, the scheduler's drain job on SQLite (target <= 2 s);
- expansion: from the answer until every recipient is queued (target <= 60 s on
  PostgreSQL, <= 120 s on SQLite).

Baseline, from the same run and the same vault: the old way, the whole audience rendered
and queued inside the publishing transaction (what the HTTP request used to wait for).

The vault is written with bulk inserts (real sealed addresses, one site per account,
`--per-account` contacts each), not through the sync: the sync has its own benchmark.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402
from sqlalchemy import func, text  # noqa: E402
from sqlmodel import select  # noqa: E402

from app import create_app  # noqa: E402
from contacts.core.audit import Actor  # noqa: E402
from contacts.core.db import bulk_insert, session_scope, utcnow  # noqa: E402
from contacts.core.ids import new_id  # noqa: E402
from contacts.core.mail import Mailer  # noqa: E402
from contacts.core.scheduler import SchedulerRunner  # noqa: E402
from contacts.core.schema import upgrade_database  # noqa: E402
from contacts.core.services import services  # noqa: E402
from contacts.core.settings import load_secrets  # noqa: E402
from contacts.delivery import outbox  # noqa: E402
from contacts.delivery.models import OutboxMessage  # noqa: E402
from contacts.incidents import fanout, publishing, records  # noqa: E402
from contacts.incidents.desk import CommsDesk  # noqa: E402
from contacts.incidents.models import AffectedSite, UpdateFanout  # noqa: E402
from contacts.staff import service as staff_service  # noqa: E402
from contacts.vault.models import CONTACT_EMAIL, CONTACT_NAME, Account, Contact, Site  # noqa: E402
from contacts.vault.service import Vault  # noqa: E402
from tests.helpers import PASSWORD, Auth, StaffAccount, enrol_two_factor  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH = 20_000
UPDATE = {"state": "identified", "what_happened": "A maintenance script deleted sites.",
          "timeline": "Restores run in waves; all sites back within 4 days.",
          "data_loss": "Changes made after 07:33 UTC, at most 5 minutes.",
          "confidence_timeline": "medium", "confidence_restore": "high",
          "confidence_data_loss": "high"}


class FirstMessage:
    """An SMTP server's handler that notes when the first message arrived."""

    def __init__(self):
        self.first_at: float | None = None
        self.count = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.count += 1
        if self.first_at is None:
            self.first_at = time.perf_counter()
        return "250 OK"


def progress_line(label: str, done: int, total: int, started: float) -> None:
    if sys.stderr.isatty():
        print(f"\r  {label}: {done:,}/{total:,} ({time.perf_counter() - started:.0f} s)",
              end="", file=sys.stderr, flush=True)


def build_vault(engine, crypto, recipients: int, per_account: int) -> list[str]:
    """Accounts with one site and `per_account` contacts each; returns the site IDs."""
    now = utcnow()
    accounts = -(-recipients // per_account)
    encrypt = crypto.cipher.encrypt
    site_ids = []
    started = time.perf_counter()
    for first in range(0, accounts, BATCH // per_account):
        numbers = range(first, min(accounts, first + BATCH // per_account))
        account_rows, site_rows, contact_rows = [], [], []
        for number in numbers:
            account_id, site_id = new_id("acc"), new_id("site")
            site_ids.append(site_id)
            account_rows.append({"id": account_id, "external_id": f"A{number:07d}",
                                 "name": f"Account {number}", "created_at": now,
                                 "updated_at": now, "deleted_at": None})
            site_rows.append({"id": site_id, "account_id": account_id,
                              "external_id": f"S{number:07d}",
                              "url": f"https://s{number}.example.net",
                              "hostname": f"s{number}.example.net", "name": f"Site {number}",
                              "created_at": now, "updated_at": now, "deleted_at": None})
            for n in range(per_account):
                address = f"admin{n}@a{number:07d}.example.net"
                contact_rows.append({
                    "id": new_id("ctc"), "account_id": account_id,
                    "external_id": f"C{number:07d}-{n}",
                    "name_encrypted": encrypt(f"Admin {n}", context=CONTACT_NAME),
                    "email_encrypted": encrypt(address, context=CONTACT_EMAIL),
                    "phone_encrypted": None, "email_index": f"e{number}-{n}",
                    "phone_index": None, "domain_index": f"d{number}", "content_digest": "c",
                    "role": "site_admin", "locale": "fr" if number % 4 == 0 else "en",
                    "timezone": "UTC", "source": "import", "version": 1,
                    "last_confirmed_at": None, "confirmation_requested_at": None,
                    "undeliverable_at": None, "created_at": now, "updated_at": now,
                    "deleted_at": None})
        with session_scope(engine) as session:
            connection = session.connection()
            bulk_insert(connection, Account.__table__, account_rows)
            bulk_insert(connection, Site.__table__, site_rows)
            bulk_insert(connection, Contact.__table__, contact_rows)
        progress_line("vault", len(site_ids) * per_account, accounts * per_account, started)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return site_ids


def open_incident(engine, site_ids: list[str], site_accounts: dict[str, str]) -> str:
    now = utcnow()
    with session_scope(engine) as session:
        incident = records.create_incident(session=session, actor=Actor.system("bench"),
                                           title="Bench incident", severity="critical",
                                           started_at=now, now=now)
        session.flush()
        rows = [{"incident_id": incident.id, "site_id": site_id,
                 "account_id": site_accounts[site_id], "stage": "queued", "stage_at": now}
                for site_id in site_ids]
        for start in range(0, len(rows), BATCH):
            bulk_insert(session.connection(), AffectedSite.__table__, rows[start:start + BATCH])
        return incident.id


def run(database: str, recipients: int, per_account: int, baseline: int) -> dict:
    """One database's figures."""
    with tempfile.TemporaryDirectory(prefix="lifeline-publish-") as work:
        name = None
        if database == "postgresql":
            name = f"lifeline_bench_publish_{uuid.uuid4().hex[:6]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        else:
            url = f"sqlite:///{work}/bench.db"
        try:
            return _measure(url, Path(work), recipients, per_account, baseline)
        finally:
            if name:
                with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _measure(url: str, work: Path, recipients: int, per_account: int, baseline: int) -> dict:
    handler = FirstMessage()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app({"database_url": url, "mail_port": port,
                      "mail_sender": "status@lifeline.test",
                      "secrets": load_secrets(work / "keys", {}, generate=True)})
    built = services(app)
    engine = built.engine
    upgrade_database(engine)
    desk, vault = built.get(CommsDesk), built.get(Vault)
    started = time.perf_counter()
    site_ids = build_vault(engine, built.crypto, recipients, per_account)
    with session_scope(engine) as session:
        site_accounts = dict(session.exec(select(Site.id, Site.account_id)).all())
        _, token = staff_service.create_token(session=session, actor=Actor.system("bench"),
                                              name="bench", scopes=["incidents:write"])
    incident_id = open_incident(engine, site_ids, site_accounts)
    print(f"  vault and incident ready in {time.perf_counter() - started:.0f} s "
          f"({recipients:,} contacts, {len(site_ids):,} accounts)")

    smtp = Controller(handler, hostname="127.0.0.1", port=port)
    smtp.start()
    # The senders as in production: the scheduler's fan-out job (every
    # incidents.fanout_seconds); on PostgreSQL a worker's delivery loop sends, on SQLite the
    # scheduler's drain job (brought forward by the fan-out's first batch).
    sqlite = engine.dialect.name == "sqlite"
    wanted = ("incidents-fanout", "delivery-drain") if sqlite else ("incidents-fanout",)
    runner = SchedulerRunner(engine, [job for job in built.jobs if job.id in wanted], app=app)
    loop = None if sqlite else outbox.DeliveryLoop(
        engine=engine, cipher=built.crypto.cipher, idle_seconds=0.2,
        mailer=Mailer(host="127.0.0.1", port=port, sender="status@lifeline.test"))
    runner.start()
    if loop:
        loop.start()
    time.sleep(2)  # the jobs' first runs, at start, are over
    client = app.test_client()
    asked = time.perf_counter()
    body = {**UPDATE, "next_update_at": (utcnow() + timedelta(hours=4)).isoformat()}
    answer = client.post(f"/api/v1/incidents/{incident_id}/updates", json=body,
                         headers={"Authorization": f"Bearer {token}"})
    answered = time.perf_counter()
    if answer.status_code != 201:
        raise SystemExit(f"publish failed: {answer.status_code} {answer.get_json()}")
    update_id = answer.get_json()["id"]
    while handler.first_at is None and time.perf_counter() - answered < 60:
        time.sleep(0.01)
    # The first email is what was measured: the rest of the sending would share the CPU
    # (and, on SQLite, the write lock) with the expansion measured next.
    if loop:
        loop.stop()
    else:
        runner._scheduler.remove_job("delivery-drain")  # noqa: SLF001 - the bench's own
    first_email = (handler.first_at or float("nan")) - answered
    while True:
        with session_scope(engine) as session:
            state = session.get(UpdateFanout, update_id)
            done, queued = state.finished_at is not None, state.queued
        progress_line("expansion", queued, recipients, answered)
        if done:
            break
        time.sleep(0.2)
    expanded = time.perf_counter() - answered
    if sys.stderr.isatty():
        print(file=sys.stderr)
    runner.shutdown()
    smtp.stop()
    with session_scope(engine) as session:
        rows = session.exec(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.about_id == update_id)).one()
    pages = page_timings(app, incident_id, site_accounts[site_ids[len(site_ids) // 2]])

    # The baseline: the old publish, rendering and queuing inside its transaction, for the
    # first `baseline` accounts' worth of the same audience (the same incident, trimmed).
    with session_scope(engine) as session:
        trimmed = records.create_incident(session=session, actor=Actor.system("bench"),
                                          title="Baseline incident", severity="critical",
                                          started_at=utcnow(), now=utcnow())
        session.flush()
        keep = site_ids[:max(1, baseline // per_account)]
        bulk_insert(session.connection(), AffectedSite.__table__, [
            {"incident_id": trimmed.id, "site_id": site_id, "account_id": site_accounts[site_id],
             "stage": "queued", "stage_at": utcnow()} for site_id in keep])
    old_started = time.perf_counter()
    with session_scope(engine) as session:
        draft = publishing.UpdateDraft(**UPDATE, next_update_at=utcnow() + timedelta(hours=4))
        update = publishing.publish(session=session, desk=desk, actor=Actor.system("bench"),
                                    incident_id=trimmed.id, draft=draft, now=utcnow())
        old_rows = fanout.expand(session=session, desk=desk, vault=vault,
                                 update_id=update.id, now=utcnow())
    old_seconds = time.perf_counter() - old_started
    engine.dispose()
    return {"pages": pages, "publish_ms": (answered - asked) * 1000, "first_email_s": first_email,
            "expanded_s": expanded, "rows": rows, "emails_sent": handler.count,
            "baseline_rows": old_rows, "baseline_s": old_seconds}


def page_timings(app, incident_id: str, account_id: str, samples: int = 21) -> dict:
    """p50 of the incident page and of an affected account's page, signed in as comms
    staff, with the outbox as the fan-out left it."""
    built = services(app)
    if built.engine.dialect.name == "postgresql":
        # As autovacuum does after a large insert (PostgreSQL 13 and later vacuum a table
        # after `autovacuum_vacuum_insert_threshold` new rows): statistics, and the
        # visibility map that lets a count read the index alone.
        with built.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
            db.execute(text("VACUUM (ANALYZE) outbox_message"))
            db.execute(text("ANALYZE"))
    with session_scope(built.engine) as session:
        created = staff_service.create_staff(
            session=session, crypto=built.crypto, actor=Actor.system("bench"),
            email="comms@bench.example.com", role="comms", password=PASSWORD,
            min_password_length=12)
    client = app.test_client()
    account = enrol_two_factor(app, StaffAccount(created.id, created.email, "comms"))
    if Auth(client).login(account).status_code != 302:
        raise SystemExit("the bench could not sign in")
    found = {}
    for name, path in (("incident page", f"/console/incidents/{incident_id}"),
                       ("account page", f"/console/accounts/{account_id}")):
        timings = []
        for _ in range(samples):
            started = time.perf_counter()
            answer = client.get(path)
            answer.get_data()
            timings.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 200:
                raise SystemExit(f"GET {path} answered {answer.status_code}")
        found[name] = statistics.median(timings)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--per-account", type=int, default=10)
    parser.add_argument("--baseline", type=int, default=100_000,
                        help="recipients of the baseline's in-transaction publish")
    parser.add_argument("--database", choices=("postgresql", "sqlite", "both"),
                        default="both")
    args = parser.parse_args()
    targets = {"postgresql": 60, "sqlite": 120}
    databases = ("postgresql", "sqlite") if args.database == "both" else (args.database,)
    for database in databases:
        print(f"{database}: {args.recipients:,} recipients, {args.per_account} per account")
        found = run(database, args.recipients, args.per_account, args.baseline)
        per_second = found["baseline_rows"] / found["baseline_s"]
        print(f"  publish answered in {found['publish_ms']:.0f} ms (target <= 300 ms); "
              f"baseline, the old in-request publish: {found['baseline_s']:.1f} s for "
              f"{found['baseline_rows']:,} recipients ({per_second:,.0f}/s; "
              f"{args.recipients / per_second:.0f} s for {args.recipients:,})")
        print(f"  first email on the wire {found['first_email_s']:.2f} s after the answer "
              f"(target <= 2 s)")
        for page, p50 in found["pages"].items():
            print(f"  {page} p50 {p50:.0f} ms with {found['rows']:,} "
                  "outbox rows (target <= 150 ms)")
        print(f"  {found['rows']:,} messages expanded and queued in "
              f"{found['expanded_s']:.1f} s, {found['rows'] / found['expanded_s']:,.0f}/s "
              f"(target <= {targets[database]} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fan-out benchmark (issue 6): publishing one update to 100,000 recipients, then delivering
it to Postfix's smtp-sink with 1, 2 and 4 connections, against smtp-source sending messages
of the same size to the same sink with the same connection counts, in the same run.

PostgreSQL (several senders share the outbox only there). `--recipients` sizes the vault,
`--deliver` how many messages each delivery run sends (the rate is what is compared).
Postfix's tools come from Debian (`scripts/ensure-postfix-tools.sh`).

Where the time goes: each run also prints the CPU it cost per message, split between the
senders (or smtp-source), the PostgreSQL server and the sink, and how many of the machine's
cores were busy. `--profile` adds a run of one sender under cProfile (every thread) and
prints its functions by own time, and the share of each library.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlmodel import select  # noqa: E402

from app import create_app  # noqa: E402
from contacts.core.audit import Actor  # noqa: E402
from contacts.core.db import session_scope, utcnow  # noqa: E402
from contacts.core.mail import Mailer  # noqa: E402
from contacts.core.schema import upgrade_database  # noqa: E402
from contacts.core.services import services  # noqa: E402
from contacts.core.settings import load_secrets  # noqa: E402
from contacts.delivery import outbox  # noqa: E402
from contacts.delivery.models import OUTBOX_PAYLOAD, OutboxMessage  # noqa: E402
from contacts.incidents import fanout, progress, publishing, records  # noqa: E402
from contacts.incidents.desk import CommsDesk  # noqa: E402
from contacts.vault import service as vault_service  # noqa: E402
from contacts.vault import sync as vault_sync  # noqa: E402
from contacts.vault.schemas import AccountIn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CONTACTS_PER_ACCOUNT = 3
CONNECTIONS = (1, 2, 4)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def entries(recipients: int) -> list[vault_sync.AccountEntry]:
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
    return [vault_sync.AccountEntry.from_document(account, index)
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


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL server process (backends and background work)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name.startswith("postgres"):
                total += process_cpu(int(entry.name))
    return total


@dataclass
class Run:
    """One delivery run: its rate and the CPU seconds each party spent on it."""

    messages: int
    seconds: float
    client_cpu: float  # the senders', or smtp-source's
    database_cpu: float | None  # None: the run does not use the database (smtp-source)
    sink_cpu: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def per_message_ms(self, cpu: float) -> float:
        return cpu / self.messages * 1000

    @property
    def cores_busy(self) -> float:
        return (self.client_cpu + (self.database_cpu or 0.0) + self.sink_cpu) / self.seconds


class Meter:
    """CPU of the sink, and of the database server when the run uses it, from the start of
    a run to its end."""

    def __init__(self, sink: subprocess.Popen, database: bool = True):
        self.sink = sink
        self.database = postgres_cpu() if database else None
        self.sink_cpu = process_cpu(sink.pid)
        self.started = time.perf_counter()

    def run(self, messages: int, client_cpu: float) -> Run:
        database = None if self.database is None else postgres_cpu() - self.database
        return Run(messages=messages, seconds=time.perf_counter() - self.started,
                   client_cpu=client_cpu, database_cpu=database,
                   sink_cpu=process_cpu(self.sink.pid) - self.sink_cpu)


def smtp_source_run(sink: subprocess.Popen, port: int, sessions: int, messages: int,
                    size: int) -> Run:
    meter = Meter(sink, database=False)
    source = subprocess.Popen(["smtp-source", "-d", "-s", str(sessions), "-m", str(messages),
                               "-l", str(size), "-t", "someone@example.net",
                               f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(source.pid, 0)
    source.returncode = os.waitstatus_to_exitcode(status)
    if source.returncode != 0:
        raise SystemExit(f"smtp-source failed ({source.returncode})")
    return meter.run(messages, usage.ru_utime + usage.ru_stime)


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


def delivery_run(database_url: str, keys_dir: Path, sink: subprocess.Popen, port: int,
                 senders: int, engine, messages: int, profile: Path | None = None) -> Run:
    """`senders` processes, one SMTP connection each, drain until nothing is queued. The
    clock starts when every sender has started up (as the delivery loops of running workers
    have), so Python's start-up is not counted against the senders; each sender reports
    the CPU it spent from then on."""
    requeue(engine, messages)
    command = [sys.executable, __file__, "--sender", database_url, str(keys_dir), str(port)]
    if profile is not None:
        command += ["--profile-to", str(profile)]
    processes = [subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(senders)]
    try:
        for process in processes:
            if process.stdout.readline().strip() != "ready":
                raise SystemExit("a sender did not start")
        meter = Meter(sink)
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        cpu = 0.0
        for process in processes:
            reported = process.stdout.readline().split()
            if reported[:1] != ["cpu"]:
                raise SystemExit("a sender failed")
            cpu += float(reported[1])
        # Read while every sender, and so its PostgreSQL backends, is still there: the CPU of
        # a backend that has gone is no longer in /proc.
        run = meter.run(messages, cpu)
        for process in processes:
            process.stdin.write("exit\n")
            process.stdin.flush()
        for process in processes:
            if process.wait(timeout=600) != 0:
                raise SystemExit("a sender failed")
    finally:
        for process in processes:
            process.kill()
    if queued(engine):
        raise SystemExit(f"{queued(engine)} messages were left queued")
    return run


class ThreadProfiles:
    """cProfile in every thread of a sender: the main one, and those it starts (the
    outcome writer) while this is active."""

    def __init__(self):
        self.profiles: list[cProfile.Profile] = []

    def _start_in_thread(self, *_) -> None:
        sys.setprofile(None)
        profile = cProfile.Profile()
        self.profiles.append(profile)
        profile.enable()

    def __enter__(self) -> ThreadProfiles:
        threading.setprofile(self._start_in_thread)
        self._start_in_thread()
        return self

    def __exit__(self, *_) -> None:
        threading.setprofile(None)
        self.profiles[0].disable()

    def dump(self, path: Path) -> None:
        """The sending thread's profile to `path`, the outcome threads' (one per drained
        batch) merged into `path` + ".outcomes"."""
        for profile in self.profiles:
            profile.disable()
        pstats.Stats(self.profiles[0]).dump_stats(path)
        if len(self.profiles) > 1:
            pstats.Stats(*self.profiles[1:]).dump_stats(f"{path}.outcomes")


def sender(database_url: str, keys_dir: str, port: int, profile_to: str | None) -> int:
    """One sender process: drains the outbox over one SMTP connection until it is empty,
    then prints the CPU seconds it spent doing so."""
    app = create_app({"database_url": database_url,
                      "secrets": load_secrets(Path(keys_dir), {}, generate=False)})
    engine = services(app).engine
    cipher = services(app).crypto.cipher
    mailer = Mailer(host="127.0.0.1", port=port, sender="status@lifeline.bench")
    with engine.connect() as connection:  # the pool's first connection, opened before "go"
        connection.exec_driver_sql("SELECT 1")
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.process_time()
    profiles = ThreadProfiles() if profile_to else contextlib.nullcontext()
    with profiles:
        while True:
            report = outbox.drain(engine=engine, cipher=cipher, mailer=mailer, now=utcnow(),
                                  limit=500, lease=timedelta(minutes=5))
            if report.retried or report.failed:
                print(f"sender: {report.retried} to retry, {report.failed} failed",
                      file=sys.stderr)
                return 1
            if not report.sent:
                break
    print(f"cpu {time.process_time() - started:.3f}", flush=True)
    if profile_to:
        profiles.dump(Path(profile_to))
    sys.stdin.readline()  # stay connected until the parent has read the CPU meters
    return 0


# Own time in these is time the thread spent blocked, not working: (file, function) parts.
WAITS = (("", "recv_into", "waiting: a socket read (the SMTP server's reply)"),
         ("psycopg/connection.py", "wait", "waiting: PostgreSQL's answer (psycopg's wait loop)"),
         ("", "method 'acquire'", "waiting: a lock or queue (the other thread)"))
AREAS = (("contacts/", "Lifeline (contacts/)"), ("sqlalchemy/", "SQLAlchemy"),
         ("psycopg", "psycopg"), ("smtplib", "smtplib"), ("cryptography", "cryptography"),
         ("json/", "json"), ("sendall", "socket writes"), ("threading", "threads and queues"),
         ("queue", "threads and queues"))


def area_of(filename: str, function: str) -> str:
    for in_file, named, area in WAITS:  # a file's function by name, a builtin by a part
        if filename.endswith(in_file) and (function == named if in_file else named in function):
            return area
    where = f"{filename} {function}"
    for needle, area in AREAS:
        if needle in where:
            return area
    return "other (stdlib, builtins)"


def print_thread_profile(title: str, path: Path, messages: int, top: int) -> None:
    stats = pstats.Stats(str(path))
    total = stats.total_tt
    print(f"\n{title}: {total:.2f} s, {total / messages * 1000:.3f} ms a message")
    areas: dict[str, float] = {}
    for (filename, _, function), (_, _, own, _, _) in stats.stats.items():
        area = area_of(filename, function)
        areas[area] = areas.get(area, 0.0) + own
    for area, own in sorted(areas.items(), key=lambda item: -item[1]):
        print(f"  {own / total:>6.1%}  {own / messages * 1000:.3f} ms  {area}")
    if top:
        listing = io.StringIO()
        pstats.Stats(str(path), stream=listing).sort_stats("tottime").print_stats(top)
        table = listing.getvalue()
        print(table[table.index("   ncalls"):].rstrip())


def print_profile(path: Path, messages: int, top: int = 12) -> None:
    print(f"\nprofile of one sender delivering {messages:,} messages over one connection "
          "(cProfile in each thread: own time, waits included; the profiler slows Python)")
    print_thread_profile("sending thread (claim, decrypt, build, SMTP)", path, messages, top)
    outcomes = Path(f"{path}.outcomes")
    if outcomes.exists():
        print_thread_profile("outcome thread (one UPDATE a message)", outcomes, messages, 0)


def print_run(label: str, run: Run) -> None:
    database = ("" if run.database_cpu is None else
                f"PostgreSQL {run.per_message_ms(run.database_cpu):.3f} ms, ")
    print(f"  {label:<14}{run.rate:>9,.0f} msg/s   CPU a message: client "
          f"{run.per_message_ms(run.client_cpu):.3f} ms, {database}sink "
          f"{run.per_message_ms(run.sink_cpu):.3f} ms; cores busy {run.cores_busy:.2f} of "
          f"{os.cpu_count()}")


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
    parser.add_argument("--profile", action="store_true",
                        help="also profile one sender and print where its time goes")
    parser.add_argument("--sender", nargs=3, metavar=("URL", "KEYS", "PORT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sender:
        return sender(args.sender[0], args.sender[1], int(args.sender[2]), args.profile_to)
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
            engine = services(app).engine
            upgrade_database(engine)
            settings, crypto = services(app).settings, services(app).crypto
            vault = vault_service.Vault.from_settings(settings, crypto)
            desk = CommsDesk.from_settings(settings, crypto, Path(app.template_folder))
            actor = Actor.system("bench")
            print(f"fan-out benchmark: {args.recipients:,} recipients, PostgreSQL, "
                  f"smtp-sink on 127.0.0.1:{port}")
            loaded = entries(args.recipients)
            started = time.perf_counter()
            with session_scope(engine) as session:
                vault_sync.sync(session=session, vault=vault, actor=actor, entries=loaded,
                                source="import", parallel=True)
                incident = records.create_incident(session=session, actor=actor,
                                                   title="Bench incident",
                                                   severity="critical", started_at=utcnow(),
                                                   now=utcnow())
                progress.add_sites(session=session, desk=desk, actor=actor,
                                   incident_id=incident.id, now=utcnow(),
                                   refs=[entry.account.sites[0].external_id
                                         for entry in loaded])
            print(f"vault and incident ready in {time.perf_counter() - started:.1f} s")
            draft = publishing.UpdateDraft(
                state="identified", what_happened="Sites were deleted.",
                timeline="Restores run in waves.", data_loss="At most 5 minutes.",
                next_update_at=utcnow() + timedelta(hours=4), confidence_timeline="medium",
                confidence_restore="high", confidence_data_loss="high")
            started = time.perf_counter()
            with session_scope(engine) as session:
                update = publishing.publish(session=session, desk=desk, actor=actor,
                                            incident_id=incident.id, draft=draft, now=utcnow())
            fanout.run_pending(engine=engine, desk=desk, vault=vault, clock=utcnow)
            with session_scope(engine) as session:
                update = session.get(type(update), update.id)
            enqueue = time.perf_counter() - started
            print(f"render + enqueue: {update.recipients:,} messages in {enqueue:.1f} s "
                  f"(target <= 15 s: {'met' if enqueue <= 15 else 'NOT MET'})")
            size = average_message_size(engine, crypto.cipher)
            wait_for_port(port)
            rates = []
            for connections in CONNECTIONS:
                print(f"{connections} connection{'s' if connections > 1 else ''}:")
                ours = delivery_run(database_url, keys_dir, sink, port, connections, engine,
                                    args.deliver)
                print_run("Lifeline", ours)
                theirs = smtp_source_run(sink, port, connections, args.deliver, size)
                print_run("smtp-source -d", theirs)
                rates.append((connections, ours.rate, theirs.rate))
            print(f"\n{'connections':<12}{'lifeline msg/s':>16}{'smtp-source msg/s':>19}"
                  f"{'ratio':>8}")
            for connections, ours, theirs in rates:
                print(f"{connections:<12}{ours:>16,.0f}{theirs:>19,.0f}{ours / theirs:>8.2f}")
            print(f"ratio = Lifeline's delivery rate / smtp-source -d's, same sink, same "
                  f"connection count, messages of about {size:,} bytes (target >= 0.5)")
            if args.profile:
                profile = Path(work) / "sender.prof"
                delivery_run(database_url, keys_dir, sink, port, 1, engine, args.deliver,
                             profile=profile)
                print_profile(profile, args.deliver)
            engine.dispose()
    finally:
        sink.kill()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())

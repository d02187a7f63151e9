"""Fixtures: an app on a real SQLite file and on a real PostgreSQL database, for every test
that touches the database; a client, a staff factory, a sign-in helper and a live server.

PostgreSQL: each run creates its own database and drops it at the end, so runs never
collide. With CI=true an unreachable PostgreSQL fails the run; otherwise its half is skipped.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from argon2 import PasswordHasher
from sqlalchemy import inspect, table, text
from werkzeug.serving import make_server

from contacts.app import create_app
from contacts.core.audit import Actor
from contacts.core.db import make_engine, session_scope
from contacts.core.schema import upgrade_database
from contacts.core.services import services
from contacts.core.settings import load_secrets
from contacts.staff import service as staff_service
from contacts.vault import service as vault_service
from contacts.vault import sync as vault_sync
from contacts.vault.schemas import SyncDocument
from tests.helpers import (
    IN_CI,
    PASSWORD,
    Auth,
    StaffAccount,
    enrol_two_factor,
    smtp_server_with,
)

PG_ADMIN_DSN = os.environ.get("LIFELINE_TEST_PG_DSN",
                              "host=127.0.0.1 port=5432 dbname=test user=postgres")


@pytest.fixture(autouse=True, scope="session")
def quick_password_hashing():
    """Argon2id at its cheapest in the tests' own process: at the shipped setting a hash or
    a check costs about 0.1 s of CPU, and the suite makes and checks passwords about a
    thousand times. The processes the tests start (CLI, serve, worker) hash as shipped,
    and tests/staff/test_cli.py checks what they store."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(staff_service, "hasher",
                      PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        yield


@pytest.fixture(scope="session")
def service_secrets(tmp_path_factory):
    keys_dir = tmp_path_factory.mktemp("keys")
    return load_secrets(keys_dir, {}, generate=True)


def _pg_admin_connection():
    return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    try:
        admin = _pg_admin_connection()
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL unreachable ({PG_ADMIN_DSN}): {str(exc).strip().splitlines()[0]}"
        if IN_CI:
            pytest.fail(f"{message}. CI=true requires it.", pytrace=False)
        pytest.skip(f"{message}; the PostgreSQL half of the suite is skipped.")
    name = f"lifeline_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    params = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    yield (f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host')}:"
           f"{params.get('port', 5432)}/{name}")
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def empty_postgresql_url(postgresql_url):
    """Another, empty PostgreSQL database (for restores), dropped after the test."""
    name = f"{postgresql_url.rsplit('/', 1)[1]}_x{uuid.uuid4().hex[:6]}"
    with _pg_admin_connection() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield postgresql_url.rsplit("/", 1)[0] + "/" + name
    with _pg_admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def migrated_template(backend, request, tmp_path_factory) -> str:
    """A database at the latest migration, once per backend per run."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'template.db'}"
    else:
        url = request.getfixturevalue("postgresql_url")
    engine = make_engine(url)
    upgrade_database(engine)
    engine.dispose()
    return url


@pytest.fixture
def database_url(backend, migrated_template, tmp_path) -> Iterator[str]:
    """A migrated, empty database for one test: a copy of the SQLite template, or the
    PostgreSQL database emptied after the test."""
    if backend == "sqlite":
        source = Path(migrated_template.removeprefix("sqlite:///"))
        target = tmp_path / "lifeline.db"
        shutil.copyfile(source, target)
        yield f"sqlite:///{target}"
        return
    yield migrated_template
    _empty_postgresql(migrated_template)


def _empty_postgresql(url: str) -> None:
    """Delete every row and restart every sequence. `DELETE` per table costs about 10 ms
    where `TRUNCATE` of all of them cost 0.36-0.56 s a test; as a replica the session
    fires no trigger (the audit log's guard) and checks no foreign key, so the order of
    the tables does not matter."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        for name in inspect(connection).get_table_names():
            if name != "alembic_version":
                connection.execute(table(name).delete())
        for (sequence,) in connection.execute(text(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename)"
                " FROM pg_sequences WHERE last_value IS NOT NULL")):
            connection.execute(text(f"ALTER SEQUENCE {sequence} RESTART"))
    engine.dispose()


@pytest.fixture
def make_app(database_url, service_secrets, tmp_path):
    apps = []

    def build(**overrides):
        settings = {"database_url": database_url, "secrets": service_secrets,
                    "intake_spool_dir": str(tmp_path / "spool"),
                    "backup_dir": str(tmp_path / "backups")}
        settings.update(overrides)
        app = create_app(settings)
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield build
    for app in apps:
        services(app).engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def engine(app):
    return services(app).engine


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_staff(app):
    """A staff account, enrolled in two-factor sign-in unless two_factor=False."""
    counter = iter(range(1, 10_000))

    def build(role: str = "admin", email: str | None = None, *,
              two_factor: bool = True) -> StaffAccount:
        email = email or f"{role}{next(counter)}@staff.example.com"
        with session_scope(services(app).engine) as session:
            created = staff_service.create_staff(
                session=session, crypto=services(app).crypto,
                actor=Actor.system("test"), email=email, role=role, password=PASSWORD,
                min_password_length=12)
        account = StaffAccount(created.id, email, role)
        return enrol_two_factor(app, account) if two_factor else account

    return build


@pytest.fixture
def make_token(app):
    def build(*scopes: str, name: str = "test client") -> str:
        with session_scope(services(app).engine) as session:
            _, secret = staff_service.create_token(session=session, actor=Actor.system("test"),
                                                   name=name, scopes=list(scopes))
        return secret

    return build


@pytest.fixture
def auth(client):
    return Auth(client)


@pytest.fixture
def live_server(app):
    """The app served over real HTTP on 127.0.0.1, on a free port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


def pytest_terminal_summary(terminalreporter):
    """Say how many database tests ran on each backend, so a skipped half cannot hide."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") not in ("call", "setup"):
                continue
            if outcome == "passed" and report.when != "call":
                continue
            match = re.search(r"\[(sqlite|postgresql)[\]-]", report.nodeid)
            if match:
                per_backend = counts.setdefault(match.group(1), {})
                per_backend[outcome] = per_backend.get(outcome, 0) + 1
    if counts:
        terminalreporter.section("database backends")
        for backend in ("sqlite", "postgresql"):
            tally = counts.get(backend, {})
            terminalreporter.write_line(
                f"{backend}: " + ", ".join(f"{n} {what}" for what, n in sorted(tally.items()))
                if tally else f"{backend}: no database test ran")


@pytest.fixture
def vault(app):
    return vault_service.Vault.from_settings(services(app).settings,
                                       services(app).crypto)


@pytest.fixture
def sync_document(engine, vault):
    """Sync a document through the service, as the API and the importer do (into another
    database with `into`; with `parallel` in worker processes, as large imports do)."""

    def run(document: dict, actor: Actor | None = None, *, into=None, parallel: bool = False,
            batch_size: int | None = None):
        parsed = SyncDocument.model_validate(document)
        entries = [vault_sync.AccountEntry.from_document(account, index)
                   for index, account in enumerate(parsed.accounts)]
        batched = dataclasses.replace(vault, batch_size=batch_size) if batch_size else vault
        with session_scope(into or engine) as session:
            return vault_sync.sync(session=session, vault=batched,
                                   actor=actor or Actor.system("t"), entries=entries,
                                   source="sync", parallel=parallel)

    return run


class MailSink:
    """What a real SMTP server on 127.0.0.1 received, parsed (and each message's bytes)."""

    def __init__(self):
        self.messages = []
        self.received: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.received.append(envelope.content)
        self.messages.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on a free port of 127.0.0.1; yields (port, sink).
    Every message it received in the test must read as a strict client reads it, and say
    it was written by a program (RFC 3834), whatever kind of email it was."""
    sink = MailSink()
    with smtp_server_with(sink) as port:
        yield port, sink
    for raw in sink.received:
        message = read_strictly(raw)
        assert message["Auto-Submitted"] == "auto-generated", message["Subject"]


def read_strictly(raw: bytes) -> email.message.EmailMessage:
    """A message as a mail client reads it (policy.default), with every defect an error:
    in the structure (raise_on_defect), in a header's value, in a part."""
    message = email.message_from_bytes(raw, policy=email.policy.strict)
    for part in message.walk():
        assert not part.defects, (message["Subject"], part.defects)
        for name, value in part.items():
            assert not getattr(value, "defects", ()), (name, value.defects)
    return message

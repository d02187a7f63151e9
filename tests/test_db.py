"""The database layer on SQLite and PostgreSQL: migrations, pragmas, the audit log's guard."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError
from sqlmodel import SQLModel, select

from contacts import audit
from contacts.audit import Actor, AuditEntry
from contacts.db import make_engine, session_scope
from contacts.schema import (
    database_revision,
    downgrade_database,
    head_revision,
    upgrade_database,
)


def test_the_migrations_build_exactly_the_models(engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "compare_type": True,
            "include_object": lambda obj, name, type_, *_: name != "apscheduler_jobs"})
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == []


def test_the_database_is_at_the_latest_revision(engine):
    assert database_revision(engine) == head_revision(engine)


def test_migrations_go_down_to_nothing_and_back_up(backend, tmp_path, postgresql_url_or_none):
    url = f"sqlite:///{tmp_path}/updown.db" if backend == "sqlite" else postgresql_url_or_none
    engine = make_engine(url)
    if backend == "postgresql":
        # A schema of its own, so the shared test database is not disturbed.
        url = url + "?options=-csearch_path%3Dupdown"
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS updown CASCADE"))
            connection.execute(text("CREATE SCHEMA updown"))
        engine.dispose()
        engine = make_engine(url)
    upgrade_database(engine)
    downgrade_database(engine, "base")
    assert database_revision(engine) is None
    upgrade_database(engine)
    assert database_revision(engine) == head_revision(engine)
    engine.dispose()


@pytest.fixture
def postgresql_url_or_none(backend, request):
    return request.getfixturevalue("postgresql_url") if backend == "postgresql" else None


def test_sqlite_runs_with_wal_foreign_keys_and_a_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/pragmas.db")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000


def test_the_audit_log_refuses_updates_and_deletes(engine):
    with session_scope(engine) as session:
        audit.record(session, Actor.system("test"), "test.recorded", target_id="x")
    for statement in ("UPDATE audit_log SET action = 'forged'", "DELETE FROM audit_log"):
        with pytest.raises(DatabaseError, match="append-only"):
            with engine.begin() as connection:
                connection.execute(text(statement))
    with session_scope(engine) as session:
        assert [entry.action for entry in session.exec(select(AuditEntry))] == ["test.recorded"]


def test_times_come_back_as_aware_utc(engine):
    moment = datetime(2026, 4, 5, 9, 38, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(engine) as session:
        entry = audit.record(session, Actor.system("test"), "test.time")
        entry.at = moment
    with session_scope(engine) as session:
        stored = session.exec(select(AuditEntry)).one()
    assert stored.at == moment
    assert stored.at.tzinfo == UTC


def test_a_naive_time_is_refused_rather_than_guessed(engine):
    with pytest.raises(Exception, match="naive datetime"):
        with session_scope(engine) as session:
            entry = audit.record(session, Actor.system("test"), "test.time")
            entry.at = datetime(2026, 4, 5, 7, 38)
            session.flush()

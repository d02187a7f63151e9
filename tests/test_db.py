"""The database layer on SQLite and PostgreSQL: migrations, pragmas, the audit log's guard."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, Table, cast, insert, text
from sqlalchemy import select as core_select
from sqlalchemy.exc import DatabaseError
from sqlmodel import SQLModel, select

from contacts.core import audit
from contacts.core.audit import Actor, AuditEntry
from contacts.core.db import UTCDateTime, bulk_insert, make_engine, session_scope
from contacts.core.schema import (
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


def test_bulk_insert_stores_exactly_what_sqlalchemy_would(engine):
    metadata = MetaData()
    table = Table(f"bulk_probe_{uuid.uuid4().hex[:6]}", metadata,
                  Column("id", String, primary_key=True), Column("at", UTCDateTime),
                  Column("note", String))
    metadata.create_all(engine)
    moment = datetime(2026, 4, 5, 9, 38, tzinfo=timezone(timedelta(hours=2)))
    try:
        with engine.begin() as connection:
            bulk_insert(connection, table, [
                {"id": "bulk-1", "at": moment, "note": "100% été"},
                {"note": None, "at": None, "id": "bulk-2"},  # keys in another order
                {"id": "bulk-3", "at": moment, "note": "100% été"}])
            connection.execute(insert(table), [{"id": "core-1", "at": moment, "note": "100% été"}])
        with engine.connect() as connection:
            read = {row.id: (row.at, row.note) for row in connection.execute(core_select(table))}
            raw = dict(connection.execute(core_select(
                table.c.id, cast(table.c.at, String))).all())  # as stored, not parsed
    finally:
        metadata.drop_all(engine)
    assert read["bulk-1"] == read["bulk-3"] == read["core-1"] == (moment, "100% été")
    assert read["bulk-1"][0].tzinfo == UTC
    assert read["bulk-2"] == (None, None)
    assert raw["bulk-1"] == raw["core-1"]  # same stored shape as SQLAlchemy's own insert

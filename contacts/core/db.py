"""Engine, session helpers and SQLite pragmas; nothing else.

A request gets one session (`request_session()`), committed once when the view returns
normally and rolled back when an error is answered. CLI commands and jobs use
`session_scope()`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Column, DateTime, Table, event, insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, create_engine

from contacts.core.errors import ConfigError, NotFound
from contacts.core.ids import parse_id


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every database (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC was expected")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


IN_LIST_SIZE = 10_000


def in_chunks(values: Iterable) -> Iterator[list]:
    """The values in lists short enough for one `IN (...)`: a query with more parameters than
    the driver takes (65,535 on PostgreSQL, 32,766 on SQLite) fails outright."""
    values = list(values)
    for start in range(0, len(values), IN_LIST_SIZE):
        yield values[start:start + IN_LIST_SIZE]


def bulk_insert(connection: Connection, table: Table, rows: list[dict]) -> None:
    """Insert many rows that share the same keys, in one executemany.

    SQLAlchemy's own executemany runs every value through its column's bind processor; a
    bulk import's rows repeat the same few values in their time columns (one `now` per
    batch), so each column's processor here converts each distinct value once.
    """
    if not rows:
        return
    dialect = connection.dialect
    sql, order = _insert_statement(table, tuple(rows[0]), dialect)
    converters = [_memoized(table.c[key].type.dialect_impl(dialect).bind_processor(dialect))
                  for key in order]
    plan = list(zip(order, converters, strict=True))
    if dialect.name == "postgresql" and len(rows) >= COPY_FROM:
        _copy(connection, table, plan, rows)
        return
    if dialect.positional:
        parameters = [tuple(convert(row[key]) for key, convert in plan) for row in rows]
    else:
        parameters = [{key: convert(row[key]) for key, convert in plan} for row in rows]
    connection.exec_driver_sql(sql, parameters)


# From this many rows, PostgreSQL gets them by COPY: one stream, no statement per row.
COPY_FROM = 1000


def _copy(connection: Connection, table: Table, plan: list, rows: list[dict]) -> None:
    """The rows through `COPY ... FROM STDIN` (psycopg's copy adapts each value as an
    INSERT's parameter would be)."""
    columns = ", ".join(connection.dialect.identifier_preparer.quote(key) for key, _ in plan)
    cursor = connection.connection.driver_connection.cursor()
    plain = [key for key, convert in plan if convert is _unchanged]
    if len(plain) == len(plan):  # nothing to convert: the values as they are
        keys = [key for key, _ in plan]
        values = ([row[key] for key in keys] for row in rows)
    else:
        values = ([convert(row[key]) for key, convert in plan] for row in rows)
    with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
        for row_values in values:
            copy.write_row(row_values)


@functools.lru_cache(maxsize=256)
def _insert_statement(table: Table, keys: tuple[str, ...], dialect) -> tuple[str, list[str]]:
    """The INSERT's SQL and the order of its parameters, compiled once per shape."""
    compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
    order = ([compiled.binds[name].key for name in compiled.positiontup]
             if compiled.positional else list(keys))
    return compiled.string, order


def _unchanged(value):
    return value


def _memoized(processor):
    if processor is None:
        return _unchanged
    seen: dict = {}

    def convert(value):
        try:
            return seen[value]
        except KeyError:
            seen[value] = converted = processor(value)
            return converted
        except TypeError:  # unhashable
            return processor(value)

    return convert


RowT = TypeVar("RowT")


def get_or_404(session: Session, model: type[RowT], raw_id: str, kind: str, missing: str,
               *, include_deleted: bool = True) -> RowT:
    """The row with this ID (of this kind, or WrongKind), else NotFound(`missing`); a
    soft-deleted row counts as missing unless `include_deleted`."""
    row = session.get(model, parse_id(raw_id, kind))
    if row is None or (not include_deleted and getattr(row, "deleted_at", None) is not None):
        raise NotFound(missing)
    return row


def utc_column(nullable: bool = False, index: bool = False) -> Column:
    """A `UTCDateTime` column for a model's `Field(sa_column=...)`."""
    return Column(UTCDateTime, nullable=nullable, index=index)


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs and route them through psycopg 3."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, *, busy_timeout_ms: int = 5000, pool_size: int = 5,
                max_overflow: int = 10) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError("database url is not a valid SQLAlchemy URL") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        _apply_sqlite_pragmas(engine, busy_timeout_ms)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_size=pool_size, max_overflow=max_overflow,
                             pool_pre_ping=True)
    raise ConfigError(f"unsupported database {parsed.get_backend_name()!r}: "
                      "use sqlite:/// or postgresql://")


def _apply_sqlite_pragmas(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits when the block ends normally and rolls back otherwise."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# -- one session per request ------------------------------------------------------------

def init_app(app, engine: Engine) -> None:
    from flask import g

    app.extensions["lifeline.engine"] = engine

    @app.after_request
    def commit_request_session(response):
        # Commit before the response leaves, so nobody is told of a change that failed.
        # Error handlers have already rolled back and closed the session.
        session = g.pop("db_session", None)
        if session is not None:
            try:
                session.commit()
            finally:
                session.close()
        return response

    @app.teardown_request
    def discard_request_session(_exc):
        rollback_request_session()


def request_session() -> Session:
    from flask import current_app, g

    if "db_session" not in g:
        g.db_session = Session(current_app.extensions["lifeline.engine"], expire_on_commit=False)
    return g.db_session


def rollback_request_session() -> None:
    """Nothing the request changed is kept: called when an error is answered."""
    from flask import g

    session = g.pop("db_session", None)
    if session is not None:
        session.rollback()
        session.close()

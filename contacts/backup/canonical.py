"""The canonical form of a backed-up row, which a snapshot's checksums are taken over, and a
table's rows read in it from SQLite or PostgreSQL (with the conversions back to each
database's stored form, which restore uses); SnapshotRefused and the Manifest of row counts
and checksums.

The canonical form of a row is one compact JSON list per line (UTF-8, no ASCII escaping) of
its values in column order:
  text as a string, integers as numbers, NULL as null, booleans as true/false,
  JSON columns as their JSON value, times in UTC as Python's isoformat() gives them
  ("2026-11-26T11:22:33.123456+00:00", or without ".ffffff" when it is zero).
Rows are read straight from the DB-API cursor, ordered by primary key: PostgreSQL formats
times itself and Python encodes the rows; SQLite builds whole lines with json_array() where
that is checked to give the same bytes. A column of any other type goes through SQLAlchemy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from operator import itemgetter
from queue import Empty, Queue

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Integer,
    String,
    Table,
    case,
    func,
    literal,
    null,
    select,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlmodel.sql.sqltypes import AutoString

from contacts.core.db import UTCDateTime
from contacts.core.errors import LifelineError


class SnapshotRefused(LifelineError):
    code = "snapshot_refused"


@dataclass
class Manifest:
    revision: str | None
    created_at: str
    tables: dict[str, dict] = field(default_factory=dict)  # name -> {"rows", "sha256"}

    @property
    def rows(self) -> int:
        return sum(table["rows"] for table in self.tables.values())


BATCH_ROWS = 10_000


def _unencodable(value):
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# What json.dumps(values, separators=(",", ":"), ensure_ascii=False) gives, from the C encoder
# called directly (no per-row Python frame); rows hold no cycles, so no circularity markers.
_c_encode = json.encoder.c_make_encoder(None, _unencodable, json.encoder.encode_basestring,
                                        None, ":", ",", False, False, True)


def _encode(value):
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def line(values) -> bytes:
    return ("".join(_c_encode(values, 0)) + "\n").encode()


def _lines(rows: list) -> bytes:
    return ("\n".join(map("".join, map(_c_encode, rows, repeat(0)))) + "\n").encode()


def column_kind(column) -> str:
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return "time"
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, JSON):
        return "json"
    if isinstance(kind, Integer):
        return "int"
    if isinstance(kind, AutoString) or (isinstance(kind, String) and not isinstance(kind, Enum)):
        return "text"
    return "other"  # read and written through SQLAlchemy


def decoders(table: Table) -> list[Callable]:
    def as_time(value):
        return None if value is None else datetime.fromisoformat(value)

    def same(value):
        return value

    return [as_time if isinstance(column.type, (DateTime, UTCDateTime)) else same
            for column in table.columns]


_sqlite_datetime = sqlite.DATETIME().result_processor(sqlite.dialect(), None)


def _time_from_sqlite(value):
    """'2026-11-26 11:22:33.123456' (naive UTC, as SQLAlchemy stores it) -> canonical."""
    if value is None:
        return None
    if len(value) == 26 and value[10] == " " and value[19] == ".":
        if value.endswith("000000"):
            return f"{value[:10]}T{value[11:19]}+00:00"
        return f"{value[:10]}T{value[11:]}+00:00"
    return _sqlite_datetime(value).replace(tzinfo=UTC).isoformat()


def _time_to_sqlite(value):
    """Canonical -> SQLite's stored form."""
    if value is None:
        return None
    if value[10:11] == "T" and value.endswith("+00:00"):
        if len(value) == 32:
            return f"{value[:10]} {value[11:26]}"
        if len(value) == 25:
            return f"{value[:10]} {value[11:19]}.000000"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("naive datetime given where UTC was expected")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _bool_from_sqlite(value):
    return None if value is None else bool(value)


def _json_from_text(value):
    return None if value is None else json.loads(value)


_SQLITE_READ = {"bool": _bool_from_sqlite, "json": _json_from_text}
SQLITE_WRITE = {"json": json.dumps}
POSTGRESQL_WRITE = {"json": json.dumps}  # times go to COPY in their canonical text form

# SQLite turns times from and to their stored form in SQL (the common shapes) and calls back
# into Python only for anything else.
_SQLITE_TIME_FROM = "lifeline_time_from_sqlite"
_SQLITE_TIME_TO = "lifeline_time_to_sqlite"


def _concat(*parts):
    joined = parts[0]
    for part in parts[1:]:
        joined = joined.op("||")(part)
    return joined


_D = "[0-9]"
_SQLITE_STORED = f"{_D * 4}-{_D * 2}-{_D * 2} {_D * 2}:{_D * 2}:{_D * 2}.{_D * 6}"
_CANONICAL = f"{_D * 4}-{_D * 2}-{_D * 2}T{_D * 2}:{_D * 2}:{_D * 2}"


def _sqlite_time_read(column):
    """Like _time_from_sqlite: one GLOB checks the shape SQLAlchemy stores ('.ffffff' is
    the only '.', ' ' the only space)."""
    return case(
        (column.op("GLOB")(literal(_SQLITE_STORED, String())),
         _concat(func.replace(func.replace(column, ".000000", ""), " ", "T"),
                 literal("+00:00"))),
        (column.is_(None), null()),
        else_=getattr(func, _SQLITE_TIME_FROM)(column))


def sqlite_time_write(value):
    """Like _time_to_sqlite."""
    return case(
        (value.op("GLOB")(literal(f"{_CANONICAL}.{_D * 6}+00:00", String())),
         func.replace(func.substr(value, 1, 26), "T", " ")),
        (value.op("GLOB")(literal(f"{_CANONICAL}+00:00", String())),
         _concat(func.replace(func.substr(value, 1, 19), "T", " "), literal(".000000"))),
        (value.is_(None), null()),
        else_=getattr(func, _SQLITE_TIME_TO)(value))


def sqlite_functions(raw) -> None:
    raw.create_function(_SQLITE_TIME_FROM, 1, _time_from_sqlite, deterministic=True)
    raw.create_function(_SQLITE_TIME_TO, 1, _time_to_sqlite, deterministic=True)


def _postgresql_time(column):
    """PostgreSQL formats times in the canonical form itself, so its rows need no work here
    (and the server does it on its own core while this process encodes)."""
    utc = func.timezone("UTC", column)
    return func.to_char(utc, case(
        (func.date_trunc("second", utc) == utc, literal('YYYY-MM-DD"T"HH24:MI:SS"+00:00"')),
        else_=literal('YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')))


def _key_order(connection: Connection, table: Table) -> list:
    """Primary-key order by bytes on every database, so checksums never depend on a
    PostgreSQL collation (SQLite compares bytes already)."""
    if connection.dialect.name != "postgresql":
        return list(table.primary_key.columns)
    return [column.collate("C") if isinstance(column.type, String) else column
            for column in table.primary_key.columns]


def _select_sql(connection: Connection, table: Table, kinds: list[str]) -> str:
    read_time = (_postgresql_time if connection.dialect.name == "postgresql"
                 else _sqlite_time_read)
    columns = [read_time(column) if kind == "time" else column
               for column, kind in zip(table.columns, kinds, strict=True)]
    query = select(*columns).order_by(*_key_order(connection, table))
    return str(query.compile(dialect=connection.dialect,
                             compile_kwargs={"literal_binds": True}))


def convert_rows(rows: list, width: int, converters: list[tuple[int, Callable]]) -> list:
    """Apply per-column converters to a batch of rows (each must have `width` values)."""
    if not converters:
        if set(map(len, rows)) != {width}:
            raise SnapshotRefused("a row does not have as many values as its table has "
                                  "columns")
        return rows
    try:
        columns = list(zip(*rows, strict=True))
    except ValueError:
        columns = []
    if len(columns) != width:
        raise SnapshotRefused("a row does not have as many values as its table has columns")
    for index, convert in converters:
        columns[index] = map(convert, columns[index])
    return list(zip(*columns, strict=True))


@contextmanager
def driver_errors(connection: Connection) -> Iterator[None]:
    """Errors of the DB-API cursors used here, raised as SQLAlchemy's (which callers, such
    as the CLI, turn into one line)."""
    dbapi = connection.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi.Error) from exc


def table_blocks(connection: Connection, table: Table,
                  batch: int = BATCH_ROWS) -> Iterator[tuple[int, bytes]]:
    """The table's canonical lines, ordered by primary key, as (row count, bytes) blocks."""
    kinds = [column_kind(column) for column in table.columns]
    with driver_errors(connection):
        if _lines_in_database(connection, kinds):
            yield from _database_lines(connection, table, kinds, batch)
            return
        batches = _table_batches(connection, table, kinds, batch)
        if connection.dialect.name == "postgresql":
            # PostgreSQL prepares the next batch while this thread encodes the last one.
            batches = _in_background(batches)
        for rows in batches:
            yield len(rows), _lines(rows)


def _in_background(items: Iterator, depth: int = 2) -> Iterator:
    """Yield what `items` yields, running it in a thread up to `depth` items ahead. (Only
    where that thread mostly waits: a thread that keeps the GIL busy slows both down.)"""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    finished = object()

    def run() -> None:
        try:
            for item in items:
                queue.put((True, item))
                if stop.is_set():
                    return
            queue.put((False, finished))
        except BaseException as exc:  # raised in the consumer
            queue.put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close:
                close()

    thread = threading.Thread(target=run, name="lifeline-backup", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = queue.get()
            if ok:
                yield item
            elif item is finished:
                return
            else:
                raise item
    finally:
        stop.set()
        while thread.is_alive():  # let a producer blocked on a full queue see the stop
            try:
                queue.get_nowait()
            except Empty:
                thread.join(0.01)


def _table_batches(connection: Connection, table: Table, kinds: list[str],
                   batch: int) -> Iterator[list]:
    """The table's rows as lists of canonical values, ordered by primary key."""
    if "other" in kinds:
        yield from _sqlalchemy_batches(connection, table, batch)
        return
    query = _select_sql(connection, table, kinds)
    raw = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        with raw.cursor(name=f"lifeline_backup_{os.urandom(4).hex()}") as cursor:
            cursor.execute(query)
            while rows := cursor.fetchmany(batch):
                yield rows
        return
    converters = [(index, _SQLITE_READ[kind]) for index, kind in enumerate(kinds)
                  if kind in _SQLITE_READ]
    sqlite_functions(raw)
    cursor = raw.cursor()
    try:
        cursor.execute(query)
        while rows := cursor.fetchmany(batch):
            yield convert_rows(rows, len(kinds), converters) if converters else rows
    finally:
        cursor.close()


def _sqlalchemy_batches(connection: Connection, table: Table, batch: int) -> Iterator[list]:
    query = select(*table.columns).order_by(*_key_order(connection, table))
    result = connection.execution_options(stream_results=True, yield_per=batch).execute(query)
    for part in result.partitions():
        yield [tuple(_encode(value) for value in row) for row in part]


# SQLite builds the lines of tables of text, integer and time columns itself with json_array()
# (JSON columns need Python's re-encoding), but only where that gives exactly the canonical
# line, which this probe checks first. (On PostgreSQL, to_json() per value costs the server
# more than encoding costs this process, which runs alongside it.)
_PROBE_TEXT = "".join(map(chr, range(1, 128))) + "é ü 日本 🙂 \u2028\u2029\ufeff\U0010ffff"
_PROBE = [_PROBE_TEXT, 0, -1, 2 ** 63 - 1, -(2 ** 63), None, "", "2026-01-02T03:04:05+00:00"]
_PROBE_LINE = "".join(_c_encode(_PROBE, 0))
_LINE_KINDS = {"text", "int", "time"}


def _lines_in_database(connection: Connection, kinds: list[str]) -> bool:
    if connection.dialect.name != "sqlite" or not set(kinds) <= _LINE_KINDS:
        return False
    raw = connection.connection.driver_connection
    got = raw.execute(f"SELECT json_array({', '.join('?' * len(_PROBE))})", _PROBE).fetchone()
    return got[0] == _PROBE_LINE


def _database_lines(connection: Connection, table: Table, kinds: list[str],
                    batch: int) -> Iterator[tuple[int, bytes]]:
    values = [_sqlite_time_read(column) if kind == "time" else column
              for column, kind in zip(table.columns, kinds, strict=True)]
    query = str(select(func.json_array(*values)).order_by(*table.primary_key.columns).compile(
        dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    raw = connection.connection.driver_connection
    sqlite_functions(raw)
    cursor = raw.cursor()
    try:
        cursor.execute(query)
        while rows := cursor.fetchmany(batch):
            yield len(rows), ("\n".join(map(itemgetter(0), rows)) + "\n").encode()
    finally:
        cursor.close()


def table_checksums(blocks: Iterator[tuple[int, bytes]],
                     sink: Callable[[bytes], None] | None = None,
                     progress: Callable[[int], None] | None = None) -> dict:
    digest, count = hashlib.sha256(), 0
    for rows, data in blocks:
        digest.update(data)
        if sink:
            sink(data)
        count += rows
        if progress:
            progress(rows)
    return {"rows": count, "sha256": digest.hexdigest()}

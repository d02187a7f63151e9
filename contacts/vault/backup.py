"""Encrypted, authenticated snapshots of Lifeline's database, kept outside it; restore into an
empty database; drills that prove a snapshot restores and checks out.

A snapshot file is a short plaintext header, then chunks sealed with AES-256-GCM under the
backup key (not the field keys). Each chunk's associated data holds the header, its number
and whether it is the last, so a changed, reordered, dropped or truncated byte is refused.
Inside: every table's rows as JSON lines, one consistent read, ending with a manifest of
row counts and SHA-256 checksums that restore and drills check against. Personal fields stay
encrypted under the field keys inside the snapshot too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from queue import Empty, Queue

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql
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
    insert,
    literal,
    literal_column,
    null,
    select,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel, col
from sqlmodel import select as orm_select
from sqlmodel.sql.sqltypes import AutoString

from contacts.core import audit, schema
from contacts.core.audit import Actor
from contacts.core.crypto import ENCRYPTED_COLUMNS, FieldCipher, Keyring
from contacts.core.db import UTCDateTime, is_postgresql, make_engine, session_scope, utcnow
from contacts.core.errors import Invalid, LifelineError, NotFound
from contacts.vault.models import BackupDrill

log = logging.getLogger(__name__)

MAGIC = b"LIFELINE-BACKUP\n"
FORMAT = 1
CHUNK_BYTES = 1 << 20
SUFFIX = ".llbackup"
# What create_snapshot names a file: a plain name, never a path.
SNAPSHOT_NAME = re.compile(r"lifeline-[0-9A-Za-z_-]+" + re.escape(SUFFIX))
# Rows that only make sense in the running process are not backed up.
SKIPPED_TABLES = {"scheduler_heartbeat", "backup_drill"}


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


def backed_up_tables() -> list[Table]:
    return [table for table in SQLModel.metadata.sorted_tables
            if table.name not in SKIPPED_TABLES]


# -- values ---------------------------------------------------------------------------------
#
# The canonical form of a row, which the manifest's checksums are taken over, is one compact
# JSON list per line (UTF-8, no ASCII escaping) of its values in column order:
#   text as a string, integers as numbers, NULL as null, booleans as true/false,
#   JSON columns as their JSON value, times in UTC as Python's isoformat() gives them
#   ("2026-11-26T11:22:33.123456+00:00", or without ".ffffff" when it is zero).
# Rows are read straight from the DB-API cursor, ordered by primary key: PostgreSQL formats
# times itself and Python encodes the rows; SQLite builds whole lines with json_array() where
# that is checked to give the same bytes. A column of any other type goes through SQLAlchemy.
# Restore loads with COPY (PostgreSQL) or executemany (SQLite, into a rollback journal, then
# back to WAL) in one transaction, rebuilds the secondary indexes (and PostgreSQL's foreign
# keys) it set aside, commits, then reads the database again and compares every table with
# the manifest.

BATCH_ROWS = 10_000
RESTORE_CACHE_KIB = 256 * 1024  # SQLite's page cache while it restores


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


def _line(values) -> bytes:
    return ("".join(_c_encode(values, 0)) + "\n").encode()


def _lines(rows: list) -> bytes:
    return ("\n".join(map("".join, map(_c_encode, rows, repeat(0)))) + "\n").encode()


def _kind(column) -> str:
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


def _decoders(table: Table) -> list[Callable]:
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
_SQLITE_WRITE = {"json": json.dumps}
_POSTGRESQL_WRITE = {"json": json.dumps}  # times go to COPY in their canonical text form

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


def _sqlite_time_write(value):
    """Like _time_to_sqlite."""
    return case(
        (value.op("GLOB")(literal(f"{_CANONICAL}.{_D * 6}+00:00", String())),
         func.replace(func.substr(value, 1, 26), "T", " ")),
        (value.op("GLOB")(literal(f"{_CANONICAL}+00:00", String())),
         _concat(func.replace(func.substr(value, 1, 19), "T", " "), literal(".000000"))),
        (value.is_(None), null()),
        else_=getattr(func, _SQLITE_TIME_TO)(value))


def _sqlite_functions(raw) -> None:
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


def _convert(rows: list, width: int, converters: list[tuple[int, Callable]]) -> list:
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
def _driver_errors(connection: Connection) -> Iterator[None]:
    """Errors of the DB-API cursors used here, raised as SQLAlchemy's (which callers, such
    as the CLI, turn into one line)."""
    dbapi = connection.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi.Error) from exc


def _table_blocks(connection: Connection, table: Table,
                  batch: int = BATCH_ROWS) -> Iterator[tuple[int, bytes]]:
    """The table's canonical lines, ordered by primary key, as (row count, bytes) blocks."""
    kinds = [_kind(column) for column in table.columns]
    with _driver_errors(connection):
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
    _sqlite_functions(raw)
    cursor = raw.cursor()
    try:
        cursor.execute(query)
        while rows := cursor.fetchmany(batch):
            yield _convert(rows, len(kinds), converters) if converters else rows
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
    _sqlite_functions(raw)
    cursor = raw.cursor()
    try:
        cursor.execute(query)
        while rows := cursor.fetchmany(batch):
            yield len(rows), ("\n".join(map(itemgetter(0), rows)) + "\n").encode()
    finally:
        cursor.close()


def _table_checksums(blocks: Iterator[tuple[int, bytes]],
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


# -- sealing --------------------------------------------------------------------------------


class _Sealer:
    def __init__(self, key: bytes, handle, header: bytes):
        self.aead, self.handle, self.header = AESGCM(key), handle, header
        self.prefix = os.urandom(8)
        self.buffer = bytearray()
        self.counter = 0
        handle.write(self.prefix)

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) < CHUNK_BYTES:
            return
        sealed = 0
        with memoryview(self.buffer) as view:
            while len(view) - sealed >= CHUNK_BYTES:
                self._seal(view[sealed:sealed + CHUNK_BYTES], final=False)
                sealed += CHUNK_BYTES
        del self.buffer[:sealed]

    def close(self) -> None:
        self._seal(bytes(self.buffer), final=True)

    def _seal(self, chunk, *, final: bool) -> None:
        nonce = self.prefix + struct.pack(">I", self.counter)
        aad = self.header + struct.pack(">I?", self.counter, final)
        sealed = self.aead.encrypt(nonce, chunk, aad)
        self.handle.write(struct.pack(">I?", len(sealed), final) + sealed)
        self.counter += 1


def _open_chunks(key: bytes, handle, header: bytes) -> Iterator[bytes]:
    aead = AESGCM(key)
    prefix = handle.read(8)
    counter, final = 0, False
    while not final:
        frame = handle.read(5)
        if len(frame) < 5:
            raise SnapshotRefused("the snapshot is truncated (its last chunk is missing)")
        length, final = struct.unpack(">I?", frame)
        sealed = handle.read(length)
        nonce = prefix + struct.pack(">I", counter)
        try:
            yield aead.decrypt(nonce, sealed, header + struct.pack(">I?", counter, final))
        except InvalidTag:
            raise SnapshotRefused(
                f"the snapshot failed authentication at chunk {counter}: it was changed, "
                "damaged, or made with another backup key") from None
        counter += 1
    if handle.read(1):
        raise SnapshotRefused("the snapshot has bytes after its last chunk")


def _read_header(handle) -> tuple[bytes, dict]:
    if handle.read(len(MAGIC)) != MAGIC:
        raise SnapshotRefused("not a Lifeline backup file")
    (length,) = struct.unpack(">I", handle.read(4))
    header = handle.read(length)
    try:
        meta = json.loads(header)
    except ValueError:
        raise SnapshotRefused("the snapshot header is damaged") from None
    if meta.get("format") != FORMAT:
        raise SnapshotRefused(f"unknown snapshot format {meta.get('format')!r}")
    return header, meta


# -- create ---------------------------------------------------------------------------------


def create_snapshot(*, engine: Engine, backup_key: bytes, directory: Path, revision: str | None,
                    progress: Callable[[int], None] | None = None) -> tuple[Path, Manifest]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = utcnow()
    # Microseconds in the name: snapshots taken within one second still sort oldest first,
    # which is the order `prune_snapshots` and `latest_snapshot` rely on.
    name = f"lifeline-{now:%Y%m%dT%H%M%S%f}-{os.urandom(3).hex()}{SUFFIX}"
    manifest = Manifest(revision=revision, created_at=now.isoformat())
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".partial-")
    try:
        with os.fdopen(descriptor, "wb") as handle, _consistent_read(engine) as connection:
            # The field keys its encrypted fields are under, in the (authenticated) header:
            # `keys retire` keeps a key while a snapshot here still needs it.
            header = json.dumps({"format": FORMAT, "created_at": now.isoformat(),
                                 "revision": revision,
                                 "field_keys": _field_key_ids(connection)}).encode()
            handle.write(MAGIC + struct.pack(">I", len(header)) + header)
            sealer = _Sealer(backup_key, handle, header)
            for table in backed_up_tables():
                sealer.write(_line(["#table", table.name, [c.name for c in table.columns]]))
                manifest.tables[table.name] = _table_checksums(
                    _table_blocks(connection, table), sealer.write, progress)
            sealer.write(_line(["#manifest", manifest.__dict__]))
            sealer.close()
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        target = directory / name
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target, manifest


class _consistent_read:
    """One read transaction over every table: the snapshot is a single point in time."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def __enter__(self) -> Connection:
        options = {"isolation_level": "REPEATABLE READ"} if is_postgresql(self.engine) else {}
        self.connection = self.engine.connect().execution_options(**options)
        self.transaction = self.connection.begin()
        if not is_postgresql(self.engine):
            # pysqlite opens no transaction for a SELECT by itself: without BEGIN each
            # statement would read the database as it is at that moment.
            raw = self.connection.connection.driver_connection
            if not raw.in_transaction:
                raw.execute("BEGIN")
            self.connection.execute(text("SELECT 1 FROM sqlite_master LIMIT 1"))
        return self.connection

    def __exit__(self, *exc) -> None:
        self.transaction.rollback()
        self.connection.close()


def _backed_up_encrypted_columns():
    backed_up = {table.name for table in backed_up_tables()}
    return [registered for registered in ENCRYPTED_COLUMNS if registered.table.name in backed_up]


def _field_key_ids(connection: Connection) -> list[str]:
    """The key ids (the part before the first '.') of every encrypted field, one read."""
    found: set[str] = set()
    for registered in _backed_up_encrypted_columns():
        column = registered.table.c[registered.column]
        if connection.dialect.name == "postgresql":
            key_id = func.split_part(column, ".", 1)
        else:
            key_id = func.substr(column, 1, func.instr(column, ".") - 1)
        found.update(connection.execute(select(key_id).where(column.is_not(None))
                                        .group_by(key_id)).scalars())
    return sorted(found)


def count_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return sum(connection.execute(select(func.count()).select_from(table)).scalar_one()
                   for table in backed_up_tables())


# -- read and restore -------------------------------------------------------------------------


def _parse_lines(lines: list[bytes]) -> list:
    """Each line is one JSON value; parse them all at once, one by one if that fails."""
    try:
        items = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        items = None
    if items is None or len(items) != len(lines):
        try:
            items = [json.loads(line) for line in lines]
        except ValueError:
            raise SnapshotRefused("the snapshot's contents are damaged") from None
    return items


def _snapshot_parts(path: Path, backup_key: bytes) -> Iterator[tuple[str, object]]:
    """Yield ("table", (name, columns)), ("rows", (lines, rows)) for runs of rows (their
    lines as stored, and parsed), and finally ("manifest", dict)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise Invalid(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        header, _meta = _read_header(handle)
        pending = b""
        manifest_seen = False
        for chunk in _open_chunks(backup_key, handle, header):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if not lines:
                continue
            if manifest_seen:
                raise SnapshotRefused("the snapshot has lines after its manifest")
            items = _parse_lines(lines)
            start = 0
            for index, item in enumerate(items):
                if type(item) is not list or not item:
                    raise SnapshotRefused("the snapshot's contents are damaged")
                marker = item[0]
                if marker != "#table" and marker != "#manifest":
                    continue
                if index > start:
                    yield "rows", (lines[start:index], items[start:index])
                start = index + 1
                if marker == "#table":
                    yield "table", (item[1], item[2])
                else:
                    if index != len(items) - 1:
                        raise SnapshotRefused("the snapshot has lines after its manifest")
                    manifest_seen = True
                    yield "manifest", item[1]
            if start < len(items):
                yield "rows", (lines[start:], items[start:])
        if pending or not manifest_seen:
            raise SnapshotRefused("the snapshot ends without its manifest")


def verify_snapshot(path: Path, backup_key: bytes) -> Manifest:
    """Decrypt and authenticate the whole file and check it against its own manifest."""
    counted: dict[str, dict] = {}
    current = None
    digest = None
    manifest = None
    for kind, payload in _snapshot_parts(path, backup_key):
        if kind == "table":
            current, digest = payload[0], hashlib.sha256()
            counted[current] = {"rows": 0, "sha256": digest.hexdigest()}
        elif kind == "rows":
            if current is None:
                raise SnapshotRefused("the snapshot has rows before its first table")
            lines = payload[0]
            # The lines as stored are the canonical lines the manifest's checksums cover.
            digest.update(b"\n".join(lines) + b"\n")
            counted[current]["rows"] += len(lines)
            counted[current]["sha256"] = digest.hexdigest()
        else:
            manifest = Manifest(**payload)
    for name, figures in counted.items():
        if manifest.tables.get(name) != figures:
            raise SnapshotRefused(f"table {name} does not match the snapshot's manifest")
    return manifest


class _SqliteWriter:
    """Plain executemany of rows in SQLite's stored form, in the caller's transaction."""

    def __init__(self, connection: Connection, table: Table, kinds: list[str]):
        # Numbered parameters, so that a time's parameter can appear in its SQL conversion.
        values = {}
        for number, (column, kind) in enumerate(zip(table.columns, kinds, strict=True), 1):
            value = literal_column(f"?{number}")
            values[column.name] = _sqlite_time_write(value) if kind == "time" else value
        self.sql = str(insert(table).values(values).inline().compile(
            dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
        self.width = len(kinds)
        self.converters = [(index, _SQLITE_WRITE[kind]) for index, kind in enumerate(kinds)
                           if kind in _SQLITE_WRITE]
        raw = connection.connection.driver_connection
        _sqlite_functions(raw)
        self.cursor = raw.cursor()

    def write(self, rows: list) -> None:
        self.cursor.executemany(self.sql, _convert(rows, self.width, self.converters))

    def close(self, failed: bool = False) -> None:
        self.cursor.close()


class _CopyWriter:
    """COPY ... FROM STDIN into PostgreSQL, in the caller's transaction."""

    def __init__(self, connection: Connection, table: Table, kinds: list[str]):
        self.width = len(kinds)
        self.converters = [(index, _POSTGRESQL_WRITE[kind]) for index, kind in enumerate(kinds)
                           if kind in _POSTGRESQL_WRITE]
        self.cursor = connection.connection.driver_connection.cursor()
        self.copying = self.cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table.name),
            sql.SQL(", ").join(sql.Identifier(column.name) for column in table.columns)))
        self.copy = self.copying.__enter__()

    def write(self, rows: list) -> None:
        write_row = self.copy.write_row
        for row in _convert(rows, self.width, self.converters):
            write_row(row)

    def close(self, failed: bool = False) -> None:
        try:
            if failed:
                error = SnapshotRefused("restore stopped")
                self.copying.__exit__(SnapshotRefused, error, None)
            else:
                self.copying.__exit__(None, None, None)
        finally:
            self.cursor.close()


class _SqlalchemyWriter:
    def __init__(self, connection: Connection, table: Table, kinds: list[str]):
        self.connection, self.table = connection, table
        self.names = [column.name for column in table.columns]
        self.decoders = _decoders(table)

    def write(self, rows: list) -> None:
        self.connection.execute(insert(self.table), [
            {name: decode(value) for name, decode, value in zip(self.names, self.decoders, row,
                                                                strict=True)}
            for row in rows])

    def close(self, failed: bool = False) -> None:
        pass


def _writer(connection: Connection, table: Table):
    kinds = [_kind(column) for column in table.columns]
    if "other" in kinds:
        return _SqlalchemyWriter(connection, table, kinds)
    if connection.dialect.name == "postgresql":
        return _CopyWriter(connection, table, kinds)
    return _SqliteWriter(connection, table, kinds)


def restore_snapshot(*, path: Path, backup_key: bytes, engine: Engine, head_revision: str | None,
                     progress: Callable[[int], None] | None = None,
                     batch: int = BATCH_ROWS) -> Manifest:
    """Fill an empty, migrated database from a snapshot, then check it row for row."""
    tables = {table.name: table for table in backed_up_tables()}
    with engine.connect() as connection:
        for table in tables.values():
            if connection.execute(select(func.count()).select_from(table)).scalar_one():
                raise SnapshotRefused(f"the target database is not empty (table {table.name} "
                                      "has rows): restore only into an empty database")
    manifest = None
    with (_rollback_journal(engine), engine.begin() as connection, _driver_errors(connection),
          _restore_settings(connection)):
        # Secondary indexes and foreign keys are set aside while rows load and rebuilt after
        # (one sort per index, one join per key, all checked), in the same transaction.
        rebuild = _set_aside_indexes_and_keys(connection, list(tables))
        writer = None
        try:
            for kind, payload in _snapshot_parts(path, backup_key):
                if kind == "rows":
                    if writer is None:
                        raise SnapshotRefused("the snapshot has rows before its first table")
                    rows = payload[1]
                    for start in range(0, len(rows), batch):
                        writer.write(rows[start:start + batch])
                    if progress:
                        progress(len(rows))
                    continue
                if writer is not None:
                    done, writer = writer, None
                    done.close()
                if kind == "table":
                    name, columns = payload
                    table = tables.get(name)
                    if table is None or [c.name for c in table.columns] != columns:
                        raise SnapshotRefused(f"table {name} in the snapshot does not match "
                                              "this version of Lifeline's schema")
                    writer = _writer(connection, table)
                else:
                    manifest = Manifest(**payload)
        except BaseException:
            if writer is not None:
                writer.close(failed=True)
            raise
        if manifest.revision != head_revision:
            raise SnapshotRefused(f"the snapshot was made at schema revision "
                                  f"{manifest.revision}; this Lifeline is at {head_revision}")
        raw = connection.connection.driver_connection
        for statement in rebuild:
            raw.execute(statement)
        if is_postgresql(engine):
            _reset_sequences(connection, tables.values())
    check_database(engine, manifest)
    return manifest


@contextmanager
def _rollback_journal(engine: Engine) -> Iterator[None]:
    """SQLite: restore with a rollback journal, then go back to the write-ahead log. Into an
    empty database the journal keeps only the few pages there were before (pages added after
    them need none, and a failed restore still rolls back), and the commit writes each page
    once; through the log it is written twice, to the log and then into the database. Only a
    saving: while another connection has the file open SQLite keeps the log, and so does the
    restore."""
    if engine.dialect.name != "sqlite":
        yield
        return
    before = _switch_journal(engine, "delete")
    try:
        yield
    finally:
        if before not in (None, "delete") and _switch_journal(engine, before) is None:
            # Every new connection asks for WAL again (db.make_engine), so this passes.
            log.warning("the restored database could not go back to journal mode %s yet",
                        before)


def _switch_journal(engine: Engine, mode: str) -> str | None:
    """Put the SQLite file in this journal mode; the mode it was in, or None if it stayed."""
    with engine.connect() as connection:
        raw = connection.connection.driver_connection
        (before,) = raw.execute("PRAGMA journal_mode").fetchone()
        try:
            (now,) = raw.execute(f"PRAGMA journal_mode = {mode}").fetchone()
        except connection.dialect.loaded_dbapi.OperationalError:  # locked by another
            return None
    return before if now == mode else None


@contextmanager
def _restore_settings(connection: Connection) -> Iterator[None]:
    """For this restore only: SQLite gets a page cache big enough for the indexes it builds
    (and an explicit transaction, so that the DDL below is in it too); PostgreSQL more
    memory to sort rows for its indexes."""
    raw = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        raw.execute(f"SET LOCAL maintenance_work_mem = '{RESTORE_CACHE_KIB}kB'")
        yield
        return
    (before,) = raw.execute("PRAGMA cache_size").fetchone()
    raw.execute(f"PRAGMA cache_size = {-RESTORE_CACHE_KIB}")
    try:
        if not raw.in_transaction:
            raw.execute("BEGIN")
        yield
    finally:
        raw.execute(f"PRAGMA cache_size = {int(before)}")


_POSTGRESQL_SET_ASIDE = """
WITH restored AS (
    SELECT to_regclass(quote_ident(name)) AS oid FROM unnest(CAST(:tables AS text[])) AS name
)
SELECT 'index', format('DROP INDEX %I.%I', n.nspname, c.relname), pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indrelid IN (SELECT oid FROM restored)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid
                  AND k.contype IN ('p', 'u', 'x'))
UNION ALL
SELECT 'key', format('ALTER TABLE %I.%I DROP CONSTRAINT %I', n.nspname, t.relname, k.conname),
       format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', n.nspname, t.relname, k.conname,
              pg_get_constraintdef(k.oid))
FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE k.contype = 'f' AND k.conrelid IN (SELECT oid FROM restored)
"""

_SQLITE_SET_ASIDE = """
SELECT 'DROP INDEX ' || quote(name), sql FROM sqlite_master
WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN (SELECT value FROM json_each(?))
"""


def _set_aside_indexes_and_keys(connection: Connection, tables: list[str]) -> list[str]:
    """Drop the restored tables' secondary indexes (and on PostgreSQL their foreign keys);
    return the statements that put them back, indexes first. (SQLite checks foreign keys
    row by row against the parents' primary keys, which stay.)"""
    raw = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        found = connection.execute(text(_POSTGRESQL_SET_ASIDE), {"tables": tables}).all()
        found.sort(key=lambda row: row[0] != "index")
        drops, rebuild = [row[1] for row in found], [row[2] for row in found]
    else:
        found = raw.execute(_SQLITE_SET_ASIDE, (json.dumps(tables),)).fetchall()
        drops, rebuild = [row[0] for row in found], [row[1] for row in found]
    for statement in reversed(drops):
        raw.execute(statement)
    return rebuild


def _reset_sequences(connection: Connection, tables) -> None:
    for table in tables:
        keys = list(table.primary_key.columns)
        key = keys[0]
        if len(keys) == 1 and isinstance(key.type, Integer) and key.autoincrement in (True,
                                                                                      "auto"):
            highest = connection.execute(select(func.max(key))).scalar() or 0
            connection.execute(text("SELECT setval(pg_get_serial_sequence(:table, :column), "
                                    ":next, false)"),
                               {"table": table.name, "column": key.name, "next": highest + 1})


def database_checksums(engine: Engine) -> dict[str, dict]:
    """Row counts and checksums of the canonical lines of every backed-up table, read afresh
    from the database (what a snapshot's manifest must match)."""
    with _consistent_read(engine) as connection:
        return {table.name: _table_checksums(_table_blocks(connection, table))
                for table in backed_up_tables()}


def check_database(engine: Engine, manifest: Manifest) -> None:
    actual = database_checksums(engine)
    for name, expected in manifest.tables.items():
        if actual.get(name) != expected:
            got = actual.get(name, {}).get("rows")
            raise SnapshotRefused(f"after restore, table {name} differs from the snapshot "
                                  f"({got} rows, {expected['rows']} expected)")


def decrypt_every_field(engine: Engine, cipher: FieldCipher) -> int:
    """Decrypt each registered encrypted field; raises on the first that fails."""
    checked = 0
    with engine.connect() as connection:
        for registered in ENCRYPTED_COLUMNS:
            column = registered.table.c[registered.column]
            result = connection.execution_options(stream_results=True, yield_per=5000).execute(
                select(column).where(column.is_not(None)))
            for (value,) in result:
                cipher.decrypt(value, context=registered.context)
                checked += 1
    return checked


def snapshots_in(directory: Path) -> list[Path]:
    """The folder's snapshots, oldest first (their names start with the time they hold)."""
    return sorted(directory.glob(f"lifeline-*{SUFFIX}"))


def latest_snapshot(directory: Path) -> Path:
    snapshots = snapshots_in(directory)
    if not snapshots:
        raise Invalid(f"no snapshot in {directory}")
    return snapshots[-1]


def snapshot_named(directory: Path, name: str | None) -> Path:
    """The snapshot of `directory` called `name`, or its newest when `name` is None. Only a
    snapshot's plain file name is taken, so a caller never reaches outside the folder; the
    errors name the file, never the folder."""
    if name is None:
        snapshots = snapshots_in(directory)
        if not snapshots:
            raise NotFound("There is no snapshot in the backup folder yet.")
        return snapshots[-1]
    if not SNAPSHOT_NAME.fullmatch(name):
        raise Invalid(f"Give a snapshot's file name, like lifeline-20260101T120000000000-a1b2c3"
                      f"{SUFFIX}, not a path or another file.")
    path = directory / name
    if not path.is_file():
        raise NotFound(f"There is no snapshot called {name}.")
    return path


def snapshot_field_keys(path: Path, backup_key: bytes) -> set[str]:
    """The field keys a snapshot's encrypted fields need: from its header, or, for a
    snapshot made before headers named them, by reading it whole."""
    try:
        with path.open("rb") as handle:
            _header, meta = _read_header(handle)
    except OSError as exc:
        raise Invalid(f"cannot read {path.name}: {exc.strerror}") from None
    if isinstance(meta.get("field_keys"), list):
        return set(meta["field_keys"])
    contexts = {(registered.table.name, registered.column)
                for registered in _backed_up_encrypted_columns()}
    found: set[str] = set()
    positions: list[int] = []
    for kind, payload in _snapshot_parts(path, backup_key):
        if kind == "table":
            name, columns = payload
            positions = [index for index, column in enumerate(columns)
                         if (name, column) in contexts]
        elif kind == "rows" and positions:
            for values in payload[1]:
                found.update(values[index].partition(".")[0] for index in positions
                             if isinstance(values[index], str))
    return found


def snapshots_needing_key(directory: Path, backup_key: bytes, key_id: str) -> list[str]:
    """The snapshots of `directory` that hold fields under `key_id` (and those that cannot
    be read to tell: they may), oldest first, by file name."""
    needing = []
    for path in snapshots_in(directory):
        try:
            needed = key_id in snapshot_field_keys(path, backup_key)
        except LifelineError:
            needed = True
        if needed:
            needing.append(path.name)
    return needing


def prune_snapshots(directory: Path, keep: int) -> list[Path]:
    snapshots = snapshots_in(directory)
    doomed = snapshots[:-keep] if keep > 0 else []
    for path in doomed:
        path.unlink()
    return doomed


def elapsed(started: float) -> float:
    return round(time.perf_counter() - started, 3)


# -- drills ---------------------------------------------------------------------------------


@dataclass
class DrillResult:
    ok: bool
    snapshot: str
    seconds: float
    rows: int
    fields: int
    detail: str


def run_drill(*, snapshot: Path, backup_key: bytes, load_field_keys: Callable[[], Keyring],
              head_revision: str | None, scratch: Engine,
              migrate: Callable[[Engine], None]) -> DrillResult:
    """Restore `snapshot` into the empty scratch database, then check counts, checksums and
    that every encrypted field decrypts with the keys read afresh from where they are kept
    (`load_field_keys`: the key file), never with keys this process only holds in memory:
    a drill passes only if a restore elsewhere would."""
    started = time.perf_counter()
    try:
        cipher = FieldCipher(load_field_keys())
        migrate(scratch)
        manifest = restore_snapshot(path=snapshot, backup_key=backup_key, engine=scratch,
                                    head_revision=head_revision)
        fields = decrypt_every_field(scratch, cipher)
    except LifelineError as exc:
        return DrillResult(False, snapshot.name, elapsed(started), 0, 0, exc.message)
    return DrillResult(True, snapshot.name, elapsed(started), manifest.rows, fields,
                       f"{manifest.rows} rows in {len(manifest.tables)} tables match their "
                       f"checksums; {fields} encrypted fields decrypt")


def drill_latest(*, directory: Path, backup_key: bytes, load_field_keys: Callable[[], Keyring],
                 engine: Engine, database_url: str | None = None) -> DrillResult:
    """Drill the newest snapshot of `directory` and record the result in `engine`'s
    database (the CLI and the scheduled job both call this)."""
    return drill_snapshot(snapshot=latest_snapshot(directory), backup_key=backup_key,
                          load_field_keys=load_field_keys, engine=engine,
                          database_url=database_url)


def drill_snapshot(*, snapshot: Path, backup_key: bytes, load_field_keys: Callable[[], Keyring],
                   engine: Engine, database_url: str | None = None,
                   actor: Actor | None = None) -> DrillResult:
    """Drill `snapshot` in a scratch database (a temporary SQLite file unless
    `database_url` is given) and record the result, and who asked, in `engine`'s database."""
    with tempfile.TemporaryDirectory(prefix="lifeline-drill-") as scratch_dir:
        scratch = make_engine(database_url or f"sqlite:///{scratch_dir}/drill.db")
        try:
            result = run_drill(snapshot=snapshot, backup_key=backup_key,
                               load_field_keys=load_field_keys,
                               head_revision=schema.head_revision(), scratch=scratch,
                               migrate=schema.upgrade_database)
        finally:
            scratch.dispose()
    with session_scope(engine) as session:
        record_drill(session, result)
        audit.record(session, actor or Actor.system("drill"), "backup.drilled",
                     snapshot=result.snapshot, ok=result.ok, rows=result.rows,
                     seconds=result.seconds)
    return result


def record_drill(session, result: DrillResult) -> BackupDrill:
    drill = BackupDrill(at=utcnow(), snapshot=result.snapshot, ok=result.ok,
                        seconds=result.seconds, rows=result.rows, detail=result.detail[:2000])
    session.add(drill)
    return drill


def last_good_drill(session) -> BackupDrill | None:
    query = orm_select(BackupDrill).where(col(BackupDrill.ok).is_(True)).order_by(
        col(BackupDrill.at).desc()).limit(1)
    return session.exec(query).first()


def drill_health(session, max_age_hours: float) -> dict:
    """For /healthz: when the last good drill ran, and whether that is recent enough."""
    drill = last_good_drill(session)
    if drill is None:
        return {"ok": False, "last_good_drill": None, "age_hours": None}
    age = (utcnow() - drill.at).total_seconds() / 3600
    return {"ok": age <= max_age_hours, "last_good_drill": drill.at.isoformat(),
            "snapshot": drill.snapshot, "age_hours": round(age, 2)}

"""Restoring a snapshot into an empty, migrated database, then checking it row for row.

Restore loads with COPY (PostgreSQL) or executemany (SQLite, into a rollback journal, then
back to WAL) in one transaction, rebuilds the secondary indexes (and PostgreSQL's foreign
keys) it set aside, commits, then reads the database again and compares every table with
the manifest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from psycopg import sql
from sqlalchemy import Integer, Table, func, insert, literal_column, select, text
from sqlalchemy.engine import Connection, Engine

from contacts.backup import canonical, sealed, snapshot
from contacts.backup.canonical import BATCH_ROWS, Manifest, SnapshotRefused
from contacts.core.db import is_postgresql

log = logging.getLogger(__name__)

RESTORE_CACHE_KIB = 256 * 1024  # SQLite's page cache while it restores


class _SqliteWriter:
    """Plain executemany of rows in SQLite's stored form, in the caller's transaction."""

    def __init__(self, connection: Connection, table: Table, kinds: list[str]):
        # Numbered parameters, so that a time's parameter can appear in its SQL conversion.
        values = {}
        for number, (column, kind) in enumerate(zip(table.columns, kinds, strict=True), 1):
            value = literal_column(f"?{number}")
            values[column.name] = canonical.sqlite_time_write(value) if kind == "time" else value
        self.sql = str(insert(table).values(values).inline().compile(
            dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
        self.width = len(kinds)
        self.converters = [(index, canonical.SQLITE_WRITE[kind])
                           for index, kind in enumerate(kinds) if kind in canonical.SQLITE_WRITE]
        raw = connection.connection.driver_connection
        canonical.sqlite_functions(raw)
        self.cursor = raw.cursor()

    def write(self, rows: list) -> None:
        self.cursor.executemany(self.sql, canonical.convert_rows(rows, self.width, self.converters))

    def close(self, failed: bool = False) -> None:
        self.cursor.close()


class _CopyWriter:
    """COPY ... FROM STDIN into PostgreSQL, in the caller's transaction."""

    def __init__(self, connection: Connection, table: Table, kinds: list[str]):
        self.width = len(kinds)
        self.converters = [(index, canonical.POSTGRESQL_WRITE[kind])
                           for index, kind in enumerate(kinds)
                           if kind in canonical.POSTGRESQL_WRITE]
        self.cursor = connection.connection.driver_connection.cursor()
        self.copying = self.cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table.name),
            sql.SQL(", ").join(sql.Identifier(column.name) for column in table.columns)))
        self.copy = self.copying.__enter__()

    def write(self, rows: list) -> None:
        write_row = self.copy.write_row
        for row in canonical.convert_rows(rows, self.width, self.converters):
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
        self.decoders = canonical.decoders(table)

    def write(self, rows: list) -> None:
        self.connection.execute(insert(self.table), [
            {name: decode(value) for name, decode, value in zip(self.names, self.decoders, row,
                                                                strict=True)}
            for row in rows])

    def close(self, failed: bool = False) -> None:
        pass


def _writer(connection: Connection, table: Table):
    kinds = [canonical.column_kind(column) for column in table.columns]
    if "other" in kinds:
        return _SqlalchemyWriter(connection, table, kinds)
    if connection.dialect.name == "postgresql":
        return _CopyWriter(connection, table, kinds)
    return _SqliteWriter(connection, table, kinds)


def restore_snapshot(*, path: Path, backup_key: bytes, engine: Engine, head_revision: str | None,
                     progress: Callable[[int], None] | None = None,
                     batch: int = BATCH_ROWS) -> Manifest:
    """Fill an empty, migrated database from a snapshot, then check it row for row."""
    tables = {table.name: table for table in snapshot.backed_up_tables()}
    with engine.connect() as connection:
        for table in tables.values():
            if connection.execute(select(func.count()).select_from(table)).scalar_one():
                raise SnapshotRefused(f"the target database is not empty (table {table.name} "
                                      "has rows): restore only into an empty database")
    manifest = None
    with (_rollback_journal(engine), engine.begin() as connection,
          canonical.driver_errors(connection), _restore_settings(connection)):
        # Secondary indexes and foreign keys are set aside while rows load and rebuilt after
        # (one sort per index, one join per key, all checked), in the same transaction.
        rebuild = _set_aside_indexes_and_keys(connection, list(tables))
        writer = None
        try:
            for kind, payload in sealed.snapshot_parts(path, backup_key):
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


def check_database(engine: Engine, manifest: Manifest) -> None:
    actual = snapshot.database_checksums(engine)
    for name, expected in manifest.tables.items():
        if actual.get(name) != expected:
            got = actual.get(name, {}).get("rows")
            raise SnapshotRefused(f"after restore, table {name} differs from the snapshot "
                                  f"({got} rows, {expected['rows']} expected)")

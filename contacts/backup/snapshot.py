"""Taking a snapshot: every table (but the few that only make sense in the running process)
read in one consistent transaction, sealed into a file of the backup folder; the folder's
snapshots (newest, by name, pruned) and the field keys a snapshot needs.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Table, func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from contacts.backup import canonical, sealed
from contacts.backup.canonical import Manifest
from contacts.core.crypto import ENCRYPTED_COLUMNS
from contacts.core.db import is_postgresql, utcnow
from contacts.core.errors import Invalid, LifelineError, NotFound

SUFFIX = ".llbackup"
# What create_snapshot names a file: a plain name, never a path.
SNAPSHOT_NAME = re.compile(r"lifeline-[0-9A-Za-z_-]+" + re.escape(SUFFIX))
# Rows that only make sense in the running process are not backed up.
SKIPPED_TABLES = {"scheduler_heartbeat", "backup_drill"}


def backed_up_tables() -> list[Table]:
    return [table for table in SQLModel.metadata.sorted_tables
            if table.name not in SKIPPED_TABLES]


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
            header = json.dumps({"format": sealed.FORMAT, "created_at": now.isoformat(),
                                 "revision": revision,
                                 "field_keys": _field_key_ids(connection)}).encode()
            sealed.write_header(handle, header)
            sealer = sealed.Sealer(backup_key, handle, header)
            for table in backed_up_tables():
                sealer.write(canonical.line(["#table", table.name,
                                             [c.name for c in table.columns]]))
                manifest.tables[table.name] = canonical.table_checksums(
                    canonical.table_blocks(connection, table), sealer.write, progress)
            sealer.write(canonical.line(["#manifest", manifest.__dict__]))
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


def database_checksums(engine: Engine) -> dict[str, dict]:
    """Row counts and checksums of the canonical lines of every backed-up table, read afresh
    from the database (what a snapshot's manifest must match)."""
    with _consistent_read(engine) as connection:
        return {table.name: canonical.table_checksums(
                    canonical.table_blocks(connection, table))
                for table in backed_up_tables()}


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
            _header, meta = sealed.read_header(handle)
    except OSError as exc:
        raise Invalid(f"cannot read {path.name}: {exc.strerror}") from None
    if isinstance(meta.get("field_keys"), list):
        return set(meta["field_keys"])
    contexts = {(registered.table.name, registered.column)
                for registered in _backed_up_encrypted_columns()}
    found: set[str] = set()
    positions: list[int] = []
    for kind, payload in sealed.snapshot_parts(path, backup_key):
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

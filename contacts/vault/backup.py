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
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import DateTime, Integer, Table, func, insert, select, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel, col
from sqlmodel import select as orm_select

from contacts import audit, schema
from contacts.audit import Actor
from contacts.crypto import ENCRYPTED_COLUMNS, FieldCipher
from contacts.db import UTCDateTime, is_postgresql, make_engine, session_scope, utcnow
from contacts.errors import Invalid, LifelineError
from contacts.vault.models import BackupDrill

MAGIC = b"LIFELINE-BACKUP\n"
FORMAT = 1
CHUNK_BYTES = 1 << 20
SUFFIX = ".llbackup"
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


def _encode(value):
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def _decoders(table: Table) -> list[Callable]:
    def as_time(value):
        return None if value is None else datetime.fromisoformat(value)

    def same(value):
        return value

    return [as_time if isinstance(column.type, (DateTime, UTCDateTime)) else same
            for column in table.columns]


def _ordered_rows(connection: Connection, table: Table, batch: int = 5000) -> Iterator[tuple]:
    query = select(*table.columns).order_by(*table.primary_key.columns)
    result = connection.execution_options(stream_results=True, yield_per=batch).execute(query)
    for row in result:
        yield tuple(_encode(value) for value in row)


def _line(values: tuple) -> bytes:
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


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
        while len(self.buffer) >= CHUNK_BYTES:
            self._seal(bytes(self.buffer[:CHUNK_BYTES]), final=False)
            del self.buffer[:CHUNK_BYTES]

    def close(self) -> None:
        self._seal(bytes(self.buffer), final=True)

    def _seal(self, chunk: bytes, *, final: bool) -> None:
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
    name = f"lifeline-{now:%Y%m%dT%H%M%S}-{os.urandom(3).hex()}{SUFFIX}"
    header = json.dumps({"format": FORMAT, "created_at": now.isoformat(),
                         "revision": revision}).encode()
    manifest = Manifest(revision=revision, created_at=now.isoformat())
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".partial-")
    try:
        with os.fdopen(descriptor, "wb") as handle, _consistent_read(engine) as connection:
            handle.write(MAGIC + struct.pack(">I", len(header)) + header)
            sealer = _Sealer(backup_key, handle, header)
            for table in backed_up_tables():
                sealer.write(_line(["#table", table.name, [c.name for c in table.columns]]))
                digest, rows = hashlib.sha256(), 0
                for values in _ordered_rows(connection, table):
                    line = _line(values)
                    digest.update(line)
                    sealer.write(line)
                    rows += 1
                    if progress and rows % 1000 == 0:
                        progress(1000)
                if progress:
                    progress(rows % 1000)
                manifest.tables[table.name] = {"rows": rows, "sha256": digest.hexdigest()}
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
            self.connection.execute(text("SELECT 1 FROM sqlite_master LIMIT 1"))
        return self.connection

    def __exit__(self, *exc) -> None:
        self.transaction.rollback()
        self.connection.close()


def count_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return sum(connection.execute(select(func.count()).select_from(table)).scalar_one()
                   for table in backed_up_tables())


# -- read and restore -------------------------------------------------------------------------


def read_snapshot(path: Path, backup_key: bytes) -> Iterator[tuple[str, object]]:
    """Yield ("table", (name, columns)), ("row", values) and finally ("manifest", dict)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise Invalid(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        header, _meta = _read_header(handle)
        pending = b""
        manifest_seen = False
        for chunk in _open_chunks(backup_key, handle, header):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                item = json.loads(line)
                if isinstance(item, list) and item and item[0] == "#table":
                    yield "table", (item[1], item[2])
                elif isinstance(item, list) and item and item[0] == "#manifest":
                    manifest_seen = True
                    yield "manifest", item[1]
                else:
                    yield "row", item
        if pending or not manifest_seen:
            raise SnapshotRefused("the snapshot ends without its manifest")


def verify_snapshot(path: Path, backup_key: bytes) -> Manifest:
    """Decrypt and authenticate the whole file and check it against its own manifest."""
    counted: dict[str, dict] = {}
    current = None
    digest = None
    manifest = None
    for kind, payload in read_snapshot(path, backup_key):
        if kind == "table":
            current, digest = payload[0], hashlib.sha256()
            counted[current] = {"rows": 0}
        elif kind == "row":
            digest.update(_line(tuple(payload)))
            counted[current]["rows"] += 1
            counted[current]["sha256"] = digest.hexdigest()
        else:
            manifest = Manifest(**payload)
    for name, figures in counted.items():
        figures.setdefault("sha256", hashlib.sha256().hexdigest())
        if manifest.tables.get(name) != figures:
            raise SnapshotRefused(f"table {name} does not match the snapshot's manifest")
    return manifest


def restore_snapshot(*, path: Path, backup_key: bytes, engine: Engine, head_revision: str | None,
                     progress: Callable[[int], None] | None = None,
                     batch: int = 5000) -> Manifest:
    """Fill an empty, migrated database from a snapshot, then check it row for row."""
    tables = {table.name: table for table in backed_up_tables()}
    with engine.connect() as connection:
        for table in tables.values():
            if connection.execute(select(func.count()).select_from(table)).scalar_one():
                raise SnapshotRefused(f"the target database is not empty (table {table.name} "
                                      "has rows): restore only into an empty database")
    manifest = None
    with engine.begin() as connection:
        table, decoders, rows = None, [], []

        def flush():
            if rows:
                names = [column.name for column in table.columns]
                connection.execute(insert(table), [
                    {name: decode(value) for name, decode, value in zip(names, decoders, row,
                                                                        strict=True)}
                    for row in rows])
                if progress:
                    progress(len(rows))
                rows.clear()

        for kind, payload in read_snapshot(path, backup_key):
            if kind == "table":
                flush()
                name, columns = payload
                table = tables.get(name)
                if table is None or [c.name for c in table.columns] != columns:
                    raise SnapshotRefused(f"table {name} in the snapshot does not match this "
                                          "version of Lifeline's schema")
                decoders = _decoders(table)
            elif kind == "row":
                rows.append(payload)
                if len(rows) >= batch:
                    flush()
            else:
                flush()
                manifest = Manifest(**payload)
        if manifest.revision != head_revision:
            raise SnapshotRefused(f"the snapshot was made at schema revision "
                                  f"{manifest.revision}; this Lifeline is at {head_revision}")
        if is_postgresql(engine):
            _reset_sequences(connection, tables.values())
    check_database(engine, manifest)
    return manifest


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
    figures = {}
    with _consistent_read(engine) as connection:
        for table in backed_up_tables():
            digest, rows = hashlib.sha256(), 0
            for values in _ordered_rows(connection, table):
                digest.update(_line(values))
                rows += 1
            figures[table.name] = {"rows": rows, "sha256": digest.hexdigest()}
    return figures


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


def latest_snapshot(directory: Path) -> Path:
    snapshots = sorted(directory.glob(f"lifeline-*{SUFFIX}"))
    if not snapshots:
        raise Invalid(f"no snapshot in {directory}")
    return snapshots[-1]


def prune_snapshots(directory: Path, keep: int) -> list[Path]:
    snapshots = sorted(directory.glob(f"lifeline-*{SUFFIX}"))
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


def run_drill(*, snapshot: Path, backup_key: bytes, cipher: FieldCipher,
              head_revision: str | None, scratch: Engine,
              migrate: Callable[[Engine], None]) -> DrillResult:
    """Restore `snapshot` into the empty scratch database, then check counts, checksums and
    that every encrypted field decrypts with the current keys."""
    started = time.perf_counter()
    try:
        migrate(scratch)
        manifest = restore_snapshot(path=snapshot, backup_key=backup_key, engine=scratch,
                                    head_revision=head_revision)
        fields = decrypt_every_field(scratch, cipher)
    except LifelineError as exc:
        return DrillResult(False, snapshot.name, elapsed(started), 0, 0, exc.message)
    return DrillResult(True, snapshot.name, elapsed(started), manifest.rows, fields,
                       f"{manifest.rows} rows in {len(manifest.tables)} tables match their "
                       f"checksums; {fields} encrypted fields decrypt")


def drill_latest(*, directory: Path, backup_key: bytes, cipher: FieldCipher, engine: Engine,
                 database_url: str | None = None) -> DrillResult:
    """Drill the newest snapshot of `directory` and record the result in `engine`'s
    database (the CLI and the scheduled job both call this)."""
    snapshot = latest_snapshot(directory)
    with tempfile.TemporaryDirectory(prefix="lifeline-drill-") as scratch_dir:
        scratch = make_engine(database_url or f"sqlite:///{scratch_dir}/drill.db")
        try:
            result = run_drill(snapshot=snapshot, backup_key=backup_key, cipher=cipher,
                               head_revision=schema.head_revision(), scratch=scratch,
                               migrate=schema.upgrade_database)
        finally:
            scratch.dispose()
    with session_scope(engine) as session:
        record_drill(session, result)
        audit.record(session, Actor.system("drill"), "backup.drilled", snapshot=result.snapshot,
                     ok=result.ok, rows=result.rows, seconds=result.seconds)
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

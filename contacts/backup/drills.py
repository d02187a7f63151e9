"""Backup drills: a snapshot restored into a scratch database and checked (counts, checksums,
every encrypted field decrypting with the keys read afresh), timed, and recorded; the last
good drill is what /healthz reports.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from contacts.backup.models import BackupDrill
from contacts.backup.restore import restore_snapshot
from contacts.backup.snapshot import latest_snapshot
from contacts.core import audit, schema
from contacts.core.audit import Actor
from contacts.core.crypto import ENCRYPTED_COLUMNS, FieldCipher, Keyring
from contacts.core.db import make_engine, session_scope, utcnow
from contacts.core.errors import LifelineError


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


def elapsed(started: float) -> float:
    return round(time.perf_counter() - started, 3)


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


def recent_drills(*, session: Session, limit: int = 20) -> list[BackupDrill]:
    return list(session.exec(orm_select(BackupDrill).order_by(col(BackupDrill.at).desc())
                             .limit(limit)))

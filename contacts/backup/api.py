"""The backups' JSON API: take a snapshot, and drill one (the incident drill's backup and
restore steps)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from flask import Blueprint, g
from pydantic import BaseModel, ConfigDict, Field

from contacts.backup import drills, snapshot
from contacts.core import audit, schema
from contacts.core.api import API_PREFIX, operation
from contacts.core.db import request_session
from contacts.core.services import services

bp = Blueprint("backup_api", __name__, url_prefix=API_PREFIX)


def _backup_dir() -> Path:
    return Path(services().settings.backup_dir)


def _backup_key() -> bytes:
    return services().settings.secrets.backup_key


class SnapshotTaken(BaseModel):
    name: str = Field(description="The snapshot's file name in the backup folder (never a "
                                  "path); give it to POST /api/v1/backups/drill.")
    rows: int = Field(description="Rows in the snapshot, every table together.")
    tables: int = Field(description="Tables in the snapshot.")
    created_at: datetime = Field(description="The single point in time the snapshot holds.")
    seconds: float = Field(description="How long writing it took.")


@bp.post("/backups")
@operation(scope="backups:write", response=SnapshotTaken, status=201, tags=("backups",))
def create_backup():
    """Write an encrypted, authenticated snapshot of the whole database to the backup folder,
    as `flask backup create` does. Runs before the answer: seconds for thousands of rows."""
    engine = services().engine
    started = time.perf_counter()
    path, manifest = snapshot.create_snapshot(engine=engine, backup_key=_backup_key(),
                                              directory=_backup_dir(),
                                              revision=schema.database_revision(engine))
    audit.record(request_session(), g.actor, "backup.created", snapshot=path.name,
                 rows=manifest.rows)
    return SnapshotTaken(name=path.name, rows=manifest.rows, tables=len(manifest.tables),
                         created_at=datetime.fromisoformat(manifest.created_at),
                         seconds=drills.elapsed(started)), 201


class DrillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot: str | None = Field(default=None, max_length=255,
                                 description="A snapshot's file name, as POST /api/v1/backups "
                                             "answers it; the newest snapshot when left out.")


class DrillOutcome(BaseModel):
    snapshot: str = Field(description="The file name of the snapshot drilled.")
    ok: bool = Field(description="Whether it restored and every check passed; a failed drill "
                                 "is answered 200 too, with ok false and the reason in detail.")
    seconds: float
    rows: int = Field(description="Rows restored and checked against the manifest.")
    fields: int = Field(description="Encrypted fields that decrypt with the current keys.")
    detail: str


@bp.post("/backups/drill")
@operation(scope="backups:write", response=DrillOutcome, body=DrillRequest, errors=(404,),
           tags=("backups",))
def drill_backup(json: DrillRequest):
    """Restore a snapshot into a scratch database and check counts, checksums and that every
    encrypted field decrypts, as `flask backup drill` does; the result is recorded, so
    /healthz reports it. A name that is not a snapshot's plain file name is refused (400)."""
    named = snapshot.snapshot_named(_backup_dir(), json.snapshot)
    result = drills.drill_snapshot(snapshot=named, backup_key=_backup_key(),
                                   load_field_keys=services().field_keys_source,
                                   engine=services().engine,
                                   actor=g.actor)
    return DrillOutcome(snapshot=result.snapshot, ok=result.ok, seconds=result.seconds,
                        rows=result.rows, fields=result.fields, detail=result.detail)

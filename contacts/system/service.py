"""Health checks; database migrations come from contacts.core.schema."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from contacts.core.db import utcnow
from contacts.core.scheduler import last_heartbeat
from contacts.core.schema import head_revision


@dataclass(frozen=True)
class Health:
    ok: bool
    report: dict


HealthProbe = Callable[[Session], dict]


def check_health(*, engine: Engine, scheduler_state: str, heartbeat_seconds: int,
                 probes: dict[str, HealthProbe] | None = None) -> Health:
    """Database and scheduler state, plus the probes other areas register (each answers a
    dict with "ok"). Unavailable (503) only when the database is; a failing probe makes the
    service "degraded" but keeps it serving."""
    started = time.perf_counter()
    database: dict = {"backend": engine.dialect.name}
    beat_at: datetime | None = None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            database["revision"] = MigrationContext.configure(connection).get_current_revision()
        with Session(engine) as session:
            beat = last_heartbeat(session) if database["revision"] else None
            beat_at = beat.beat_at if beat else None
        database["ok"] = True
        database["migrated"] = database["revision"] == head_revision(engine)
    except SQLAlchemyError as exc:
        database.update(ok=False, error=type(exc).__name__)
    database["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    scheduler = {"state": scheduler_state,
                 "last_heartbeat": beat_at.isoformat() if beat_at else None}
    if beat_at is not None:
        age = (utcnow() - beat_at).total_seconds()
        scheduler["heartbeat_age_seconds"] = round(age, 1)
        scheduler["heartbeat_fresh"] = age <= 3 * heartbeat_seconds
    ok = database["ok"] and database.get("migrated", False)
    report = {"status": "ok" if ok else "unavailable", "database": database,
              "scheduler": scheduler}
    if ok:
        with Session(engine) as session:
            for name, probe in (probes or {}).items():
                report[name] = probe(session)
                if not report[name].get("ok", True):
                    report["status"] = "degraded"
    return Health(ok=ok, report=report)

"""Health checks and database migrations."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import datetime

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from contacts.db import utcnow
from contacts.scheduler import last_heartbeat
from contacts.settings import PROJECT_ROOT


def _script_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    return config


def alembic_config(engine: Engine) -> Config:
    config = _script_config()
    config.attributes["engine"] = engine
    return config


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade_database(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def database_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@functools.cache
def head_revision(_engine: Engine | None = None) -> str | None:
    """The latest migration shipped with this code (read once per process)."""
    return ScriptDirectory.from_config(_script_config()).get_current_head()


@dataclass(frozen=True)
class Health:
    ok: bool
    report: dict


def check_health(*, engine: Engine, scheduler_state: str, heartbeat_seconds: int) -> Health:
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
    return Health(ok=ok, report={"status": "ok" if ok else "unavailable", "database": database,
                                 "scheduler": scheduler})

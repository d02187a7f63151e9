"""The in-process scheduler: APScheduler with its jobs kept in the database.

Scheduled jobs survive a restart (SQLAlchemy job store). On PostgreSQL, several processes may
run the scheduler but only the one holding an advisory lock is active; the others stand by
and take over when it goes. The active scheduler writes a heartbeat that /healthz reads.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Column, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Field, Session, SQLModel

from contacts.db import UTCDateTime, is_postgresql, session_scope, utcnow

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every Lifeline process.
ADVISORY_LOCK_KEY = 0x4C49_4645  # "LIFE"
STANDBY_RETRY_SECONDS = 15


class SchedulerHeartbeat(SQLModel, table=True):
    __tablename__ = "scheduler_heartbeat"

    name: str = Field(primary_key=True, max_length=32)
    holder: str = Field(max_length=128)
    beat_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


@dataclass(frozen=True)
class ScheduledJob:
    id: str
    func: Callable[[], None]  # module-level, so the job store can find it after a restart
    seconds: int


_engine: Engine | None = None


def current_engine() -> Engine:
    """The engine jobs run against (jobs are stored by reference and take no arguments)."""
    if _engine is None:
        raise RuntimeError("the scheduler has not been started in this process")
    return _engine


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def record_heartbeat() -> None:
    with session_scope(current_engine()) as session:
        beat = session.get(SchedulerHeartbeat, "scheduler")
        if beat is None:
            beat = SchedulerHeartbeat(name="scheduler", holder=holder_name(), beat_at=utcnow())
        beat.holder, beat.beat_at = holder_name(), utcnow()
        session.add(beat)


def last_heartbeat(session: Session) -> SchedulerHeartbeat | None:
    return session.get(SchedulerHeartbeat, "scheduler")


class SchedulerRunner:
    def __init__(self, engine: Engine, jobs: list[ScheduledJob]):
        self.engine = engine
        self.jobs = jobs
        self.state = "stopped"
        self._scheduler: BackgroundScheduler | None = None
        self._lock_connection: Connection | None = None
        self._stop = threading.Event()
        self._standby: threading.Thread | None = None

    def start(self) -> None:
        global _engine
        _engine = self.engine
        if self._try_become_leader():
            self._start_scheduler()
            return
        self.state = "standby"
        log.info("another process holds the scheduler lock; this one stands by")
        self._standby = threading.Thread(target=self._wait_for_leadership, daemon=True,
                                         name="lifeline-scheduler-standby")
        self._standby.start()

    def _try_become_leader(self) -> bool:
        if not is_postgresql(self.engine):
            return True  # SQLite: one process by design
        connection = self.engine.connect()
        acquired = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}).scalar()
        connection.commit()
        if acquired:
            self._lock_connection = connection  # the lock lives as long as this connection
        else:
            connection.close()
        return bool(acquired)

    def _wait_for_leadership(self) -> None:
        while not self._stop.wait(STANDBY_RETRY_SECONDS):
            if self._try_become_leader():
                log.info("scheduler lock acquired; this process now runs the scheduler")
                self._start_scheduler()
                return

    def _start_scheduler(self) -> None:
        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.engine)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
            timezone=UTC,
        )
        scheduler.start()
        for job in self.jobs:
            scheduler.add_job(job.func, "interval", seconds=job.seconds, id=job.id,
                              replace_existing=True, next_run_time=datetime.now(UTC))
        self._scheduler = scheduler
        self.state = "running"

    def shutdown(self) -> None:
        self._stop.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._lock_connection is not None:
            # Unlock and drop the connection: a pooled connection would keep holding the lock.
            self._lock_connection.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
            self._lock_connection.invalidate()
            self._lock_connection.close()
            self._lock_connection = None
        self.state = "stopped"

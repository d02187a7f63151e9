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
from datetime import UTC, datetime, timedelta

from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Column, create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool
from sqlmodel import Field, Session, SQLModel

from contacts.core.db import UTCDateTime, is_postgresql, session_scope, utcnow

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every Lifeline process.
ADVISORY_LOCK_KEY = 0x4C49_4645  # "LIFE"
STANDBY_RETRY_SECONDS = 15


class SchedulerHeartbeat(SQLModel, table=True):
    __tablename__ = "scheduler_heartbeat"

    name: str = Field(primary_key=True, max_length=32)
    holder: str = Field(max_length=128)
    beat_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class PatientJobStore(SQLAlchemyJobStore):
    """APScheduler's database job store, patient with a busy database. The scheduler's own
    thread writes each job's next run time; a write that raises there (SQLite still locked
    after its busy timeout) ends that thread, and with it every job. Here such a write is
    retried, then logged and left: the job, still due in the store, runs again soon."""

    ATTEMPTS = 3

    def update_job(self, job) -> None:
        self._patiently("update", job.id, lambda: super(PatientJobStore, self).update_job(job))

    def _patiently(self, action: str, job_id: str, write: Callable[[], None]) -> None:
        for attempt in range(1, self.ATTEMPTS + 1):
            try:
                write()
                return
            except OperationalError as exc:
                if attempt == self.ATTEMPTS:
                    log.warning("could not %s scheduled job %s after %d attempts (%s); it "
                                "stays due and runs again", action, job_id, attempt,
                                str(exc.orig).strip())


@dataclass(frozen=True)
class ScheduledJob:
    id: str
    func: Callable[[], None]  # module-level, so the job store can find it after a restart
    seconds: int
    first_run_after: int = 0  # seconds after start-up; 0 runs it at once


_engine: Engine | None = None
_app = None
_running: BackgroundScheduler | None = None  # this process's scheduler, while it leads


def run_soon(job_id: str) -> None:
    """Bring a job's next run forward to now: work another job just made for it (the email
    drain after a fan-out's first batch) need not wait for its interval. A no-op in a
    process that runs no scheduler; a job running now runs again once it ends."""
    scheduler = _running
    if scheduler is None:
        return
    try:
        scheduler.modify_job(job_id, next_run_time=datetime.now(UTC))
    except JobLookupError:
        log.debug("run_soon: no job %s", job_id)


def current_engine() -> Engine:
    """The engine jobs run against (jobs are stored by reference and take no arguments)."""
    if _engine is None:
        raise RuntimeError("the scheduler has not been started in this process")
    return _engine


def current_app():
    """The Flask app whose settings and keys jobs use."""
    if _app is None:
        raise RuntimeError("the scheduler was started without an app")
    return _app


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
    """Runs the scheduler while this process holds the lock; stands by otherwise.

    The lock lives on a connection of its own (outside the pool). A watchdog checks that
    connection: if it is lost, so is the lock, and the scheduler stops and stands by again,
    so two schedulers never run at once.
    """

    def __init__(self, engine: Engine, jobs: list[ScheduledJob],
                 check_seconds: float = STANDBY_RETRY_SECONDS, app=None):
        self.engine = engine
        self.app = app
        self.jobs = jobs
        self.state = "stopped"
        self.check_seconds = check_seconds
        self._scheduler: BackgroundScheduler | None = None
        self._lock_engine: Engine | None = None
        self._lock_connection: Connection | None = None
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    def start(self) -> None:
        global _engine, _app
        _engine, _app = self.engine, self.app
        if is_postgresql(self.engine):
            self._lock_engine = create_engine(self.engine.url, poolclass=NullPool)
        self._step()
        if self._lock_engine is not None:
            self._watch = threading.Thread(target=self._watch_leadership, daemon=True,
                                           name="lifeline-scheduler-watch")
            self._watch.start()

    def _step(self) -> None:
        """Become leader if the lock is free; stop being leader if the lock was lost."""
        if self._scheduler is not None:
            if self._lock_held():
                return
            log.error("scheduler lock lost; stopping the scheduler and standing by")
            self._stop_scheduler()
        if self._try_become_leader():
            self._start_scheduler()
        elif self.state != "standby":
            self.state = "standby"
            log.info("another process holds the scheduler lock; this one stands by")

    def _watch_leadership(self) -> None:
        while not self._stop.wait(self.check_seconds):
            try:
                self._step()
            except Exception:  # a database hiccup must not end the watch
                log.exception("scheduler leadership check failed; will retry")

    def _lock_held(self) -> bool:
        if self._lock_engine is None:
            return True
        try:
            self._lock_connection.execute(text("SELECT 1"))
            return True
        except Exception:
            self._drop_lock_connection()
            return False

    def _try_become_leader(self) -> bool:
        if self._lock_engine is None:
            return True  # SQLite: one process by design
        connection = self._lock_engine.connect()
        try:
            acquired = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}).scalar()
            connection.commit()
        except Exception:
            connection.close()
            raise
        if acquired:
            self._lock_connection = connection  # the lock lives as long as this connection
        else:
            connection.close()
        return bool(acquired)

    def _drop_lock_connection(self) -> None:
        if self._lock_connection is not None:
            try:
                self._lock_connection.close()  # closing the session releases the lock
            except Exception:
                log.warning("closing the scheduler lock connection failed", exc_info=True)
            self._lock_connection = None

    def _stop_scheduler(self) -> None:
        global _running
        if self._scheduler is not None:
            if _running is self._scheduler:
                _running = None
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def _start_scheduler(self) -> None:
        scheduler = BackgroundScheduler(
            jobstores={"default": PatientJobStore(engine=self.engine)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
            timezone=UTC,
        )
        scheduler.start()
        for job in self.jobs:
            first = datetime.now(UTC) + timedelta(seconds=job.first_run_after)
            scheduler.add_job(job.func, "interval", seconds=job.seconds, id=job.id,
                              replace_existing=True, next_run_time=first)
        self._scheduler = scheduler
        self.state = "running"
        global _running
        _running = scheduler

    def shutdown(self) -> None:
        self._stop.set()
        self._stop_scheduler()
        self._drop_lock_connection()
        if self._lock_engine is not None:
            self._lock_engine.dispose()
        self.state = "stopped"

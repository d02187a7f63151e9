"""The scheduler's job store on a busy SQLite database: a write that stays locked is logged,
never raised into the scheduler's thread (where it would stop every job)."""

import logging
import sqlite3

from apscheduler.schedulers.background import BackgroundScheduler

from contacts.core.db import make_engine
from contacts.core.scheduler import PatientJobStore


def tick() -> None:
    """A module-level job, as the job store needs."""


def test_a_locked_database_does_not_stop_the_scheduler(tmp_path, caplog):
    path = tmp_path / "scheduler.db"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=50)
    store = PatientJobStore(engine=engine)
    scheduler = BackgroundScheduler(jobstores={"default": store})
    scheduler.start(paused=True)
    job = scheduler.add_job(tick, "interval", seconds=60, id="tick")
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
    try:
        with caplog.at_level(logging.WARNING, logger="contacts.core.scheduler"):
            store.update_job(job)  # raised OperationalError before: the thread died
    finally:
        blocker.rollback()
        blocker.close()
    assert "could not update scheduled job tick after 3 attempts" in caplog.text
    assert "database is locked" in caplog.text

    store.update_job(job)  # once the database is free, the write goes through
    assert store.lookup_job("tick") is not None
    scheduler.shutdown(wait=False)
    engine.dispose()

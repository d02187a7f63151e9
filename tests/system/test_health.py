"""/healthz and the scheduler: database state, heartbeat, one active scheduler at a time."""

import time

import pytest
from sqlalchemy import text

from contacts.core.db import make_engine
from contacts.core.scheduler import ScheduledJob, SchedulerRunner, record_heartbeat
from contacts.core.services import services


def test_health_reports_the_database_ok(client, backend):
    response = client.get("/healthz")
    assert response.status_code == 200
    report = response.get_json()
    # Serving, but degraded until a backup drill has passed.
    assert report["status"] == "degraded"
    assert report["backups"] == {"ok": False, "last_good_drill": None, "age_hours": None}
    assert report["database"]["ok"] is True and report["database"]["migrated"] is True
    assert report["database"]["backend"] == backend
    assert report["scheduler"]["state"] == "not running in this process"


def test_health_is_unavailable_when_the_database_is_not_migrated(make_app, tmp_path):
    client = make_app(database_url=f"sqlite:///{tmp_path}/empty.db").test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"]["migrated"] is False


def test_health_is_unavailable_when_the_database_is_unreachable(make_app):
    client = make_app(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none").test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] == {
        "backend": "postgresql", "ok": False, "error": "OperationalError",
        "latency_ms": response.get_json()["database"]["latency_ms"]}


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_the_running_scheduler_beats_and_health_shows_it(app, client, engine):
    runner = SchedulerRunner(engine, services(app).jobs, app=app)
    runner.start()
    services(app).scheduler = runner
    try:
        assert wait_for(lambda: client.get("/healthz").get_json()["scheduler"]["last_heartbeat"])
        scheduler = client.get("/healthz").get_json()["scheduler"]
        assert scheduler["state"] == "running" and scheduler["heartbeat_fresh"] is True
    finally:
        runner.shutdown()


# The advisory lock is PostgreSQL's; on SQLite one process serves by design.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_only_one_process_runs_the_scheduler_and_a_standby_takes_over(database_url):
    jobs = [ScheduledJob("scheduler-heartbeat", record_heartbeat, 30)]
    engines = [make_engine(database_url) for _ in range(3)]
    first, second = (SchedulerRunner(engine, jobs, check_seconds=0.2) for engine in engines[:2])
    try:
        first.start()
        second.start()
        assert (first.state, second.state) == ("running", "standby")
        first.shutdown()
        assert wait_for(lambda: second.state == "running")

        # The leader's lock connection dies (a network cut, a DBA's kill): it must stop.
        lost = second._lock_connection
        with engines[2].begin() as connection:
            pid = lost.execute(text("SELECT pg_backend_pid()")).scalar()
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # It notices, stops its scheduler, and (the lock being free) takes it again.
        assert wait_for(lambda: second._lock_connection not in (None, lost))
        assert second.state == "running"
        third = SchedulerRunner(engines[2], jobs, check_seconds=0.2)
        third.start()
        assert sorted([second.state, third.state]) == ["running", "standby"]
        third.shutdown()
    finally:
        first.shutdown()
        second.shutdown()
        for engine in engines:
            engine.dispose()

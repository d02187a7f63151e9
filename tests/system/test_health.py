"""/healthz and the scheduler: database state, heartbeat, one active scheduler at a time."""

import time

import pytest

from contacts.db import make_engine
from contacts.jobs import scheduled_jobs
from contacts.scheduler import ScheduledJob, SchedulerRunner, record_heartbeat


def test_health_reports_the_database_ok(client, backend):
    response = client.get("/healthz")
    assert response.status_code == 200
    report = response.get_json()
    assert report["status"] == "ok"
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
    runner = SchedulerRunner(engine, scheduled_jobs(app.extensions["lifeline.settings"]))
    runner.start()
    app.extensions["lifeline.scheduler"] = runner
    try:
        assert wait_for(lambda: client.get("/healthz").get_json()["scheduler"]["last_heartbeat"])
        scheduler = client.get("/healthz").get_json()["scheduler"]
        assert scheduler["state"] == "running" and scheduler["heartbeat_fresh"] is True
    finally:
        runner.shutdown()


# The advisory lock is PostgreSQL's; on SQLite one process serves by design.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_only_one_process_runs_the_scheduler_on_postgresql(database_url):
    jobs = [ScheduledJob("scheduler-heartbeat", record_heartbeat, 30)]
    first_engine, second_engine = make_engine(database_url), make_engine(database_url)
    first, second = SchedulerRunner(first_engine, jobs), SchedulerRunner(second_engine, jobs)
    try:
        first.start()
        second.start()
        assert (first.state, second.state) == ("running", "standby")
        first.shutdown()
        assert second._try_become_leader() is True  # the lock is free once the first is gone
    finally:
        first.shutdown()
        second.shutdown()
        first_engine.dispose()
        second_engine.dispose()

"""A scheduled update goes out before the time it promised (`incidents.cadence_lead_seconds`,
at most half a cadence early): a scheduler run inside that window sends it on time, so the
update before it is not late; a run after the promise is late, and says so."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.services import services
from contacts.incidents import cadence, progress, publishing, records
from contacts.incidents.desk import CommsDesk
from contacts.vault import service as vault_service
from tests.incidents.conftest import complete_draft, publish_queued
from tests.vault.fixtures import make_document

ACTOR = Actor.system("test")
HOUR = timedelta(hours=1)


def _start(app, engine, promise, cadence_hours: float = 1.0) -> tuple[CommsDesk, str]:
    desk = CommsDesk.from_settings(services(app).settings,
                                   services(app).crypto,
                                   Path(app.template_folder))
    vault = vault_service.Vault.from_settings(services(app).settings,
                                              services(app).crypto)
    with session_scope(engine) as session:
        incident = records.create_incident(session=session, actor=ACTOR, title="Deletion",
                                           severity="major", started_at=utcnow(),
                                           now=utcnow())
        progress.add_sites(session=session, desk=desk, actor=ACTOR, incident_id=incident.id,
                           refs=["S00000-0", "S00001-0"], now=utcnow())
        publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                           incident_id=incident.id, now=utcnow(),
                           draft=complete_draft(next_update_at=promise))
        cadence.set_cadence(session=session, actor=ACTOR, incident_id=incident.id,
                            hours=cadence_hours)
        return desk, incident.id


def _run_scheduler(app, engine, desk, at) -> list[int]:
    """What `jobs.send_scheduled_updates` does, at a chosen time."""
    with session_scope(engine) as session:
        published = cadence.publish_due(session=session, desk=desk, now=at)
        cadence.warn_late(session=session, desk=desk, inbox="comms@vendor.example", now=at)
        return [update.number for update in published]


def _late(client, token, incident_id) -> dict[int, bool]:
    answer = client.get(f"/api/v1/incidents/{incident_id}",
                        headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.get_json()
    return {update["number"]: update["late"] for update in answer.get_json()["updates"]}


def test_a_scheduled_update_sent_inside_the_lead_is_on_time_and_one_after_is_late(
        app, client, engine, make_token, sync_document):
    sync_document(make_document(accounts=2, contacts_per_account=1))
    promise = utcnow().replace(microsecond=0) + timedelta(minutes=5)
    desk, incident_id = _start(app, engine, promise)
    reader = make_token("read")

    assert _run_scheduler(app, engine, desk, promise - timedelta(seconds=61)) == []
    assert _run_scheduler(app, engine, desk, promise - timedelta(seconds=30)) == [2]
    assert _run_scheduler(app, engine, desk, promise - timedelta(seconds=10)) == []  # once
    assert _late(client, reader, incident_id) == {1: False, 2: False}
    with session_scope(engine) as session:
        found = records.get_incident(session=session, incident_id=incident_id)
        # The next promise is one cadence after the one kept, not after the early send.
        assert found.next_update_due == promise + HOUR
        assert found.late_warned_for is None  # nobody was warned

    # The scheduler was down: it runs 10 s after the second promise.
    late_run = promise + HOUR + timedelta(seconds=10)
    assert _run_scheduler(app, engine, desk, late_run) == [3]
    assert _late(client, reader, incident_id) == {1: False, 2: True, 3: False}
    with session_scope(engine) as session:
        found = records.get_incident(session=session, incident_id=incident_id)
        assert found.next_update_due == late_run + HOUR  # from now: the promise had passed


def test_the_lead_is_a_setting_and_never_more_than_half_a_cadence(make_app, sync_document):
    sync_document(make_document(accounts=2, contacts_per_account=1))  # the same database
    app = make_app(incidents_cadence_lead_seconds=120)
    engine = services(app).engine
    promise = utcnow().replace(microsecond=0) + timedelta(minutes=5)
    desk, incident_id = _start(app, engine, promise)
    assert _run_scheduler(app, engine, desk, promise - timedelta(seconds=90)) == [2]

    # Every 40 seconds: at most 20 s early, whatever the lead says.
    promise = utcnow().replace(microsecond=0) + timedelta(minutes=5)
    desk, other = _start(app, engine, promise, cadence_hours=40 / 3600)
    assert _run_scheduler(app, engine, desk, promise - timedelta(seconds=25)) == []
    assert _run_scheduler(app, engine, desk, promise - timedelta(seconds=15)) == [2]
    assert _run_scheduler(app, engine, desk, promise + timedelta(seconds=5)) == []
    assert _run_scheduler(app, engine, desk, promise + timedelta(seconds=25)) == [3]
    with session_scope(engine) as session:
        updates = publishing.updates_of(session=session, incident_id=other)
    assert cadence.late_updates(updates, promise + timedelta(seconds=26)) == {
        1: False, 2: False, 3: False}

"""Publishing answers at once; a job queues the audience a batch at a time, and a job that
dies mid-expansion resumes where it stopped: no recipient twice, none skipped. The proof
of who was told what survives the outbox's retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func
from sqlmodel import select

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import ledger, outbox
from contacts.delivery.models import OutboxMessage
from contacts.incidents import fanout, publishing
from contacts.incidents.desk import CommsDesk
from contacts.incidents.models import SUBSCRIBER_EMAIL, Subscriber, UpdateFanout
from contacts.vault.service import Vault
from tests.incidents.conftest import complete_draft

ACTOR = Actor.system("test")
CONTACTS = 75  # the incident fixture: 25 accounts x 3 contacts


def _subscribers(engine, desk, count: int) -> None:
    now = utcnow()
    with session_scope(engine) as session:
        for n in range(count):
            session.add(Subscriber(
                email_encrypted=desk.crypto.cipher.encrypt(f"reader{n}@example.org",
                                                           context=SUBSCRIBER_EMAIL),
                email_index=f"index-{n}", locale="en", created_at=now, confirmed_at=now))


def _publish(engine, desk, incident_id: str) -> str:
    with session_scope(engine) as session:
        return publishing.publish(session=session, desk=desk, actor=ACTOR,
                                  incident_id=incident_id, draft=complete_draft(),
                                  now=utcnow()).id


def _keys(engine) -> list[str]:
    with session_scope(engine) as session:
        return list(session.exec(select(OutboxMessage.key)).all())


def _run(app, clock=utcnow) -> int:
    built = services(app)
    return fanout.run_pending(engine=built.engine, desk=built.get(CommsDesk),
                              vault=built.get(Vault), clock=clock)


def test_publishing_queues_nothing_itself_and_the_job_queues_everyone_once(
        app, client, engine, desk, auth, make_staff, incident):
    _subscribers(engine, desk, 3)
    update_id = _publish(engine, desk, incident)
    assert _keys(engine) == []  # publishing answered before a single row was written
    auth.login(make_staff("comms"))
    page = client.get(f"/console/incidents/{incident}").get_data(as_text=True)
    assert "Queuing recipients: 0 so far" in page

    assert _run(app) == CONTACTS + 3
    assert _run(app) == 0  # finished: nothing twice
    keys = _keys(engine)
    assert len(keys) == len(set(keys)) == CONTACTS + 3
    assert sum(key.endswith(tuple(f":public:{n}" for n in range(1, 4))) for key in keys) == 3
    with session_scope(engine) as session:
        state = session.get(UpdateFanout, update_id)
        assert (state.phase, state.queued, state.audience) == ("done", CONTACTS + 3,
                                                               CONTACTS + 3)
        counts = ledger.counts_about(session=session, about_kind="update",
                                     about_ids=[update_id])
    assert counts[update_id]["queued"] == CONTACTS + 3
    page = client.get(f"/console/incidents/{incident}").get_data(as_text=True)
    assert "Queuing recipients" not in page
    assert f"{CONTACTS + 3} recipients: 0 sent, {CONTACTS + 3} queued, 0 failed" in page


def test_a_job_that_dies_mid_expansion_resumes_without_doubles_or_gaps(
        app, engine, desk, incident, monkeypatch, smtp_server):
    monkeypatch.setattr(fanout, "ACCOUNTS_PER_BATCH", 4)  # 25 accounts: 7 batches
    monkeypatch.setattr(fanout, "SUBSCRIBERS_PER_BATCH", 2)  # 5 subscribers: 3 batches
    _subscribers(engine, desk, 5)
    update_id = _publish(engine, desk, incident)
    real_enqueue, calls = outbox.enqueue_rows, []

    def dies_at_the_fourth_batch(*, session, rows):
        calls.append(len(rows))
        real_enqueue(session=session, rows=rows)
        if len(calls) == 4:
            raise RuntimeError("kill -9")  # after the rows, before the commit

    monkeypatch.setattr(outbox, "enqueue_rows", dies_at_the_fourth_batch)
    with pytest.raises(RuntimeError):
        _run(app)
    committed = _keys(engine)
    assert len(committed) == 3 * 4 * 3  # three batches of four accounts of three contacts

    # The first emails leave while the rest waits.
    port, sink = smtp_server
    report = outbox.drain(engine=engine, cipher=services(app).crypto.cipher,
                          mailer=Mailer(host="127.0.0.1", port=port, sender="s@lifeline.test"),
                          now=utcnow())
    assert report.sent == len(sink.messages) == len(committed)

    monkeypatch.setattr(outbox, "enqueue_rows", real_enqueue)
    assert _run(app) == 0  # the dead job's lease still holds the fan-out
    later = utcnow() + fanout.LEASE + timedelta(seconds=1)
    assert _run(app, clock=lambda: later) == CONTACTS + 5 - len(committed)
    keys = _keys(engine)
    assert len(keys) == len(set(keys)) == CONTACTS + 5
    with session_scope(engine) as session:
        state = session.get(UpdateFanout, update_id)
        assert (state.phase, state.queued, state.finished_at is not None) == (
            "done", CONTACTS + 5, True)
        assert session.exec(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.recipient_kind == "subscriber")).one() == 5


def test_after_the_retention_the_proof_still_says_who_was_told_what_and_when(
        app, client, engine, desk, auth, make_staff, incident, smtp_server):
    update_id = _publish(engine, desk, incident)
    _run(app)
    port, _ = smtp_server
    outbox.drain(engine=engine, cipher=services(app).crypto.cipher,
                 mailer=Mailer(host="127.0.0.1", port=port, sender="s@lifeline.test"),
                 now=utcnow())
    later = utcnow() + timedelta(days=31)  # time travel past the retention
    dropped = ledger.drop_old_payloads(engine=engine, now=later,
                                       retention_days=services(app).settings
                                       .delivery_retention_days)
    assert dropped == CONTACTS
    with session_scope(engine) as session:
        assert session.exec(select(func.count()).where(
            OutboxMessage.created_at < later - timedelta(days=30),
            OutboxMessage.payload_encrypted.is_not(None))).one() == 0
        contacts = set(session.exec(select(OutboxMessage.recipient_id).where(
            OutboxMessage.about_id == update_id)).all())
    auth.login(make_staff("comms"))
    export = client.get(f"/console/incidents/{incident}/deliveries.csv").get_data(as_text=True)
    lines = export.strip().splitlines()[1:]
    assert len(lines) == CONTACTS
    assert {line.split(",")[3] for line in lines} == contacts  # who, by ID
    assert all(",email,sent,1," in line for line in lines)  # told, with the outcome
    assert all(line.split(",")[1] and line.split(",")[7] for line in lines)  # what, when


def test_the_first_batch_brings_the_email_drain_forward(make_app, smtp_server, sync_document,
                                                        deletion_document):
    """On SQLite the scheduler's drain job sends; with an hour between its runs, the first
    update email still leaves as soon as the fan-out's first batch is committed."""
    import threading

    from contacts.core.scheduler import SchedulerRunner
    from tests.incidents.conftest import thirty_sites

    port, sink = smtp_server
    app = make_app(mail_port=port, delivery_drain_seconds=3600, incidents_fanout_seconds=1)
    built = services(app)
    sync_document(deletion_document)
    desk = built.get(CommsDesk)
    with session_scope(built.engine) as session:
        from contacts.incidents import progress, records

        actor = Actor.system("test")
        created = records.create_incident(session=session, actor=actor, title="Deleted",
                                          severity="critical", started_at=utcnow(),
                                          now=utcnow())
        progress.add_sites(session=session, desk=desk, actor=actor, incident_id=created.id,
                           refs=thirty_sites(deletion_document), now=utcnow())
    jobs = [job for job in built.jobs if job.id in ("delivery-drain", "incidents-fanout")]
    assert len(jobs) == 2
    runner = SchedulerRunner(built.engine, jobs, app=app)
    runner.start()
    try:
        deadline = threading.Event()
        while not deadline.wait(0.2) and runner.state != "running":
            pass
        deadline.wait(2)  # the drain's first run (at start) is over: its next is an hour off
        _publish(built.engine, desk, created.id)
        for _ in range(150):
            if sink.received:
                break
            deadline.wait(0.2)
    finally:
        runner.shutdown()
    assert sink.received, "no update email within 30 s: the drain waited for its interval"

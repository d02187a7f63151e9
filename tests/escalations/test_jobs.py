"""The scheduled jobs of the escalations, called as the scheduler calls them: a public-form
request becomes a ticket; an unanswered item is marked and its owner warned."""

from __future__ import annotations

from sqlmodel import select

from contacts import jobs
from contacts.core import scheduler
from contacts.core.db import session_scope
from contacts.escalations.models import WorkItem


def test_the_jobs_open_tickets_for_requests_and_mark_late_items(work, work_app, accounts,
                                                                desk_for_intake, monkeypatch,
                                                                make_staff):
    monkeypatch.setattr(scheduler, "_app", work_app)
    monkeypatch.setattr(scheduler, "_engine", work.engine)
    response = desk_for_intake.submit(work_app.test_client(), email="cy@beta.example.com",
                                      message="Everything is gone", severity="critical")
    assert response.status_code == 202
    jobs.process_requests()
    jobs.follow_work()
    with session_scope(work.engine) as session:
        ticket = session.exec(select(WorkItem)).one()
        assert (ticket.channel, ticket.account_id, ticket.priority) == (
            "web_form", accounts["B-1"][0], 1)
        # Received long ago: make it due now, as time passing would.
        ticket.first_response_due = ticket.first_response_risk_at = ticket.created_at
        ticket.next_due = ticket.next_risk_at = ticket.created_at
        session.add(ticket)
    jobs.watch_slas()
    with session_scope(work.engine) as session:
        assert session.exec(select(WorkItem)).one().sla_state == "breached"
    jobs.follow_work()  # idempotent: no second ticket
    with session_scope(work.engine) as session:
        assert len(session.exec(select(WorkItem)).all()) == 1

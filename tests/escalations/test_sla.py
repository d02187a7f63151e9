"""SLA time travel: items cross "at risk" and "breached" at the right moments for 24/7 and
business-hours policies, in the account's own time zone, and the owner and the region lead
get the warning on a real SMTP server, once per target and state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contacts import reactions
from contacts.core.db import utcnow
from contacts.escalations import service
from contacts.escalations.sla import BusinessHours
from tests.escalations.conftest import MONDAY_10


def _check(work, now):
    return work.run(service.check_sla, now=now)


def test_a_24_7_item_turns_at_risk_then_breached_and_the_owner_and_lead_are_warned(
        work, accounts, actor, make_staff):
    owner = make_staff("support", email="owner@staff.example.com")
    item = work.create(actor, now=MONDAY_10, account_id=accounts["A-1"][0], priority=1,
                       owner_id=owner.id)
    # P1: first response within 30 minutes; at risk with a quarter left, at 22:30.
    assert _check(work, MONDAY_10 + timedelta(minutes=22)).at_risk == []
    assert _check(work, MONDAY_10 + timedelta(minutes=23)).at_risk == [item.id]
    assert work.item(item.id).sla_state == "at_risk"
    assert _check(work, MONDAY_10 + timedelta(minutes=29, seconds=59)).breached == []
    assert _check(work, MONDAY_10 + timedelta(minutes=30)).breached == [item.id]
    assert work.item(item.id).sla_state == "breached"
    assert _check(work, MONDAY_10 + timedelta(minutes=45)).breached == []  # once

    assert work.deliver(now=MONDAY_10 + timedelta(minutes=31)).sent == 4
    to_owner = work.mail_to("owner@staff.example.com")
    to_lead = work.mail_to("emea-lead@example.com")
    assert [m["Subject"].split("]")[0] for m in to_owner] == ["[SLA at risk", "[SLA breached"]
    assert len(to_lead) == 2
    body = to_owner[1].get_body(("plain",)).get_content()
    assert item.id in body and "Acme Gardens" in body and "first response" in body
    assert "2026-11-23 10:30 UTC" in body


def test_a_business_hours_item_only_counts_open_hours(work, accounts, actor):
    # Friday 16:00 UTC, P3 (business hours, 9-17 Mon-Fri UTC by default): 4 hours to answer.
    friday_4pm = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
    item = work.create(actor, now=friday_4pm, account_id=accounts["A-1"][0], priority=3)
    # One hour on Friday, three on Monday morning: due Monday 12:00, at risk at 11:00.
    assert item.first_response_due == datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert item.first_response_risk_at == datetime(2026, 11, 30, 11, 0, tzinfo=UTC)
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    report = _check(work, saturday)
    assert report.at_risk == [] and report.breached == []
    assert _check(work, datetime(2026, 11, 30, 11, 0, tzinfo=UTC)).at_risk == [item.id]
    assert _check(work, datetime(2026, 11, 30, 12, 0, tzinfo=UTC)).breached == [item.id]


def test_an_accounts_own_time_zone_and_hours_move_its_targets(work, accounts, actor):
    account_id = accounts["A-1"][0]
    work.run(service.set_profile, actor=actor, account_id=account_id,
             timezone="America/New_York", business_hours="mon-fri 08:00-12:00",
             now=MONDAY_10)
    # Monday 10:00 UTC is 05:00 in New York: the clock starts at 08:00 EST = 13:00 UTC.
    item = work.create(actor, now=MONDAY_10, account_id=account_id, priority=3)
    assert item.first_response_due == datetime(2026, 11, 23, 17, 0, tzinfo=UTC)
    # P4 resolves in 7,200 business minutes = 30 four-hour days: six weeks of weekdays.
    hours = BusinessHours.parse("mon-fri 08:00-12:00", "America/New_York")
    assert hours.minutes_between(MONDAY_10, hours.add(MONDAY_10, 7200)) == 7200


def test_answering_in_time_moves_the_clock_to_the_resolution_target(work, accounts, actor):
    account_id, contacts = accounts["A-1"]
    item = work.create(actor, now=MONDAY_10, account_id=account_id, priority=1,
                       requester_contact_id=contacts["C-1"])
    work.run(service.reply, actor=actor, item_id=item.id, body="We are on it.",
             now=MONDAY_10 + timedelta(minutes=10))
    answered = work.item(item.id)
    assert answered.first_response_at == MONDAY_10 + timedelta(minutes=10)
    assert answered.next_due == MONDAY_10 + timedelta(hours=4)
    assert _check(work, MONDAY_10 + timedelta(minutes=40)).breached == []
    assert _check(work, MONDAY_10 + timedelta(hours=3, minutes=1)).at_risk == [item.id]
    assert work.deliver(now=MONDAY_10 + timedelta(minutes=11)).sent >= 1
    assert "We are on it." in work.mail_to("ada@acme.example.com")[0].get_body(
        ("plain",)).get_content()


def test_the_requesters_verification_raises_the_priority(work, accounts, actor, desk_for_intake):
    """A public-form request becomes a ticket; once its sender proves to be a listed site
    admin, the ticket's priority rises and its targets tighten."""
    intake = desk_for_intake
    reference = intake.submit(intake.app.test_client(), email="ada@acme.example.com",
                              message="Our shop vanished", severity="normal").get_json()[
        "reference"]
    intake.process()
    assert work.run(reactions.sync_requests, now=utcnow()) == 1
    with_request = _ticket(work)
    assert (with_request.priority, with_request.requester_verification) == (3, "unverified")
    assert with_request.account_id == accounts["A-1"][0]
    intake.deliver()
    client = intake.app.test_client()
    page = client.get(f"/requests/{reference}/verify")
    from tests.helpers import csrf_token_from

    client.post(f"/requests/{reference}/verify", data={
        "code": intake.code_for("ada@acme.example.com"),
        "csrf_token": csrf_token_from(page.get_data(as_text=True))})
    assert intake.request(reference).verification == "authorized"
    assert work.run(reactions.sync_requests, now=utcnow()) == 1
    raised = _ticket(work)
    assert (raised.priority, raised.requester_verification) == (2, "authorized")
    assert raised.first_response_due < with_request.first_response_due
    assert work.run(reactions.sync_requests, now=utcnow()) == 0  # nothing new


def _ticket(work):
    from sqlmodel import select

    from contacts.core.db import session_scope
    from contacts.escalations.models import WorkItem

    with session_scope(work.engine) as session:
        item = session.exec(select(WorkItem).where(WorkItem.channel == "web_form")).one()
        session.expunge(item)
        return item


def test_a_breach_found_by_a_change_is_still_announced_by_the_job(work, accounts, actor,
                                                                  make_staff):
    owner = make_staff("support", email="late@staff.example.com")
    item = work.create(actor, now=MONDAY_10, account_id=accounts["A-1"][0], priority=1,
                       owner_id=owner.id)
    # Triaged a minute after the first response was due (triage is not a response).
    work.run(service.change_status, actor=actor, item_id=item.id, status="triaged",
             now=MONDAY_10 + timedelta(minutes=31))
    assert _check(work, MONDAY_10 + timedelta(minutes=31)).breached == [item.id]
    work.deliver(now=MONDAY_10 + timedelta(minutes=32))
    assert [m["Subject"].split("]")[0] for m in work.mail_to("late@staff.example.com")] == [
        "[SLA breached"]


def test_after_a_late_first_response_the_resolution_target_is_watched(work, accounts, actor):
    account_id, contacts = accounts["A-1"]
    item = work.create(actor, now=MONDAY_10, account_id=account_id, priority=1,
                       requester_contact_id=contacts["C-1"])
    assert _check(work, MONDAY_10 + timedelta(minutes=31)).breached == [item.id]
    work.run(service.reply, actor=actor, item_id=item.id, body="Sorry for the wait.",
             now=MONDAY_10 + timedelta(minutes=40))
    assert work.item(item.id).sla_state == "ok"  # the resolution target runs now
    assert _check(work, MONDAY_10 + timedelta(hours=3, minutes=1)).at_risk == [item.id]
    assert _check(work, MONDAY_10 + timedelta(hours=4)).breached == [item.id]


def test_time_waiting_on_the_customer_survives_a_priority_change(work, accounts, actor):
    item = work.create(actor, now=MONDAY_10, account_id=accounts["A-1"][0], priority=2)
    for status, hours in (("in_progress", 1), ("waiting_on_customer", 1),
                          ("in_progress", 49)):
        work.run(service.change_status, actor=actor, item_id=item.id, status=status,
                 now=MONDAY_10 + timedelta(hours=hours))
    assert work.item(item.id).resolution_due == MONDAY_10 + timedelta(hours=8 + 48)
    work.run(service.set_priority, actor=actor, item_id=item.id, priority=1,
             now=MONDAY_10 + timedelta(hours=49, minutes=1))
    raised = work.item(item.id)
    assert raised.resolution_due == MONDAY_10 + timedelta(hours=4 + 48)
    assert raised.sla_state == "ok"

"""Follow-the-sun: new unowned items go to the region on shift; at a shift change the open
items nobody worked on go to the next region, unowned, with a hand-off note, the hand-off
is recorded and the incoming lead told; items being worked or waiting on the customer stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contacts.core.db import session_scope
from contacts.core.errors import ConfigError
from contacts.escalations import service
from contacts.escalations.shifts import Rota

EMEA_MORNING = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
AMER_START = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)


def test_a_shift_change_hands_unworked_items_to_the_next_region(work, accounts, actor,
                                                                 make_staff):
    account_id = accounts["A-1"][0]
    agent = make_staff("support")
    idle_owned = work.create(actor, now=EMEA_MORNING, account_id=account_id, owner_id=agent.id,
                             title="idle since the morning")
    unowned = work.create(actor, now=EMEA_MORNING, account_id=account_id, title="nobody's")
    busy = work.create(actor, now=EMEA_MORNING, account_id=account_id, owner_id=agent.id,
                       title="being worked")
    waiting = work.create(actor, now=EMEA_MORNING, account_id=account_id, title="waiting")
    for status in ("in_progress", "waiting_on_customer"):
        work.run(service.change_status, actor=actor, item_id=waiting.id, status=status,
                 now=EMEA_MORNING)
    work.run(service.comment, actor=actor, item_id=busy.id, body="still on the phone",
             now=AMER_START - timedelta(minutes=10))
    assert {work.item(i.id).region for i in (idle_owned, unowned, busy, waiting)} == {"EMEA"}

    assert work.run(service.hand_off, now=AMER_START - timedelta(minutes=30)).to_region == "EMEA"
    handoff = work.run(service.hand_off, now=AMER_START + timedelta(seconds=30))
    assert (handoff.from_region, handoff.to_region, handoff.items) == ("EMEA", "AMER", 2)
    assert "2 open items" in handoff.note
    handed = work.item(idle_owned.id)
    assert (handed.region, handed.owner_id) == ("AMER", None)
    assert work.item(unowned.id).region == "AMER"
    assert (work.item(busy.id).region, work.item(busy.id).owner_id) == ("EMEA", agent.id)
    assert work.item(waiting.id).region == "EMEA"
    assert work.run(service.hand_off, now=AMER_START + timedelta(minutes=5)) is None  # once

    with session_scope(work.engine) as session:
        history = service.item_view(session=session, desk=work.desk, item=handed,
                                    now=AMER_START).history
        recorded = service.recent_handoffs(session=session)
    assert history[-1].kind == "handoff"
    assert history[-1].detail == f"EMEA -> AMER, unassigned from {agent.id}"
    assert [(h.from_region, h.to_region, h.items) for h in recorded][:1] == [
        ("EMEA", "AMER", 2)]
    work.deliver(now=AMER_START + timedelta(minutes=1))
    told = work.mail_to("amer-lead@example.com")
    assert len(told) == 1 and "2 items from EMEA to AMER" in told[0]["Subject"]


def test_new_unowned_items_go_to_the_region_on_shift(work, accounts, actor):
    night = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    assert work.create(actor, now=night, account_id=accounts["A-1"][0]).region == "APAC"
    assert work.create(actor, now=AMER_START, account_id=accounts["A-1"][0]).region == "AMER"


@pytest.mark.parametrize("regions, problem", [
    (["EMEA 08:00-16:00", "AMER 16:00-24:00"], "uncovered"),
    (["APAC 00:00-09:00", "EMEA 08:00-16:00", "AMER 16:00-24:00"], "covered twice"),
    (["APAC 0-8"], "is not like"),
])
def test_regions_that_do_not_cover_the_day_once_are_refused(regions, problem):
    with pytest.raises(ConfigError, match=problem):
        Rota.parse(regions, [])


def test_a_shift_change_the_job_missed_strands_nothing(work, accounts, actor):
    """The job was down through AMER's whole shift: at APAC's start, EMEA's idle items go
    to APAC too."""
    item = work.create(actor, now=EMEA_MORNING, account_id=accounts["A-1"][0])
    assert work.run(service.hand_off, now=EMEA_MORNING).to_region == "EMEA"
    apac_start = datetime(2026, 11, 24, 0, 5, tzinfo=UTC)
    handoff = work.run(service.hand_off, now=apac_start)
    assert (handoff.to_region, handoff.items) == ("APAC", 1)
    assert work.item(item.id).region == "APAC"

"""Work items under an account: logging, the enforced workflow, owners, links, merges,
parents driving children, bulk actions, and every refusal with a clear 4xx."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contacts import reactions
from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.errors import Conflict, Invalid, WrongKind
from contacts.core.ids import new_id
from contacts.core.services import services
from contacts.escalations import queues, service
from contacts.escalations.models import PAUSED
from contacts.incidents.service import CommsDesk
from tests.escalations.conftest import MONDAY_10
from tests.incidents.conftest import publish_queued


def test_an_escalation_by_phone_is_logged_under_its_account_with_an_sla(work, accounts, actor):
    account_id, contacts = accounts["A-1"]
    item = work.create(actor, now=MONDAY_10, account_id=account_id, priority=1,
                       requester_contact_id=contacts["C-1"], body="She says the shop is gone")
    assert item.id.startswith("itm_") and item.account_id == account_id
    assert (item.status, item.kind, item.channel, item.priority) == (
        "new", "escalation", "phone", 1)
    # P1 is 24/7: 30 minutes to answer, 4 hours to resolve.
    assert item.first_response_due == MONDAY_10 + timedelta(minutes=30)
    assert item.resolution_due == MONDAY_10 + timedelta(hours=4)
    assert item.next_due == item.first_response_due
    assert item.region == "EMEA"  # on shift at 10:00 UTC
    assert item.requester_verification == "authorized"


def test_the_workflow_is_enforced_and_a_refusal_names_the_allowed_moves(work, accounts, actor):
    item = work.create(actor, account_id=accounts["A-1"][0])
    with pytest.raises(Conflict) as refused:
        work.run(service.change_status, actor=actor, item_id=item.id, status="resolved",
                 now=utcnow())
    assert "from new to resolved" in refused.value.message
    assert refused.value.details["allowed"] == ["triaged", "in_progress"]
    for status in ("triaged", "in_progress", "waiting_on_customer", "in_progress", "resolved",
                   "closed"):
        work.run(service.change_status, actor=actor, item_id=item.id, status=status,
                 now=utcnow())
    with pytest.raises(Conflict, match="final"):
        work.run(service.change_status, actor=actor, item_id=item.id, status="in_progress",
                 now=utcnow())
    with pytest.raises(Invalid, match="status must be one of"):
        work.run(service.change_status, actor=actor, item_id=item.id, status="done",
                 now=utcnow())
    assert work.item(item.id).status == "closed"


def test_waiting_on_the_customer_stops_the_resolution_clock(work, accounts, actor):
    start = MONDAY_10
    item = work.create(actor, now=start, account_id=accounts["A-1"][0], priority=2)
    for status in ("in_progress", "waiting_on_customer"):
        work.run(service.change_status, actor=actor, item_id=item.id, status=status,
                 now=start + timedelta(hours=1))
    paused = work.item(item.id)
    assert paused.first_response_at == start + timedelta(hours=1)
    assert paused.next_due == PAUSED and paused.paused_at is not None
    work.run(service.change_status, actor=actor, item_id=item.id, status="in_progress",
             now=start + timedelta(hours=4))
    resumed = work.item(item.id)
    # P2 resolves in 8 hours (24/7); 3 hours waited on the customer do not count.
    assert resumed.resolution_due == start + timedelta(hours=11)


def test_items_go_only_to_active_support_staff(work, accounts, actor, make_staff):
    comms = make_staff("comms")
    item = work.create(actor, account_id=accounts["A-1"][0])
    with pytest.raises(Invalid, match="support staff; this is a comms user") as refused:
        work.run(service.assign, actor=actor, item_id=item.id, owner_id=comms.id,
                 now=utcnow())
    assert refused.value.status == 400
    with pytest.raises(WrongKind, match="expected a staff user ID"):
        work.run(service.assign, actor=actor, item_id=item.id, owner_id=new_id("acc"),
                 now=utcnow())
    agent = make_staff("support")
    work.run(service.assign, actor=actor, item_id=item.id, owner_id=agent.id, now=utcnow())
    assert work.item(item.id).owner_id == agent.id


def test_linking_to_an_item_of_another_kind_than_declared_is_refused(work, accounts, actor):
    account_id = accounts["A-1"][0]
    ticket = work.create(actor, account_id=account_id, kind="ticket", channel="email")
    child = work.create(actor, account_id=account_id)
    with pytest.raises(Conflict, match="is a ticket, not an escalation as declared"):
        work.run(service.link, actor=actor, item_id=child.id, parent_id=ticket.id,
                 parent_kind="escalation", now=utcnow())
    with pytest.raises(WrongKind, match="expected a work item ID"):
        work.run(service.link, actor=actor, item_id=child.id, parent_id=new_id("inc"),
                 now=utcnow())
    with pytest.raises(WrongKind, match="expected an incident ID"):
        work.run(service.link, actor=actor, item_id=child.id, incident_id=ticket.id,
                 now=utcnow())
    assert work.item(child.id).parent_id is None
    work.run(service.link, actor=actor, item_id=child.id, parent_id=ticket.id,
             parent_kind="ticket", now=utcnow())
    with pytest.raises(Conflict, match="under itself or one of its children"):
        work.run(service.link, actor=actor, item_id=ticket.id, parent_id=child.id,
                 now=utcnow())


def test_resolving_a_parent_resolves_its_children_and_tells_each_requester(work, accounts,
                                                                           actor):
    account_id, contacts = accounts["A-1"]
    problem = work.create(actor, account_id=account_id, kind="escalation", title="Outage")
    children = [work.create(actor, account_id=account_id, kind="ticket", channel="phone",
                            requester_contact_id=contact)
                for contact in (contacts["C-1"], contacts["C-2"])]
    for child in children:
        work.run(service.link, actor=actor, item_id=child.id, parent_id=problem.id,
                 now=utcnow())
    work.run(service.change_status, actor=actor, item_id=problem.id, status="triaged",
             now=utcnow())
    work.run(service.change_status, actor=actor, item_id=problem.id, status="resolved",
             now=utcnow())
    assert [work.item(child.id).status for child in children] == ["resolved", "resolved"]
    assert work.deliver().sent == 2
    english, french = work.mail_to("ada@acme.example.com"), work.mail_to("bob@acme.example.com")
    assert len(english) == 1
    assert "has been resolved" in english[0].get_body(("plain",)).get_content()
    assert len(french) == 1 and french[0]["Subject"].startswith("Le support")


def test_a_merged_duplicate_points_to_the_survivor_and_keeps_its_history(work, accounts, actor):
    account_id = accounts["A-1"][0]
    survivor = work.create(actor, account_id=account_id, priority=3)
    duplicate = work.create(actor, account_id=account_id, priority=1)
    work.run(service.merge, actor=actor, item_id=duplicate.id, into_id=survivor.id,
             now=utcnow())
    merged, kept = work.item(duplicate.id), work.item(survivor.id)
    assert (merged.status, merged.merged_into_id, merged.is_open) == ("closed", survivor.id,
                                                                      False)
    assert kept.priority == 1  # the survivor takes the more urgent priority
    with session_scope(work.engine) as session:
        history = service.item_view(session=session, desk=work.desk, item=merged,
                                    now=utcnow()).history
    assert [event.kind for event in history] == ["created", "merge"]
    other = work.create(actor, account_id=accounts["B-1"][0])
    with pytest.raises(Conflict, match="same account"):
        work.run(service.merge, actor=actor, item_id=other.id, into_id=survivor.id,
                 now=utcnow())


def test_a_bulk_action_changes_all_or_nothing(work, accounts, actor):
    account_id = accounts["A-1"][0]
    items = [work.create(actor, account_id=account_id) for _ in range(3)]
    work.run(service.change_status, actor=actor, item_id=items[2].id, status="triaged",
             now=utcnow())
    with pytest.raises(Conflict, match=f"{items[0].id}: An item cannot go from new to resolved"):
        work.run(service.bulk, actor=actor, account_id=account_id,
                 item_ids=[item.id for item in items], action="status", status="resolved",
                 now=utcnow())
    assert [work.item(item.id).status for item in items] == ["new", "new", "triaged"]
    changed = work.run(service.bulk, actor=actor, account_id=account_id,
                       item_ids=[item.id for item in items], action="status",
                       status="in_progress", now=utcnow())
    assert changed == 3
    assert {work.item(item.id).status for item in items} == {"in_progress"}
    other = work.create(actor, account_id=accounts["B-1"][0])
    with pytest.raises(Conflict, match="not an item of"):
        work.run(service.bulk, actor=actor, account_id=account_id, item_ids=[other.id],
                 action="status", status="triaged", now=utcnow())


def test_bad_input_is_refused_before_anything_is_written(work, accounts, actor):
    account_id = accounts["A-1"][0]
    cases = [
        ({"account_id": account_id, "kind": "incident"}, "kind must be one of"),
        ({"account_id": account_id, "channel": "carrier pigeon"}, "channel must be one of"),
        ({"account_id": account_id, "priority": 7}, "priority must be 1 to 4"),
        ({"account_id": account_id, "title": "  "}, "title"),
        ({"account_id": new_id("site")}, "expected an account ID"),
        ({"kind": "escalation"}, "belong to an account"),
        ({"account_id": account_id, "region": "MARS"}, "region must be one of"),
        ({"account_id": account_id, "requester_contact_id": accounts["B-1"][1]["C-3"]},
         "current contact of the item's account"),
    ]
    for fields, message in cases:
        with pytest.raises((Invalid, Conflict), match=message) as refused:
            work.create(actor, **fields)
        assert 400 <= refused.value.status < 500
    with session_scope(work.engine) as session:
        queue = service.queue(session=session, desk=work.desk, given=service.QueueFilter(),
                              now=utcnow())
    assert queue.total == 0


def test_the_queue_orders_by_priority_then_time_left_and_filters(work, accounts, actor,
                                                                  make_staff):
    account_id = accounts["A-1"][0]
    now = utcnow()
    late = work.create(actor, now=now - timedelta(minutes=20), account_id=account_id,
                       priority=2, title="older P2")
    fresh = work.create(actor, now=now, account_id=account_id, priority=2, title="newer P2")
    urgent = work.create(actor, now=now, account_id=accounts["B-1"][0], priority=1,
                         channel="executive", title="CEO email")
    low = work.create(actor, now=now, kind="task", channel="internal", priority=4,
                      title="restore site X")
    with session_scope(work.engine) as session:
        def ids(**given):
            return [row.item.id for row in service.queue(
                session=session, desk=work.desk, given=service.QueueFilter(**given),
                now=now).rows]

        assert ids() == [urgent.id, late.id, fresh.id, low.id]
        assert ids(channel="executive") == [urgent.id]
        assert ids(account=account_id) == [late.id, fresh.id]
        assert ids(kind="task") == [low.id]
        assert ids(owner="none") == [urgent.id, late.id, fresh.id, low.id]
        assert ids(verified=True) == []
        first = service.queue(session=session, desk=work.desk, given=service.QueueFilter(),
                              now=now).rows[0]
        assert first.title == "CEO email" and first.account_name == "Beta Bakery"
    with pytest.raises(WrongKind):
        service.check_filter(work.desk, service.QueueFilter(account=urgent.id))


def test_only_an_admin_deletes_and_a_deleted_item_is_kept_but_hidden(work, accounts, actor):
    item = work.create(actor, account_id=accounts["A-1"][0])
    work.run(service.delete_item, actor=Actor("staff", new_id("stf")), item_id=item.id,
             now=utcnow())
    assert work.item(item.id).deleted_at is not None
    with session_scope(work.engine) as session:
        assert service.queue(session=session, desk=work.desk,
                             given=service.QueueFilter(status="all"), now=utcnow()).total == 0


def test_resolving_the_incident_resolves_its_linked_items_with_a_note(work, accounts, actor,
                                                                      work_app):
    from contacts.incidents import progress, records
    from tests.incidents.conftest import complete_draft

    account_id, contacts = accounts["A-1"]
    with session_scope(work.engine) as session:
        incident = records.create_incident(session=session, actor=actor, title="Deletion",
                                           severity="critical", started_at=utcnow(),
                                           now=utcnow())
        progress.add_sites(session=session, desk=services(work_app).get(CommsDesk),
                           actor=actor, incident_id=incident.id, refs=["S-1"], now=utcnow())
    linked = [work.create(actor, account_id=account_id, requester_contact_id=contacts["C-1"],
                          incident_id=incident.id, title=f"call {n}") for n in range(3)]
    unrelated = work.create(actor, account_id=account_id)
    assert work.run(reactions.resolve_for_incidents, now=utcnow()) == 0  # still open
    with work_app.app_context(), session_scope(work.engine) as session:
        publish_queued(session=session, desk=services(work_app).get(CommsDesk),
                           vault=work.desk.vault, actor=actor, incident_id=incident.id,
                           draft=complete_draft(state="resolved"), now=utcnow())
    assert work.run(reactions.resolve_for_incidents, now=utcnow()) == 3
    assert {work.item(item.id).status for item in linked} == {"resolved"}
    assert work.item(unrelated.id).status == "new"
    assert work.run(reactions.resolve_for_incidents, now=utcnow()) == 0
    work.deliver()
    notes = [m for m in work.mail_to("ada@acme.example.com")
             if "has been resolved" in m.get_body(("plain",)).get_content()]
    assert len(notes) == 3


def test_a_long_queue_is_counted_up_to_a_cap_and_paged(work, accounts, actor, monkeypatch):
    monkeypatch.setattr(queues, "COUNT_CAP", 3)
    items = [work.create(actor, account_id=accounts["A-1"][0], title=f"item {n}")
             for n in range(5)]
    with session_scope(work.engine) as session:
        first = service.queue(session=session, desk=work.desk, given=service.QueueFilter(),
                              now=utcnow(), per_page=2)
        last = service.queue(session=session, desk=work.desk, given=service.QueueFilter(),
                             now=utcnow(), page=3, per_page=2)
    assert (first.total, first.more, first.has_next, len(first.rows)) == (3, True, True, 2)
    assert (last.has_next, [row.item.id for row in last.rows]) == (False, [items[4].id])


def test_an_item_cannot_be_merged_into_its_own_child(work, accounts, actor):
    account_id = accounts["A-1"][0]
    parent = work.create(actor, account_id=account_id)
    child = work.create(actor, account_id=account_id)
    work.run(service.link, actor=actor, item_id=child.id, parent_id=parent.id, now=utcnow())
    with pytest.raises(Conflict, match="its own children"):
        work.run(service.merge, actor=actor, item_id=parent.id, into_id=child.id,
                 now=utcnow())
    assert work.item(child.id).parent_id == parent.id


def test_a_closed_item_keeps_its_owner_and_priority(work, accounts, actor, make_staff):
    item = work.create(actor, account_id=accounts["A-1"][0])
    for status in ("triaged", "resolved", "closed"):
        work.run(service.change_status, actor=actor, item_id=item.id, status=status,
                 now=utcnow())
    with pytest.raises(Conflict, match="is closed"):
        work.run(service.set_priority, actor=actor, item_id=item.id, priority=1, now=utcnow())
    with pytest.raises(Conflict, match="is closed"):
        work.run(service.assign, actor=actor, item_id=item.id,
                 owner_id=make_staff("support").id, now=utcnow())

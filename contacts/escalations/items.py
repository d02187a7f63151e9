"""Work items (tickets, escalations, tasks) under an account: creating and reading one, its
workflow (statuses, priority, owner, region, soft deletion), internal notes and replies to
the requester."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.db import get_or_404
from contacts.core.errors import Conflict, Invalid
from contacts.core.ids import new_id, with_article
from contacts.escalations.clock import (
    follow_clock,
    profiles_of,
    resume_clock,
    set_targets,
    time_left,
)
from contacts.escalations.desk import SupportDesk, record_event, worked
from contacts.escalations.models import (
    CHANNELS,
    EVENT_BODY,
    ITEM_BODY,
    ITEM_TITLE,
    KINDS,
    OPEN_STATUSES,
    STATUSES,
    TRANSITIONS,
    ItemEvent,
    WorkItem,
)
from contacts.escalations.replies import tell_requester
from contacts.vault import service as vault_service

ASSIGNABLE_ROLES = ("support", "admin")


def choice(value: str, allowed: tuple, what: str) -> str:
    if value not in allowed:
        raise Invalid(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def check_priority(value: int) -> int:
    if value not in (1, 2, 3, 4):
        raise Invalid(f"priority must be 1 to 4 (P1 is the highest); got {value!r}")
    return value


def check_owner(session: Session, desk: SupportDesk, owner_id: str) -> str:
    """Items go to active support staff (or admins), never to comms."""
    owner = desk.neighbours.get_staff(session, owner_id)
    if not owner.is_active:
        raise Invalid("This staff member is deactivated; assign the item to someone active.")
    if owner.role not in ASSIGNABLE_ROLES:
        raise Invalid(f"Items are assigned to support staff; this is a {owner.role} user.",
                      details={"owner_role": owner.role})
    return owner.id


def _region(desk: SupportDesk, name: str | None, now: datetime) -> str:
    if not name:
        return desk.rota.on_shift(now).name
    if desk.rota.get(name) is None:
        raise Invalid(f"region must be one of {', '.join(desk.rota.names)}; got {name!r}")
    return name


def check_parent(session: Session, item_id: str | None, declared_kind: str | None,
                 account_id: str | None) -> WorkItem | None:
    if item_id is None:
        if declared_kind is not None:
            raise Invalid("parent_kind is given without a parent item")
        return None
    parent = get_item(session=session, item_id=item_id)
    if declared_kind is not None:
        choice(declared_kind, KINDS, "parent_kind")
        if parent.kind != declared_kind:
            raise Conflict(f"{parent.id} is {with_article(parent.kind)}, not "
                           f"{with_article(declared_kind)} as declared",
                           details={"declared": declared_kind, "actual": parent.kind})
    if not parent.is_open:
        raise Conflict(f"{parent.id} is {parent.status}; link to an open item.")
    if account_id and parent.account_id and parent.account_id != account_id:
        raise Conflict("A parent item belongs to another account.")
    return parent


def known_incident(session: Session, desk: SupportDesk, incident_id: str | None) -> str | None:
    if incident_id is None:
        return None
    return desk.neighbours.incident_id(session, incident_id)


@dataclass
class NewItem:
    kind: str
    channel: str
    title: str
    account_id: str | None = None
    body: str | None = None
    priority: int = 3
    owner_id: str | None = None
    region: str | None = None
    incident_id: str | None = None
    parent_id: str | None = None
    parent_kind: str | None = None
    requester_contact_id: str | None = None


def create_item(*, session: Session, desk: SupportDesk, actor: Actor, new: NewItem,
                now: datetime) -> WorkItem:
    """Log a ticket, escalation or task under an account (a phone call, an executive's
    email, internal work). Unowned items go to the region on shift."""
    choice(new.kind, KINDS, "kind")
    choice(new.channel, CHANNELS, "channel")
    title = new.title.strip()
    if not title:
        raise Invalid("Give the item a title.")
    account = vault_service.get_account(session=session, account_id=new.account_id) \
        if new.account_id else None
    if account is None and new.kind != "task":
        raise Invalid("Tickets and escalations belong to an account: give account_id.")
    verification = None
    if new.requester_contact_id:
        contact = vault_service.get_contact(session=session,
                                            contact_id=new.requester_contact_id)
        if account is None or contact.account_id != account.id or contact.deleted_at:
            raise Invalid("The requester must be a current contact of the item's account.")
        verification = "authorized"  # a listed contact, reached by staff
    parent = check_parent(session, new.parent_id, new.parent_kind, account.id if account else None)
    item = WorkItem(
        id=new_id("itm"), account_id=account.id if account else None, kind=new.kind,
        channel=new.channel, title_encrypted=desk.seal(title[:500], ITEM_TITLE),
        body_encrypted=desk.seal(new.body.strip(), ITEM_BODY) if new.body and new.body.strip()
        else None,
        priority=check_priority(new.priority),
        owner_id=check_owner(session, desk, new.owner_id) if new.owner_id else None,
        region=_region(desk, new.region, now), parent_id=parent.id if parent else None,
        incident_id=known_incident(session, desk, new.incident_id),
        requester_contact_id=new.requester_contact_id, requester_verification=verification,
        created_at=now, created_by=actor.id or actor.kind, updated_at=now,
        last_worked_at=now if actor.kind != "system" else None,
        first_response_due=now, first_response_risk_at=now, resolution_due=now,
        resolution_risk_at=now, next_due=now, next_risk_at=now)
    set_targets(desk, item, profiles_of(session, [item.account_id]).get(item.account_id), now)
    session.add(item)
    session.flush()  # the item's row before its events' (no ORM relationship orders them)
    record_event(session, desk, item, actor, "created", now,
                 f"{item.kind} by {item.channel}, P{item.priority}, region {item.region}")
    audit.record(session, actor, "item.created", target_kind="work_item", target_id=item.id,
                 account_id=item.account_id, kind=item.kind, channel=item.channel)
    return item


def get_item(*, session: Session, item_id: str, include_deleted: bool = False) -> WorkItem:
    return get_or_404(session, WorkItem, item_id, "itm", "There is no work item with this ID.",
                      include_deleted=include_deleted)


@dataclass(frozen=True)
class Event:
    at: datetime
    actor: str
    kind: str
    detail: str
    body: str | None


@dataclass(frozen=True)
class ItemView:
    item: WorkItem
    title: str
    body: str | None
    account_name: str | None
    owner_email: str | None
    time_left: timedelta | None
    history: list[Event]
    children: list[WorkItem]
    request_reference: str | None
    incident_title: str | None


def item_view(*, session: Session, desk: SupportDesk, item: WorkItem, now: datetime) -> ItemView:
    events = session.exec(select(ItemEvent).where(ItemEvent.item_id == item.id)
                          .order_by(ItemEvent.at, ItemEvent.id)).all()
    actors = desk.neighbours.staff_by_id(
        session, [event.actor for event in events if event.actor.startswith("stf_")]
        + ([item.owner_id] if item.owner_id else []))
    account = vault_service.accounts_by_id(session=session, ids=[item.account_id]).get(
        item.account_id) if item.account_id else None
    children = list(session.exec(select(WorkItem).where(
        WorkItem.parent_id == item.id, col(WorkItem.deleted_at).is_(None))
        .order_by(WorkItem.created_at)))
    references = desk.neighbours.request_references(session, [item.request_id]) \
        if item.request_id else {}
    titles = desk.neighbours.incident_titles(session, [item.incident_id]) \
        if item.incident_id else {}
    return ItemView(
        item=item, title=desk.open(item.title_encrypted, ITEM_TITLE),
        body=desk.open(item.body_encrypted, ITEM_BODY),
        account_name=account.name if account else None,
        owner_email=actors[item.owner_id].email if item.owner_id in actors else None,
        time_left=time_left(item, now),
        history=[Event(event.at, actors[event.actor].email if event.actor in actors
                       else event.actor, event.kind, event.detail,
                       desk.open(event.body_encrypted, EVENT_BODY)) for event in events],
        children=children, request_reference=references.get(item.request_id),
        incident_title=titles.get(item.incident_id))


# -- the workflow ----------------------------------------------------------------------------


def change_status(*, session: Session, desk: SupportDesk, actor: Actor, item_id: str, status: str,
                  now: datetime, note: str | None = None) -> WorkItem:
    item = get_item(session=session, item_id=item_id)
    choice(status, STATUSES, "status")
    if item.merged_into_id:
        raise Conflict(f"{item.id} was merged into {item.merged_into_id}; work on that one.")
    if status == item.status:
        return item
    if status not in TRANSITIONS[item.status]:
        allowed = ", ".join(TRANSITIONS[item.status]) or "nothing (it is final)"
        raise Conflict(f"An item cannot go from {item.status} to {status}; from "
                       f"{item.status} it can go to {allowed}.",
                       details={"from": item.status, "to": status,
                                "allowed": list(TRANSITIONS[item.status])})
    move(session, desk, item, actor, status, now, note)
    if status == "resolved":
        _resolve_children(session, desk, item, actor, now)
    return item


def move(session: Session, desk: SupportDesk, item: WorkItem, actor: Actor, status: str,
         now: datetime, note: str | None) -> ItemEvent:
    """Move an item to a status the workflow allows from its own (checked by the caller)."""
    before = item.status
    item.status = status
    item.is_open = status in OPEN_STATUSES
    if before == "waiting_on_customer" and item.paused_at is not None:
        resume_clock(session, desk, item, now)
    responded = (status in ("in_progress", "waiting_on_customer", "resolved")
                 and item.first_response_at is None and actor.kind != "system")
    if responded:
        item.first_response_at = now
    if status == "waiting_on_customer":
        item.paused_at = now
    if status == "resolved":
        item.resolved_at = now
    elif status == "closed":
        item.closed_at = now
    elif item.is_open:
        item.resolved_at = item.closed_at = None
    worked(item, actor, now)
    follow_clock(item, now, restarted=responded)
    session.add(item)
    return record_event(session, desk, item, actor, "status", now, f"{before} -> {status}",
                        note)


def _resolve_children(session: Session, desk: SupportDesk, parent: WorkItem, actor: Actor,
                      now: datetime) -> int:
    children = list(session.exec(select(WorkItem).where(
        WorkItem.parent_id == parent.id, col(WorkItem.is_open).is_(True),
        col(WorkItem.deleted_at).is_(None))))
    note = f"Resolved with {parent.id}, which this item was linked to."
    for child in children:
        resolve_with_note(session=session, desk=desk, actor=actor, item=child, note=note,
                          now=now)
    return len(children)


def resolve_with_note(*, session: Session, desk: SupportDesk, actor: Actor, item: WorkItem,
                      note: str, now: datetime) -> None:
    """Resolve from any open status (a parent or an incident drives its items) and tell the
    requester."""
    event = move(session, desk, item, actor, "resolved", now, note)
    if item.request_id or item.requester_contact_id:
        tell_requester(session, desk, actor, item, _resolution_message(item), now, event)
    _resolve_children(session, desk, item, actor, now)


def _resolution_message(item: WorkItem) -> str:
    return ("The problem behind your request has been resolved. If anything still looks "
            "wrong, answer this message and we will pick it up again.")


def _open_item(session: Session, item_id: str) -> WorkItem:
    item = get_item(session=session, item_id=item_id)
    if not item.is_open:
        raise Conflict(f"{item.id} is {item.status}; reopen it first (resolved items can go "
                       "back to in progress).")
    return item


def set_priority(*, session: Session, desk: SupportDesk, actor: Actor, item_id: str, priority: int,
                 now: datetime, reason: str = "") -> WorkItem:
    item = _open_item(session, item_id)
    check_priority(priority)
    if priority != item.priority:
        before = item.priority
        item.priority = priority
        set_targets(desk, item, profiles_of(session, [item.account_id]).get(item.account_id),
                    now)
        worked(item, actor, now)
        session.add(item)
        record_event(session, desk, item, actor, "priority", now,
                     f"P{before} -> P{priority}" + (f" ({reason})" if reason else ""))
    return item


def assign(*, session: Session, desk: SupportDesk, actor: Actor, item_id: str,
           owner_id: str | None, now: datetime) -> WorkItem:
    item = _open_item(session, item_id)
    owner = check_owner(session, desk, owner_id) if owner_id else None
    if owner != item.owner_id:
        item.owner_id = owner
        worked(item, actor, now)
        session.add(item)
        record_event(session, desk, item, actor, "owner", now,
                     f"assigned to {owner}" if owner else "unassigned")
    return item


def set_region(*, session: Session, desk: SupportDesk, actor: Actor, item_id: str, region: str,
               now: datetime) -> WorkItem:
    item = _open_item(session, item_id)
    region = _region(desk, region, now)
    if region != item.region:
        before = item.region
        item.region = region
        worked(item, actor, now)
        session.add(item)
        record_event(session, desk, item, actor, "region", now, f"{before} -> {region}")
    return item


def delete_item(*, session: Session, desk: SupportDesk, actor: Actor, item_id: str,
                now: datetime) -> WorkItem:
    """Soft delete (admins only, at the route): hidden everywhere, kept in the database."""
    item = get_item(session=session, item_id=item_id)
    item.deleted_at, item.deleted_by = now, actor.id
    item.is_open = False
    follow_clock(item, now)
    session.add(item)
    record_event(session, desk, item, actor, "deleted", now)
    audit.record(session, actor, "item.deleted", target_kind="work_item", target_id=item.id)
    return item


# -- notes and replies -----------------------------------------------------------------------


def _written(body: str, what: str) -> str:
    body = body.strip()
    if not body:
        raise Invalid(f"Write the {what} first.")
    return body


def comment(*, session: Session, desk: SupportDesk, actor: Actor, item_id: str, body: str,
            now: datetime) -> WorkItem:
    """An internal note: staff only, never sent."""
    item = get_item(session=session, item_id=item_id)
    body = _written(body, "comment")
    worked(item, actor, now)
    session.add(item)
    record_event(session, desk, item, actor, "comment", now, "", body[:20_000])
    return item


def reply(*, session: Session, desk: SupportDesk, actor: Actor, item_id: str, body: str,
          now: datetime) -> WorkItem:
    """Answer the requester by email (the first answer meets the first-response target)."""
    item = get_item(session=session, item_id=item_id)
    body = _written(body, "reply")
    if not (item.request_id or item.requester_contact_id):
        raise Conflict("This item has no requester to reply to (log the contact who asked).")
    event = record_event(session, desk, item, actor, "reply", now, "sent to the requester",
                         body[:20_000])
    tell_requester(session, desk, actor, item, body, now, event)
    responded = item.first_response_at is None
    if responded:
        item.first_response_at = now
    worked(item, actor, now)
    follow_clock(item, now, restarted=responded)
    session.add(item)
    return item

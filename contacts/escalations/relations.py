"""How items relate: links to a parent item or an incident, merges of duplicates; and one
action on many items of an account."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.errors import Conflict, Invalid, NotFound
from contacts.core.ids import parse_id
from contacts.escalations.clock import follow_clock
from contacts.escalations.desk import SupportDesk, record_event, worked
from contacts.escalations.items import (
    assign,
    change_status,
    check_parent,
    choice,
    get_item,
    known_incident,
    reply,
    set_priority,
)
from contacts.escalations.models import (
    VERIFIED,
    WorkItem,
)


def link(*, session: Session, desk: SupportDesk, actor: Actor, item_id: str, now: datetime,
         parent_id: str | None = None, parent_kind: str | None = None,
         incident_id: str | None = None) -> WorkItem:
    """Link the item to a parent item (of the declared kind, when one is declared) and/or an
    incident; resolving either resolves the item."""
    item = get_item(session=session, item_id=item_id)
    if parent_id is None and incident_id is None:
        raise Invalid("Give parent_id, incident_id or both.")
    if parent_id is not None:
        parent = check_parent(session, parent_id, parent_kind, item.account_id)
        if parent.id == item.id or _is_ancestor(session, item.id, parent):
            raise Conflict("An item cannot be linked under itself or one of its children.")
        item.parent_id = parent.id
        record_event(session, desk, item, actor, "link", now, f"child of {parent.id}")
    if incident_id is not None:
        item.incident_id = known_incident(session, desk, incident_id)
        record_event(session, desk, item, actor, "link", now, f"linked to {item.incident_id}")
    worked(item, actor, now)
    session.add(item)
    return item


def _is_ancestor(session: Session, item_id: str, candidate: WorkItem) -> bool:
    seen = set()
    current = candidate
    while current.parent_id and current.parent_id not in seen:
        if current.parent_id == item_id:
            return True
        seen.add(current.parent_id)
        current = session.get(WorkItem, current.parent_id)
        if current is None:
            return False
    return False


def merge(*, session: Session, desk: SupportDesk, actor: Actor, item_id: str, into_id: str,
          now: datetime) -> WorkItem:
    """Merge a duplicate into another item of the same account: the duplicate is closed and
    points to the survivor (its page redirects there); both histories say so; its children
    move over."""
    duplicate = get_item(session=session, item_id=item_id)
    survivor = get_item(session=session, item_id=into_id)
    if duplicate.id == survivor.id:
        raise Conflict("An item cannot be merged into itself.")
    if duplicate.account_id != survivor.account_id:
        raise Conflict("Only items of the same account can be merged.")
    if survivor.merged_into_id or not survivor.is_open:
        raise Conflict(f"{survivor.id} is {survivor.status}; merge into an open item.")
    if duplicate.merged_into_id:
        raise Conflict(f"{duplicate.id} is already merged into {duplicate.merged_into_id}.")
    if _is_ancestor(session, duplicate.id, survivor):
        raise Conflict("An item cannot be merged into one of its own children.")
    for child in session.exec(select(WorkItem).where(WorkItem.parent_id == duplicate.id,
                                                     WorkItem.id != survivor.id)):
        child.parent_id = survivor.id
        session.add(child)
    duplicate.merged_into_id = survivor.id
    duplicate.status, duplicate.is_open, duplicate.closed_at = "closed", False, now
    worked(duplicate, actor, now)
    follow_clock(duplicate, now)
    if duplicate.priority < survivor.priority:
        set_priority(session=session, desk=desk, actor=actor, item_id=survivor.id,
                     priority=duplicate.priority, now=now, reason=f"merged {duplicate.id}")
    worked(survivor, actor, now)
    session.add_all([duplicate, survivor])
    record_event(session, desk, duplicate, actor, "merge", now, f"merged into {survivor.id}")
    record_event(session, desk, survivor, actor, "merge", now, f"{duplicate.id} merged into this")
    audit.record(session, actor, "item.merged", target_kind="work_item",
                 target_id=duplicate.id, into=survivor.id)
    return survivor


# -- bulk actions on an account's items ------------------------------------------------------


BULK_ACTIONS = ("status", "assign", "link", "reply")


def bulk(*, session: Session, desk: SupportDesk, actor: Actor, account_id: str, item_ids: list[str],
         action: str, now: datetime, status: str | None = None, owner_id: str | None = None,
         incident_id: str | None = None, parent_id: str | None = None,
         body: str | None = None) -> int:
    """One action on many items of one account; any item refused refuses them all (the
    caller's transaction is rolled back)."""
    choice(action, BULK_ACTIONS, "action")
    account_id = parse_id(account_id, "acc")
    if not item_ids:
        raise Invalid("Select at least one item.")
    done = 0
    for item_id in dict.fromkeys(item_ids):
        item = get_item(session=session, item_id=item_id)
        if item.account_id != account_id:
            raise Conflict(f"{item.id} is not an item of {account_id}.")
        try:
            if action == "status":
                change_status(session=session, desk=desk, actor=actor, item_id=item.id,
                              status=status or "", now=now)
            elif action == "assign":
                assign(session=session, desk=desk, actor=actor, item_id=item.id,
                       owner_id=owner_id or None, now=now)
            elif action == "link":
                link(session=session, desk=desk, actor=actor, item_id=item.id, now=now,
                     parent_id=parent_id or None, incident_id=incident_id or None)
            elif item.requester_verification in VERIFIED:
                reply(session=session, desk=desk, actor=actor, item_id=item.id,
                      body=body or "", now=now)
            else:
                continue  # replies go to verified requesters only
        except (Invalid, Conflict, NotFound) as exc:
            raise type(exc)(f"{item.id}: {exc.message}", details=exc.details) from None
        done += 1
    return done

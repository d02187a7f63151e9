"""Items that follow the world around them: tickets that follow their support request,
items resolved with their incident, a call task for an account no update reached, and
follow-the-sun hand-offs at a shift change. The requests and incidents come in as plain
data (`contacts/reactions.py` reads them from their areas)."""



from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from contacts.core.audit import Actor
from contacts.core.db import in_chunks
from contacts.core.errors import NotFound
from contacts.core.ids import new_id
from contacts.delivery import outbox
from contacts.escalations.clock import profiles_of, set_targets
from contacts.escalations.desk import SupportDesk, record_event
from contacts.escalations.items import NewItem, comment, create_item, resolve_with_note
from contacts.escalations.models import (
    ITEM_TITLE,
    AccountProfile,
    ShiftHandoff,
    WorkItem,
)
from contacts.escalations.neighbours import ChangedRequest, MissedAccount
from contacts.vault import service as vault_service

log = logging.getLogger(__name__)

SEVERITY_TITLES = {"critical": "site or data gone", "high": "something important broken",
                   "normal": "something not working", "low": "a question"}


# Requests changed this long before the last one seen are read again: a transaction that
# committed late is not missed (the upsert is idempotent).
SYNC_OVERLAP = timedelta(minutes=5)


def requests_seen_since(session: Session) -> tuple[datetime, str] | None:
    """Where the next sync of requests starts: a little before the newest change seen."""
    newest = session.exec(select(func.max(WorkItem.request_changed_at))).one()
    return (newest - SYNC_OVERLAP, "") if newest else None


def follow_requests(*, session: Session, desk: SupportDesk, requests: list[ChangedRequest],
                    now: datetime) -> int:
    """Open a ticket for each new matched request, and keep each ticket's account, trust and
    priority in step with its request (verification can raise the priority). A closed
    request gets no ticket (one opens if the customer writes again)."""
    existing = {}
    for chunk in in_chunks([request.id for request in requests]):
        existing |= {item.request_id: item for item in session.exec(
            select(WorkItem).where(col(WorkItem.request_id).in_(chunk)))}
    profiles = profiles_of(session, [request.account_id for request in requests])
    changed = 0
    for request in requests:
        item = existing.get(request.id)
        if item is None:
            if request.status != "closed":
                _ticket_for(session, desk, request, profiles.get(request.account_id), now)
                changed += 1
        elif _follow_request(session, desk, item, request, profiles, now):
            changed += 1
    return changed


def _ticket_for(session: Session, desk: SupportDesk, request: ChangedRequest,
                profile: AccountProfile | None, now: datetime) -> WorkItem:
    created = request.received_at
    item = WorkItem(
        id=new_id("itm"), account_id=request.account_id, kind="ticket", channel="web_form",
        title_encrypted=desk.seal(f"Web request {request.reference}: "
                                  f"{SEVERITY_TITLES.get(request.severity, request.severity)}",
                                  ITEM_TITLE),
        priority=request.priority, region=desk.rota.on_shift(now).name,
        request_id=request.id, request_changed_at=request.changed_at,
        requester_contact_id=None, requester_verification=request.verification,
        created_at=created, created_by="system", updated_at=now,
        first_response_due=created, first_response_risk_at=created, resolution_due=created,
        resolution_risk_at=created, next_due=created, next_risk_at=created)
    set_targets(desk, item, profile, now)
    session.add(item)
    session.flush()
    record_event(session, desk, item, Actor.system("intake"), "created", now,
                 f"ticket from the public form ({request.reference}), P{item.priority}, "
                 f"requester {request.verification}, region {item.region}")
    return item


def _follow_request(session: Session, desk: SupportDesk, item: WorkItem,
                    request: ChangedRequest,
                    profiles: dict[str, AccountProfile], now: datetime) -> bool:
    system = Actor.system("intake")
    changes = []
    if request.account_id and request.account_id != item.account_id:
        changes.append(f"account {item.account_id or 'none'} -> {request.account_id}")
        item.account_id = request.account_id
    if request.verification != item.requester_verification:
        changes.append(f"requester {item.requester_verification} -> {request.verification}")
        item.requester_verification = request.verification
    if item.request_changed_at != request.changed_at:
        item.request_changed_at = request.changed_at
        session.add(item)
    if request.priority < item.priority and item.is_open:
        before = item.priority
        item.priority = request.priority
        set_targets(desk, item, profiles.get(item.account_id), now)
        changes.append(f"P{before} -> P{item.priority} (requester {request.verification})")
    if not changes:
        return False
    item.updated_at = now
    record_event(session, desk, item, system, "request", now, "; ".join(changes))
    return True


# -- incidents drive their items -------------------------------------------------------------


def incidents_of_open_items(session: Session) -> list[str]:
    return list(session.exec(select(WorkItem.incident_id).where(
        col(WorkItem.is_open).is_(True), col(WorkItem.incident_id).is_not(None)).distinct()))


def resolve_with_incidents(*, session: Session, desk: SupportDesk, resolved: Iterable[str],
                           now: datetime) -> int:
    """Open items linked to a resolved incident are resolved, with a note to the requester."""
    count = 0
    system = Actor.system("incidents")
    for incident_id in resolved:
        for item in session.exec(select(WorkItem).where(
                WorkItem.incident_id == incident_id, col(WorkItem.is_open).is_(True))):
            if item.is_open:  # a parent resolved earlier in this loop may have closed it
                resolve_with_note(session=session, desk=desk, actor=system, item=item,
                                  note=f"Resolved with incident {incident_id}.", now=now)
                count += 1
    return count


def call_unreached(*, session: Session, desk: SupportDesk,
                   unreached: list[MissedAccount], now: datetime) -> list[str]:
    """An account none of whose contacts an update's email reached falls back to a call:
    a P1 task on the account, linked to the incident, in the region on shift; while that
    task is open, later updates that miss the account add a comment to it."""
    handled = []
    system = Actor.system("delivery")
    for account in unreached:
        if _gone(session, account.account_id):
            log.info("update %d of %s missed %s, which the vault no longer holds",
                     account.update_number, account.incident_id, account.account_id)
            continue
        note = (f"Update {account.update_number} of “{account.incident_title}” reached none "
                f"of the account's {account.contacts_failed} contact"
                f"{'s' if account.contacts_failed != 1 else ''} by email")
        open_task = session.exec(select(WorkItem).where(
            WorkItem.account_id == account.account_id,
            WorkItem.incident_id == account.incident_id, WorkItem.created_by == "delivery",
            col(WorkItem.is_open).is_(True))).first()
        if open_task is not None:
            comment(session=session, desk=desk, actor=system, item_id=open_task.id,
                    body=note + ".", now=now)
            handled.append(open_task.id)
            continue
        item = create_item(session=session, desk=desk, actor=system, now=now, new=NewItem(
            kind="task", channel="internal", account_id=account.account_id, priority=1,
            incident_id=account.incident_id, title=f"Call the account: {note[0].lower()}"
                                                   f"{note[1:]}",
            body="Every email of this update to the account's contacts was refused for good. "
                 "Their contacts are flagged for checking on the account page. Call a phone "
                 "number on file, read them the update, and correct their contacts."))
        handled.append(item.id)
    return handled


def _gone(session: Session, account_id: str) -> bool:
    """Deleted or purged from the vault since."""
    try:
        vault_service.get_account(session=session, account_id=account_id)
    except NotFound:
        return True
    return False


# -- follow-the-sun --------------------------------------------------------------------------


def hand_off(*, session: Session, desk: SupportDesk, now: datetime) -> ShiftHandoff | None:
    """At a shift change, the open items of the region going off shift that nobody worked
    on lately (or nobody owns) go to the region coming on, unowned, with a hand-off note;
    the hand-off is recorded and the incoming lead told. Waiting-on-customer items stay."""
    incoming = desk.rota.on_shift(now)
    last = session.exec(select(ShiftHandoff).order_by(col(ShiftHandoff.at).desc(),
                                                      col(ShiftHandoff.id).desc())
                        .limit(1)).first()
    if last is not None and last.to_region == incoming.name:
        return None
    outgoing = desk.rota.before(incoming)
    # Every region now off shift: a change the job missed (it was down) strands nothing.
    off_shift = [name for name in desk.rota.names if name != incoming.name]
    idle_since = now - desk.handoff_idle
    items = list(session.exec(select(WorkItem).where(
        col(WorkItem.region).in_(off_shift), col(WorkItem.is_open).is_(True),
        col(WorkItem.status).in_(("new", "triaged", "in_progress")),
        or_(col(WorkItem.owner_id).is_(None), col(WorkItem.last_worked_at).is_(None),
            col(WorkItem.last_worked_at) < idle_since))))
    note = (f"Shift change {outgoing.name} -> {incoming.name}: {len(items)} open "
            f"item{'s' if len(items) != 1 else ''} not worked on since "
            f"{idle_since:%H:%M} UTC handed on.")
    system = Actor.system("shifts")
    for item in items:
        before, region = item.owner_id, item.region
        item.region, item.owner_id, item.updated_at = incoming.name, None, now
        session.add(item)
        record_event(session, desk, item, system, "handoff", now,
                     f"{region} -> {incoming.name}"
                     + (f", unassigned from {before}" if before else ""))
    handoff = ShiftHandoff(at=now, from_region=outgoing.name, to_region=incoming.name,
                           items=len(items), note=note)
    session.add(handoff)
    if incoming.lead and items:
        subject, text, html = desk.render("shift_handoff", "en", {
            "from_region": outgoing.name, "to_region": incoming.name, "count": len(items),
            "note": note, "link": f"{desk.base_url}/console/items?region={incoming.name}"})
        outbox.enqueue_email(session=session, cipher=desk.crypto.cipher,
                             key=f"handoff:{incoming.name}:{now:%Y%m%dT%H%M%S}",
                             topic=outbox.Topic("handoff", incoming.name, "staff"),
                             purpose="shift_handoff", now=now,
                             email=outbox.Email(to=incoming.lead, subject=subject, text=text,
                                                html=html))
    return handoff


def recent_handoffs(*, session: Session, limit: int = 10) -> list[ShiftHandoff]:
    return list(session.exec(select(ShiftHandoff).order_by(col(ShiftHandoff.at).desc())
                             .limit(limit)))

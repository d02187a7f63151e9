"""Accounts and escalations: work items under one account, their workflow and history,
links, merges, SLAs, follow-the-sun hand-offs, queues and the support leads' dashboard.

Tickets from the public form follow their support request (`sync_requests`); items linked
to an incident or a parent are resolved with it. Other domains are read through their
services; nothing here reads their tables.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from contacts.core import audit, clock
from contacts.core.audit import Actor
from contacts.core.crypto import Crypto
from contacts.core.db import get_or_404, in_chunks
from contacts.core.errors import ConfigError, Conflict, Invalid, NotFound
from contacts.core.ids import new_id, parse_id, with_article
from contacts.core.mail import SUPPORT_LIST_ID
from contacts.delivery import outbox
from contacts.escalations import sla
from contacts.escalations.models import (
    CHANNELS,
    EVENT_BODY,
    ITEM_BODY,
    ITEM_TITLE,
    KINDS,
    OPEN_STATUSES,
    PAUSED,
    STATUSES,
    TRANSITIONS,
    AccountProfile,
    ItemEvent,
    SavedView,
    ShiftHandoff,
    WorkItem,
)
from contacts.escalations.shifts import Rota
from contacts.incidents import service as incidents_service
from contacts.intake import service as intake_service
from contacts.staff import service as staff_service
from contacts.vault import service as vault_service

log = logging.getLogger(__name__)

ASSIGNABLE_ROLES = ("support", "admin")
SEVERITY_TITLES = {"critical": "site or data gone", "high": "something important broken",
                   "normal": "something not working", "low": "a question"}
VERIFIED = ("email_verified", "authorized", "callback_confirmed")
Renderer = Callable[[str, str | None, dict], tuple[str, str, str]]


@dataclass(frozen=True)
class Desk:
    """What the escalations need from settings and the other domains, built once per app."""

    crypto: Crypto
    vault: vault_service.Vault
    intake: intake_service.Intake
    render: Renderer
    policies: dict[int, sla.Policy]
    default_hours: str
    default_timezone: str
    at_risk_fraction: float
    rota: Rota
    handoff_idle: timedelta
    base_url: str

    @classmethod
    def from_settings(cls, settings, crypto: Crypto, *, intake: intake_service.Intake,
                      render: Renderer) -> Desk:
        try:  # refuse a bad default at startup, not at the first item
            sla.BusinessHours.parse(settings.escalations_business_hours,
                                    settings.escalations_timezone)
        except Invalid as exc:
            raise ConfigError(f"escalations: {exc.message}") from None
        return cls(crypto=crypto, vault=vault_service.Vault.from_settings(settings, crypto),
                   intake=intake, render=render,
                   policies=sla.policies_from_settings(settings),
                   default_hours=settings.escalations_business_hours,
                   default_timezone=settings.escalations_timezone,
                   at_risk_fraction=settings.escalations_at_risk_fraction,
                   rota=Rota.parse(settings.escalations_regions,
                                   settings.escalations_region_leads),
                   handoff_idle=timedelta(minutes=settings.escalations_handoff_idle_minutes),
                   base_url=settings.app_base_url.rstrip("/"))

    def seal(self, value: str, context: str) -> str:
        return self.crypto.cipher.encrypt(value, context=context)

    def open(self, value: str | None, context: str) -> str | None:
        return self.crypto.cipher.decrypt(value, context=context) if value else None


# -- the clock -------------------------------------------------------------------------------


def _profiles(session: Session, account_ids) -> dict[str, AccountProfile]:
    ids = [account_id for account_id in set(account_ids) if account_id]
    found: dict[str, AccountProfile] = {}
    for chunk in in_chunks(ids):
        found |= {profile.account_id: profile for profile in session.exec(
            select(AccountProfile).where(col(AccountProfile.account_id).in_(chunk)))}
    return found


def _clock(desk: Desk, business: bool, profile: AccountProfile | None) -> sla.Clock:
    if not business:
        return sla.Clock(None)
    if profile is not None:
        return sla.Clock(sla.BusinessHours.parse(profile.business_hours, profile.timezone))
    return sla.Clock(sla.BusinessHours.parse(desk.default_hours, desk.default_timezone))


def _set_targets(desk: Desk, item: WorkItem, profile: AccountProfile | None,
                 now: datetime) -> None:
    """Due times of the item's priority, counted from its creation, the resolution target
    pushed back by the time spent waiting on the customer."""
    policy = desk.policies[item.priority]
    targets = sla.targets(policy, _clock(desk, policy.business_hours, profile),
                          item.created_at, desk.at_risk_fraction,
                          paused_minutes=item.paused_minutes)
    item.sla_business_hours = policy.business_hours
    item.first_response_due = targets.first_response_due
    item.first_response_risk_at = targets.first_response_risk_at
    item.resolution_due = targets.resolution_due
    item.resolution_risk_at = targets.resolution_risk_at
    _follow_clock(item, now)


SLA_RANK = {"ok": 0, "at_risk": 1, "breached": 2}


def _follow_clock(item: WorkItem, now: datetime, restarted: bool = False) -> None:
    """Point the item at the target running now. Better news is recorded at once; worse news
    is the SLA job's to record, with its event and warnings (`check_sla`). `restarted`: a
    new target runs (the first response was just given), judged on its own."""
    if not item.is_open or item.paused_at is not None:
        item.next_due = item.next_risk_at = PAUSED
    elif item.first_response_at is None:
        item.next_due, item.next_risk_at = item.first_response_due, item.first_response_risk_at
    else:
        item.next_due, item.next_risk_at = item.resolution_due, item.resolution_risk_at
    state = sla_state(item, now)
    if restarted or not item.is_open or SLA_RANK[state] < SLA_RANK[item.sla_state]:
        item.sla_state = state


def sla_state(item: WorkItem, now: datetime) -> str:
    """How the running target stands: "breached" once its due time passed, "at_risk" when
    less than its share is left, else "ok". While the clock is stopped (waiting on the
    customer) the state stands still; a resolved item is judged by when it was resolved."""
    if not item.is_open:
        if item.resolved_at is not None and item.resolved_at > item.resolution_due:
            return "breached"
        return item.sla_state
    if item.paused_at is not None:
        return item.sla_state
    if now >= item.next_due:
        return "breached"
    if now >= item.next_risk_at:
        return "at_risk"
    return "ok"


def time_left(item: WorkItem, now: datetime) -> timedelta | None:
    """Until the running target is due (negative once breached); None while paused."""
    if item.next_due == PAUSED:
        return None
    return item.next_due - now


# -- creating and reading --------------------------------------------------------------------


def _choice(value: str, allowed: tuple, what: str) -> str:
    if value not in allowed:
        raise Invalid(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _priority(value: int) -> int:
    if value not in (1, 2, 3, 4):
        raise Invalid(f"priority must be 1 to 4 (P1 is the highest); got {value!r}")
    return value


def _event(session: Session, desk: Desk, item: WorkItem, actor: Actor, kind: str,
           now: datetime, detail: str = "", body: str | None = None) -> None:
    session.add(ItemEvent(item_id=item.id, at=now, actor=actor.id or actor.kind, kind=kind,
                          detail=detail[:500],
                          body_encrypted=desk.seal(body, EVENT_BODY) if body else None))


def _worked(item: WorkItem, actor: Actor, now: datetime) -> None:
    item.updated_at = now
    if actor.kind in ("staff", "token"):
        item.last_worked_at = now


def check_owner(session: Session, desk: Desk, owner_id: str) -> str:
    """Items go to active support staff (or admins), never to comms."""
    owner = staff_service.get_staff(session=session, crypto=desk.crypto, staff_id=owner_id)
    if not owner.is_active:
        raise Invalid("This staff member is deactivated; assign the item to someone active.")
    if owner.role not in ASSIGNABLE_ROLES:
        raise Invalid(f"Items are assigned to support staff; this is a {owner.role} user.",
                      details={"owner_role": owner.role})
    return owner.id


def _region(desk: Desk, name: str | None, now: datetime) -> str:
    if not name:
        return desk.rota.on_shift(now).name
    if desk.rota.get(name) is None:
        raise Invalid(f"region must be one of {', '.join(desk.rota.names)}; got {name!r}")
    return name


def _parent(session: Session, item_id: str | None, declared_kind: str | None,
            account_id: str | None) -> WorkItem | None:
    if item_id is None:
        if declared_kind is not None:
            raise Invalid("parent_kind is given without a parent item")
        return None
    parent = get_item(session=session, item_id=item_id)
    if declared_kind is not None:
        _choice(declared_kind, KINDS, "parent_kind")
        if parent.kind != declared_kind:
            raise Conflict(f"{parent.id} is {with_article(parent.kind)}, not "
                           f"{with_article(declared_kind)} as declared",
                           details={"declared": declared_kind, "actual": parent.kind})
    if not parent.is_open:
        raise Conflict(f"{parent.id} is {parent.status}; link to an open item.")
    if account_id and parent.account_id and parent.account_id != account_id:
        raise Conflict("A parent item belongs to another account.")
    return parent


def _incident(session: Session, incident_id: str | None) -> str | None:
    if incident_id is None:
        return None
    return incidents_service.get_incident(session=session, incident_id=incident_id).id


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


def create_item(*, session: Session, desk: Desk, actor: Actor, new: NewItem,
                now: datetime) -> WorkItem:
    """Log a ticket, escalation or task under an account (a phone call, an executive's
    email, internal work). Unowned items go to the region on shift."""
    _choice(new.kind, KINDS, "kind")
    _choice(new.channel, CHANNELS, "channel")
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
    parent = _parent(session, new.parent_id, new.parent_kind, account.id if account else None)
    item = WorkItem(
        id=new_id("itm"), account_id=account.id if account else None, kind=new.kind,
        channel=new.channel, title_encrypted=desk.seal(title[:500], ITEM_TITLE),
        body_encrypted=desk.seal(new.body.strip(), ITEM_BODY) if new.body and new.body.strip()
        else None,
        priority=_priority(new.priority),
        owner_id=check_owner(session, desk, new.owner_id) if new.owner_id else None,
        region=_region(desk, new.region, now), parent_id=parent.id if parent else None,
        incident_id=_incident(session, new.incident_id),
        requester_contact_id=new.requester_contact_id, requester_verification=verification,
        created_at=now, created_by=actor.id or actor.kind, updated_at=now,
        last_worked_at=now if actor.kind != "system" else None,
        first_response_due=now, first_response_risk_at=now, resolution_due=now,
        resolution_risk_at=now, next_due=now, next_risk_at=now)
    _set_targets(desk, item, _profiles(session, [item.account_id]).get(item.account_id), now)
    session.add(item)
    session.flush()  # the item's row before its events' (no ORM relationship orders them)
    _event(session, desk, item, actor, "created", now,
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


def item_view(*, session: Session, desk: Desk, item: WorkItem, now: datetime) -> ItemView:
    events = session.exec(select(ItemEvent).where(ItemEvent.item_id == item.id)
                          .order_by(ItemEvent.at, ItemEvent.id)).all()
    actors = staff_service.staff_by_id(
        session=session, crypto=desk.crypto,
        ids=[event.actor for event in events if event.actor.startswith("stf_")]
        + ([item.owner_id] if item.owner_id else []))
    account = vault_service.accounts_by_id(session=session, ids=[item.account_id]).get(
        item.account_id) if item.account_id else None
    children = list(session.exec(select(WorkItem).where(
        WorkItem.parent_id == item.id, col(WorkItem.deleted_at).is_(None))
        .order_by(WorkItem.created_at)))
    request = intake_service.requests_by_id(session=session, ids=[item.request_id]).get(
        item.request_id) if item.request_id else None
    titles = incidents_service.incident_titles(session=session, ids=[item.incident_id]) \
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
        children=children, request_reference=request.reference if request else None,
        incident_title=titles.get(item.incident_id))


# -- the workflow ----------------------------------------------------------------------------


def change_status(*, session: Session, desk: Desk, actor: Actor, item_id: str, status: str,
                  now: datetime, note: str | None = None) -> WorkItem:
    item = get_item(session=session, item_id=item_id)
    _choice(status, STATUSES, "status")
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
    _move(session, desk, item, actor, status, now, note)
    if status == "resolved":
        _resolve_children(session, desk, item, actor, now)
    return item


def _move(session: Session, desk: Desk, item: WorkItem, actor: Actor, status: str,
          now: datetime, note: str | None) -> None:
    before = item.status
    item.status = status
    item.is_open = status in OPEN_STATUSES
    if before == "waiting_on_customer" and item.paused_at is not None:
        _resume_clock(session, desk, item, now)
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
    _worked(item, actor, now)
    _follow_clock(item, now, restarted=responded)
    session.add(item)
    _event(session, desk, item, actor, "status", now, f"{before} -> {status}", note)


def _resume_clock(session: Session, desk: Desk, item: WorkItem, now: datetime) -> None:
    """The resolution clock restarts: the time spent waiting (in the policy's minutes) is
    added to the resolution target, and stays added whenever the targets are recomputed."""
    profile = _profiles(session, [item.account_id]).get(item.account_id)
    clock = _clock(desk, item.sla_business_hours, profile)
    item.paused_minutes += clock.minutes_between(item.paused_at, now)
    item.paused_at = None
    _set_targets(desk, item, profile, now)


def _resolve_children(session: Session, desk: Desk, parent: WorkItem, actor: Actor,
                      now: datetime) -> int:
    children = list(session.exec(select(WorkItem).where(
        WorkItem.parent_id == parent.id, col(WorkItem.is_open).is_(True),
        col(WorkItem.deleted_at).is_(None))))
    note = f"Resolved with {parent.id}, which this item was linked to."
    for child in children:
        resolve_with_note(session=session, desk=desk, actor=actor, item=child, note=note,
                          now=now)
    return len(children)


def resolve_with_note(*, session: Session, desk: Desk, actor: Actor, item: WorkItem,
                      note: str, now: datetime) -> None:
    """Resolve from any open status (a parent or an incident drives its items) and tell the
    requester."""
    _move(session, desk, item, actor, "resolved", now, note)
    if item.request_id or item.requester_contact_id:
        _tell_requester(session, desk, actor, item, _resolution_message(item), now)
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


def set_priority(*, session: Session, desk: Desk, actor: Actor, item_id: str, priority: int,
                 now: datetime, reason: str = "") -> WorkItem:
    item = _open_item(session, item_id)
    _priority(priority)
    if priority != item.priority:
        before = item.priority
        item.priority = priority
        _set_targets(desk, item, _profiles(session, [item.account_id]).get(item.account_id),
                     now)
        _worked(item, actor, now)
        session.add(item)
        _event(session, desk, item, actor, "priority", now,
               f"P{before} -> P{priority}" + (f" ({reason})" if reason else ""))
    return item


def assign(*, session: Session, desk: Desk, actor: Actor, item_id: str,
           owner_id: str | None, now: datetime) -> WorkItem:
    item = _open_item(session, item_id)
    owner = check_owner(session, desk, owner_id) if owner_id else None
    if owner != item.owner_id:
        item.owner_id = owner
        _worked(item, actor, now)
        session.add(item)
        _event(session, desk, item, actor, "owner", now,
               f"assigned to {owner}" if owner else "unassigned")
    return item


def set_region(*, session: Session, desk: Desk, actor: Actor, item_id: str, region: str,
               now: datetime) -> WorkItem:
    item = _open_item(session, item_id)
    region = _region(desk, region, now)
    if region != item.region:
        before = item.region
        item.region = region
        _worked(item, actor, now)
        session.add(item)
        _event(session, desk, item, actor, "region", now, f"{before} -> {region}")
    return item


def _written(body: str, what: str) -> str:
    body = body.strip()
    if not body:
        raise Invalid(f"Write the {what} first.")
    return body


def comment(*, session: Session, desk: Desk, actor: Actor, item_id: str, body: str,
            now: datetime) -> WorkItem:
    """An internal note: staff only, never sent."""
    item = get_item(session=session, item_id=item_id)
    body = _written(body, "comment")
    _worked(item, actor, now)
    session.add(item)
    _event(session, desk, item, actor, "comment", now, "", body[:20_000])
    return item


def reply(*, session: Session, desk: Desk, actor: Actor, item_id: str, body: str,
          now: datetime) -> WorkItem:
    """Answer the requester by email (the first answer meets the first-response target)."""
    item = get_item(session=session, item_id=item_id)
    body = _written(body, "reply")
    if not (item.request_id or item.requester_contact_id):
        raise Conflict("This item has no requester to reply to (log the contact who asked).")
    _tell_requester(session, desk, actor, item, body, now)
    responded = item.first_response_at is None
    if responded:
        item.first_response_at = now
    _worked(item, actor, now)
    _follow_clock(item, now, restarted=responded)
    session.add(item)
    _event(session, desk, item, actor, "reply", now, "sent to the requester", body[:20_000])
    return item


def _tell_requester(session: Session, desk: Desk, actor: Actor, item: WorkItem, body: str,
                    now: datetime) -> None:
    if item.request_id:
        intake_service.reply_as_staff(session=session, intake=desk.intake, actor=actor,
                                      request_id=item.request_id, body=body,
                                      render=desk.render, now=now)
        return
    try:
        contact = vault_service.get_contact(session=session,
                                            contact_id=item.requester_contact_id)
    except NotFound:  # purged from the vault since: nobody left to tell
        return
    if contact.deleted_at is not None:
        return
    view = vault_service.contact_view(session=session, vault=desk.vault, contact=contact)
    subject, text, html = desk.render("item_reply", view.locale, {
        "item_id": item.id, "reply": body,
        "contact_link": f"{desk.base_url}/contact"})
    outbox.enqueue_email(session=session, cipher=desk.crypto.cipher,
                         key=f"item-reply:{item.id}:{uuid.uuid4().hex}", purpose="item_reply",
                         now=now,
                         email=outbox.Email(to=view.email, subject=subject, text=text,
                                            html=html, headers={"List-Id": SUPPORT_LIST_ID}))


# -- links and merges ------------------------------------------------------------------------


def link(*, session: Session, desk: Desk, actor: Actor, item_id: str, now: datetime,
         parent_id: str | None = None, parent_kind: str | None = None,
         incident_id: str | None = None) -> WorkItem:
    """Link the item to a parent item (of the declared kind, when one is declared) and/or an
    incident; resolving either resolves the item."""
    item = get_item(session=session, item_id=item_id)
    if parent_id is None and incident_id is None:
        raise Invalid("Give parent_id, incident_id or both.")
    if parent_id is not None:
        parent = _parent(session, parent_id, parent_kind, item.account_id)
        if parent.id == item.id or _is_ancestor(session, item.id, parent):
            raise Conflict("An item cannot be linked under itself or one of its children.")
        item.parent_id = parent.id
        _event(session, desk, item, actor, "link", now, f"child of {parent.id}")
    if incident_id is not None:
        item.incident_id = _incident(session, incident_id)
        _event(session, desk, item, actor, "link", now, f"linked to {item.incident_id}")
    _worked(item, actor, now)
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


def merge(*, session: Session, desk: Desk, actor: Actor, item_id: str, into_id: str,
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
    _worked(duplicate, actor, now)
    _follow_clock(duplicate, now)
    if duplicate.priority < survivor.priority:
        set_priority(session=session, desk=desk, actor=actor, item_id=survivor.id,
                     priority=duplicate.priority, now=now, reason=f"merged {duplicate.id}")
    _worked(survivor, actor, now)
    session.add_all([duplicate, survivor])
    _event(session, desk, duplicate, actor, "merge", now, f"merged into {survivor.id}")
    _event(session, desk, survivor, actor, "merge", now, f"{duplicate.id} merged into this")
    audit.record(session, actor, "item.merged", target_kind="work_item",
                 target_id=duplicate.id, into=survivor.id)
    return survivor


def delete_item(*, session: Session, desk: Desk, actor: Actor, item_id: str,
                now: datetime) -> WorkItem:
    """Soft delete (admins only, at the route): hidden everywhere, kept in the database."""
    item = get_item(session=session, item_id=item_id)
    item.deleted_at, item.deleted_by = now, actor.id
    item.is_open = False
    _follow_clock(item, now)
    session.add(item)
    _event(session, desk, item, actor, "deleted", now)
    audit.record(session, actor, "item.deleted", target_kind="work_item", target_id=item.id)
    return item


# -- bulk actions on an account's items ------------------------------------------------------

BULK_ACTIONS = ("status", "assign", "link", "reply")


def bulk(*, session: Session, desk: Desk, actor: Actor, account_id: str, item_ids: list[str],
         action: str, now: datetime, status: str | None = None, owner_id: str | None = None,
         incident_id: str | None = None, parent_id: str | None = None,
         body: str | None = None) -> int:
    """One action on many items of one account; any item refused refuses them all (the
    caller's transaction is rolled back)."""
    _choice(action, BULK_ACTIONS, "action")
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


# -- tickets from the public form ------------------------------------------------------------

# Requests changed this long before the last one seen are read again: a transaction that
# committed late is not missed (the upsert is idempotent).
SYNC_OVERLAP = timedelta(minutes=5)


def sync_requests(*, session: Session, desk: Desk, now: datetime, limit: int = 1000) -> int:
    """Open a ticket for each new matched request, and keep each ticket's account, trust and
    priority in step with its request (verification can raise the priority). A closed
    request gets no ticket (one opens if the customer writes again)."""
    newest = session.exec(select(func.max(WorkItem.request_changed_at))).one()
    since = (newest - SYNC_OVERLAP, "") if newest else None
    changed = 0
    while True:
        summaries = intake_service.requests_changed_since(session=session, since=since,
                                                          limit=limit)
        existing = {}
        for chunk in in_chunks([summary.id for summary in summaries]):
            existing |= {item.request_id: item for item in session.exec(
                select(WorkItem).where(col(WorkItem.request_id).in_(chunk)))}
        profiles = _profiles(session, [summary.account_id for summary in summaries])
        for summary in summaries:
            item = existing.get(summary.id)
            if item is None:
                if summary.status != "closed":
                    _ticket_for(session, desk, summary, profiles.get(summary.account_id), now)
                    changed += 1
            elif _follow_request(session, desk, item, summary, profiles, now):
                changed += 1
        if len(summaries) < limit:
            return changed
        session.flush()
        since = (summaries[-1].changed_at, summaries[-1].id)


def _ticket_for(session: Session, desk: Desk, request: intake_service.RequestSummary,
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
    _set_targets(desk, item, profile, now)
    session.add(item)
    session.flush()
    _event(session, desk, item, Actor.system("intake"), "created", now,
           f"ticket from the public form ({request.reference}), P{item.priority}, "
           f"requester {request.verification}, region {item.region}")
    return item


def _follow_request(session: Session, desk: Desk, item: WorkItem,
                    request: intake_service.RequestSummary,
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
        _set_targets(desk, item, profiles.get(item.account_id), now)
        changes.append(f"P{before} -> P{item.priority} (requester {request.verification})")
    if not changes:
        return False
    item.updated_at = now
    _event(session, desk, item, system, "request", now, "; ".join(changes))
    return True


# -- incidents drive their items -------------------------------------------------------------


def resolve_for_incidents(*, session: Session, desk: Desk, now: datetime) -> int:
    """Open items linked to a resolved incident are resolved, with a note to the requester."""
    incident_ids = list(session.exec(select(WorkItem.incident_id).where(
        col(WorkItem.is_open).is_(True), col(WorkItem.incident_id).is_not(None)).distinct()))
    resolved = incidents_service.resolved_incidents(session=session, ids=incident_ids)
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


def call_unreached(*, session: Session, desk: Desk,
                   unreached: list[incidents_service.Unreached], now: datetime) -> list[str]:
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


# -- SLA watch -------------------------------------------------------------------------------


@dataclass
class SlaReport:
    at_risk: list[str] = field(default_factory=list)
    breached: list[str] = field(default_factory=list)


def check_sla(*, session: Session, desk: Desk, now: datetime) -> SlaReport:
    """Mark items whose running target turned at risk or was missed, and warn the owner and
    the region lead by email, once per item, target and state."""
    report = SlaReport()
    due = list(session.exec(select(WorkItem).where(
        col(WorkItem.sla_state).in_(("ok", "at_risk")), col(WorkItem.next_due) <= now)))
    risky = list(session.exec(select(WorkItem).where(
        WorkItem.sla_state == "ok", col(WorkItem.next_risk_at) <= now)))
    changed = {item.id: item for item in risky} | {item.id: item for item in due}
    owners = staff_service.staff_by_id(session=session, crypto=desk.crypto,
                                       ids=[item.owner_id for item in changed.values()
                                            if item.owner_id])
    for item in changed.values():
        state = sla_state(item, now)
        if SLA_RANK[state] <= SLA_RANK[item.sla_state] or not item.is_open:
            continue
        item.sla_state = state
        session.add(item)
        target = "first response" if item.first_response_at is None else "resolution"
        _event(session, desk, item, Actor.system("sla"), "sla", now, f"{target} {state}")
        (report.breached if state == "breached" else report.at_risk).append(item.id)
        _warn(session, desk, item, state, target, owners.get(item.owner_id), now)
    return report


def _warn(session: Session, desk: Desk, item: WorkItem, state: str, target: str,
          owner: staff_service.StaffView | None, now: datetime) -> None:
    region = desk.rota.get(item.region or "")
    recipients = []
    if owner is not None and owner.is_active:
        recipients.append(("owner", owner.email))
    if region is not None and region.lead:
        recipients.append(("lead", region.lead))
    if not recipients:
        return
    account = vault_service.accounts_by_id(session=session, ids=[item.account_id]).get(
        item.account_id) if item.account_id else None
    values = {"item_id": item.id, "state": state.replace("_", " "), "target": target,
              "priority": item.priority, "region": item.region,
              "account_name": account.name if account else "no account",
              "due": clock.format_utc(item.first_response_due if target == "first response"
                                      else item.resolution_due),
              "link": f"{desk.base_url}/console/items/{item.id}"}
    subject, text, html = desk.render("sla_warning", "en", values)
    slug = target.replace(" ", "_")
    for who, address in recipients:
        outbox.enqueue_email(session=session, cipher=desk.crypto.cipher,
                             key=f"sla:{item.id}:{slug}:{state}:{who}", purpose="sla_warning",
                             now=now, email=outbox.Email(to=address, subject=subject,
                                                         text=text, html=html))


# -- follow-the-sun --------------------------------------------------------------------------


def hand_off(*, session: Session, desk: Desk, now: datetime) -> ShiftHandoff | None:
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
        _event(session, desk, item, system, "handoff", now,
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
                             purpose="shift_handoff", now=now,
                             email=outbox.Email(to=incoming.lead, subject=subject, text=text,
                                                html=html))
    return handoff


def recent_handoffs(*, session: Session, limit: int = 10) -> list[ShiftHandoff]:
    return list(session.exec(select(ShiftHandoff).order_by(col(ShiftHandoff.at).desc())
                             .limit(limit)))


# -- queues ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueFilter:
    status: str = "open"  # open, all, or one status
    region: str | None = None
    owner: str | None = None  # a staff ID, or "none"
    account: str | None = None
    incident: str | None = None
    channel: str | None = None
    kind: str | None = None
    priority: int | None = None
    verified: bool | None = None
    sla: str | None = None  # at_risk, breached

    def query_string(self) -> str:
        values = {name: value for name, value in vars(self).items()
                  if value not in (None, "") and not (name == "status" and value == "open")}
        if "verified" in values:
            values["verified"] = "yes" if values["verified"] else "no"
        return urlencode(values)


def check_filter(desk: Desk, given: QueueFilter) -> QueueFilter:
    """IDs of the right kind, known values; anything else is refused by name."""
    if given.status not in ("open", "all", *STATUSES):
        raise Invalid(f"status must be open, all or one of {', '.join(STATUSES)}")
    if given.region and desk.rota.get(given.region) is None:
        raise Invalid(f"region must be one of {', '.join(desk.rota.names)}")
    if given.owner and given.owner != "none":
        parse_id(given.owner, "stf")
    if given.account:
        parse_id(given.account, "acc")
    if given.incident:
        parse_id(given.incident, "inc")
    if given.channel:
        _choice(given.channel, CHANNELS, "channel")
    if given.kind:
        _choice(given.kind, KINDS, "kind")
    if given.priority is not None:
        _priority(given.priority)
    if given.sla:
        _choice(given.sla, ("ok", "at_risk", "breached"), "sla")
    return given


def _filtered(query, given: QueueFilter):
    if given.status == "open":  # a deleted item is never open: the queue index answers alone
        query = query.where(col(WorkItem.is_open).is_(True))
    else:
        query = query.where(col(WorkItem.deleted_at).is_(None))
        if given.status != "all":
            query = query.where(WorkItem.status == given.status)
    if given.region:
        query = query.where(WorkItem.region == given.region)
    if given.owner == "none":
        query = query.where(col(WorkItem.owner_id).is_(None))
    elif given.owner:
        query = query.where(WorkItem.owner_id == given.owner)
    if given.account:
        query = query.where(WorkItem.account_id == given.account)
    if given.incident:
        query = query.where(WorkItem.incident_id == given.incident)
    if given.channel:
        query = query.where(WorkItem.channel == given.channel)
    if given.kind:
        query = query.where(WorkItem.kind == given.kind)
    if given.priority:
        query = query.where(WorkItem.priority == given.priority)
    if given.verified is True:
        query = query.where(col(WorkItem.requester_verification).in_(VERIFIED))
    elif given.verified is False:
        query = query.where(or_(col(WorkItem.requester_verification).is_(None),
                                WorkItem.requester_verification == "unverified"))
    if given.sla:
        query = query.where(WorkItem.sla_state == given.sla)
    return query


@dataclass(frozen=True)
class QueueRow:
    item: WorkItem
    title: str
    account_name: str | None
    owner_email: str | None
    time_left: timedelta | None


@dataclass(frozen=True)
class Queue:
    rows: list[QueueRow]
    total: int  # counted up to COUNT_CAP
    more: bool  # more than COUNT_CAP items match
    page: int
    has_next: bool


# The queue counts its items up to this many: counting 50,000 open items to print a number
# would cost more than the page itself.
COUNT_CAP = 1000


def queue(*, session: Session, desk: Desk, given: QueueFilter, now: datetime, page: int = 1,
          per_page: int = 50) -> Queue:
    """Items by priority, then the time left on their running SLA target."""
    matching = _filtered(select(WorkItem.id), given).limit(COUNT_CAP + 1).subquery()
    total = session.exec(select(func.count()).select_from(matching)).one()
    page = max(1, page)
    items = _in_queue_order(session, given, (page - 1) * per_page, per_page + 1)
    return Queue(_rows(session, desk, items[:per_page], now), min(total, COUNT_CAP),
                 total > COUNT_CAP, page, len(items) > per_page)


def _rows(session: Session, desk: Desk, items: list[WorkItem], now: datetime) -> list[QueueRow]:
    accounts = vault_service.accounts_by_id(
        session=session, ids={item.account_id for item in items if item.account_id})
    owners = staff_service.staff_by_id(session=session, crypto=desk.crypto,
                                       ids=[item.owner_id for item in items if item.owner_id])
    return [QueueRow(item, desk.open(item.title_encrypted, ITEM_TITLE),
                     accounts[item.account_id].name if item.account_id in accounts else None,
                     owners[item.owner_id].email if item.owner_id in owners else None,
                     time_left(item, now))
            for item in items]


def items_api(*, session: Session, desk: Desk, given: QueueFilter, now: datetime,
              limit: int, offset: int) -> tuple[list[QueueRow], int]:
    total = session.exec(_filtered(select(func.count()).select_from(WorkItem), given)).one()
    return _rows(session, desk, _in_queue_order(session, given, offset, limit), now), total


def _in_queue_order(session: Session, given: QueueFilter, offset: int,
                    limit: int) -> list[WorkItem]:
    """By priority, then the time left on the running SLA target."""
    return list(session.exec(_filtered(select(WorkItem), given)
                             .order_by(WorkItem.priority, WorkItem.next_due,
                                       WorkItem.created_at).offset(offset).limit(limit)))


def save_view(*, session: Session, staff_id: str, name: str, given: QueueFilter) -> SavedView:
    name = name.strip()
    if not name:
        raise Invalid("Name the view.")
    view = SavedView(staff_id=staff_id, name=name[:80], query=given.query_string())
    session.add(view)
    return view


def saved_views(*, session: Session, staff_id: str) -> list[SavedView]:
    return list(session.exec(select(SavedView).where(SavedView.staff_id == staff_id)
                             .order_by(SavedView.name)))


def delete_view(*, session: Session, staff_id: str, view_id: int) -> None:
    view = session.get(SavedView, view_id)
    if view is None or view.staff_id != staff_id:
        raise NotFound("There is no saved view with this number.")
    session.delete(view)


# -- one account, one picture ----------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # item, request, reply, update, handoff...
    text: str
    link: str | None = None


@dataclass(frozen=True)
class AccountPicture:
    account_id: str
    open_items: list[QueueRow]
    closed_items: list[QueueRow]
    timeline: list[TimelineEntry]
    profile: AccountProfile | None
    default_hours: str
    default_timezone: str


def account_picture(*, session: Session, desk: Desk, account_id: str, now: datetime,
                    limit: int = 200) -> AccountPicture:
    account_id = vault_service.get_account(session=session, account_id=account_id,
                                           include_deleted=True).id
    # Every open item (bulk actions reach them all), and the newest closed ones.
    items = list(session.exec(select(WorkItem).where(
        WorkItem.account_id == account_id, col(WorkItem.is_open).is_(True))))
    items += session.exec(select(WorkItem).where(
        WorkItem.account_id == account_id, col(WorkItem.is_open).is_(False),
        col(WorkItem.deleted_at).is_(None))
        .order_by(col(WorkItem.created_at).desc()).limit(limit)).all()
    rows = _rows(session, desk, items, now)
    by_id = {row.item.id: row for row in rows}
    open_rows = sorted((row for row in rows if row.item.is_open),
                       key=lambda row: (row.item.priority, row.item.next_due))
    closed_rows = [row for row in rows if not row.item.is_open]
    timeline: list[TimelineEntry] = []
    for event in session.exec(select(ItemEvent).where(
            col(ItemEvent.item_id).in_(list(by_id)),
            col(ItemEvent.kind).in_(("created", "reply", "status", "merge", "handoff")))
            .order_by(col(ItemEvent.at).desc()).limit(limit)) if by_id else ():
        row = by_id[event.item_id]
        text = {"created": f"{row.item.kind.capitalize()} by {row.item.channel.replace('_', ' ')}"
                           f": {row.title}",
                "reply": f"Reply sent to the requester of “{row.title}”",
                "status": f"“{row.title}”: {event.detail.replace('_', ' ')}",
                "merge": f"“{row.title}”: {event.detail}",
                "handoff": f"“{row.title}” handed on: {event.detail}"}[event.kind]
        timeline.append(TimelineEntry(event.at, event.kind, text,
                                      f"/console/items/{event.item_id}"))
    for exchange in intake_service.exchanges_of_account(session=session,
                                                        account_id=account_id):
        text = {"received": f"Request {exchange.reference} received from the public form",
                "customer": f"The customer wrote again on {exchange.reference}",
                "staff": f"Support replied on request {exchange.reference}"}[exchange.kind]
        timeline.append(TimelineEntry(exchange.at, "reply" if exchange.kind == "staff"
                                      else "request", text,
                                      f"/console/requests/{exchange.request_id}"))
    for update in incidents_service.updates_to_account(session=session,
                                                       account_id=account_id):
        sent = update.messages.get("sent", 0)
        queued = update.messages.get("queued", 0)
        timeline.append(TimelineEntry(
            update.published_at, "update",
            f"Update #{update.update_number} of “{update.incident_title}”: {sent} sent"
            + (f", {queued} queued" if queued else "")
            + (f", {update.messages['failed']} failed" if update.messages.get("failed") else ""),
            f"/console/incidents/{update.incident_id}"))
    timeline.sort(key=lambda entry: entry.at, reverse=True)
    return AccountPicture(account_id, open_rows, closed_rows, timeline[:limit],
                          _profiles(session, [account_id]).get(account_id),
                          desk.default_hours, desk.default_timezone)


def set_profile(*, session: Session, desk: Desk, actor: Actor, account_id: str, timezone: str,
                business_hours: str, now: datetime) -> AccountProfile:
    """The account's own time zone and business hours; its open items' targets follow."""
    account = vault_service.get_account(session=session, account_id=account_id)
    sla.BusinessHours.parse(business_hours, timezone)
    profile = session.get(AccountProfile, account.id) or AccountProfile(
        account_id=account.id, timezone=timezone, business_hours=business_hours,
        updated_at=now)
    profile.timezone, profile.business_hours, profile.updated_at = (
        timezone, " ".join(business_hours.lower().split()), now)
    session.add(profile)
    for item in session.exec(select(WorkItem).where(WorkItem.account_id == account.id,
                                                    col(WorkItem.is_open).is_(True))):
        if item.sla_business_hours and item.paused_at is None:
            _set_targets(desk, item, profile, now)
            session.add(item)
    audit.record(session, actor, "account.support_hours", target_kind="account",
                 target_id=account.id, timezone=timezone, business_hours=business_hours)
    return profile


# -- the support leads' dashboard ------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    by_priority: dict[int, int]
    by_status: dict[str, int]
    by_region: dict[str, int]
    at_risk: int
    breached: int
    top_accounts: list[tuple[str, str, int]]  # account ID, name, open items
    intake_per_hour: list[tuple[datetime, int]]
    handoffs: list[ShiftHandoff]


def dashboard(*, session: Session, desk: Desk, now: datetime, hours: int = 72) -> Dashboard:
    live = (col(WorkItem.deleted_at).is_(None), col(WorkItem.is_open).is_(True))

    def grouped(column) -> dict:
        return dict(session.exec(select(column, func.count()).where(*live)
                                 .group_by(column)).all())

    by_sla = grouped(WorkItem.sla_state)
    top = session.exec(select(WorkItem.account_id, func.count().label("n")).where(
        *live, col(WorkItem.account_id).is_not(None)).group_by(WorkItem.account_id)
        .order_by(func.count().desc()).limit(10)).all()
    names = vault_service.accounts_by_id(session=session, ids=[row[0] for row in top])
    start = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    created = session.exec(select(WorkItem.created_at).where(
        col(WorkItem.created_at) >= start, col(WorkItem.deleted_at).is_(None))).all()
    per_hour = {start + timedelta(hours=offset): 0 for offset in range(hours)}
    for moment in created:
        bucket = moment.replace(minute=0, second=0, microsecond=0)
        if bucket in per_hour:
            per_hour[bucket] += 1
    by_priority = grouped(WorkItem.priority)
    by_status = grouped(WorkItem.status)
    by_region = grouped(WorkItem.region)
    return Dashboard(
        by_priority={priority: by_priority.get(priority, 0) for priority in (1, 2, 3, 4)},
        by_status={status: by_status.get(status, 0) for status in OPEN_STATUSES},
        by_region={name: by_region.get(name, 0) for name in desk.rota.names},
        at_risk=by_sla.get("at_risk", 0), breached=by_sla.get("breached", 0),
        top_accounts=[(account_id, names[account_id].name if account_id in names
                       else account_id, count) for account_id, count in top],
        intake_per_hour=sorted(per_hour.items()),
        handoffs=recent_handoffs(session=session, limit=10))


def assignable_staff(*, session: Session, desk: Desk) -> list[staff_service.StaffView]:
    return [member for member in staff_service.list_staff(session=session, crypto=desk.crypto)
            if member.is_active and member.role in ASSIGNABLE_ROLES]

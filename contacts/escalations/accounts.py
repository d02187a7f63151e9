"""One account, one picture: its open and closed items and its timeline (items here,
requests and updates from their areas through the neighbours); its support hours."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.escalations import sla
from contacts.escalations.clock import profiles_of, set_targets
from contacts.escalations.desk import SupportDesk
from contacts.escalations.models import (
    AccountProfile,
    ItemEvent,
    WorkItem,
)
from contacts.escalations.neighbours import TimelineEntry
from contacts.escalations.queues import QueueRow, queue_rows
from contacts.vault import service as vault_service


@dataclass(frozen=True)
class AccountPicture:
    account_id: str
    open_items: list[QueueRow]
    closed_items: list[QueueRow]
    timeline: list[TimelineEntry]
    profile: AccountProfile | None
    default_hours: str
    default_timezone: str


def account_picture(*, session: Session, desk: SupportDesk, account_id: str, now: datetime,
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
    rows = queue_rows(session, desk, items, now)
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
    timeline += desk.neighbours.account_history(session, account_id)
    timeline.sort(key=lambda entry: entry.at, reverse=True)
    return AccountPicture(account_id, open_rows, closed_rows, timeline[:limit],
                          profiles_of(session, [account_id]).get(account_id),
                          desk.default_hours, desk.default_timezone)


def set_profile(*, session: Session, desk: SupportDesk, actor: Actor, account_id: str,
                timezone: str, business_hours: str, now: datetime) -> AccountProfile:
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
            set_targets(desk, item, profile, now)
            session.add(item)
    audit.record(session, actor, "account.support_hours", target_kind="account",
                 target_id=account.id, timezone=timezone, business_hours=business_hours)
    return profile

"""Queues of work items (filters, order, pages), saved views and the support leads'
dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from contacts.core.errors import Invalid, NotFound
from contacts.core.ids import parse_id
from contacts.escalations.clock import time_left
from contacts.escalations.desk import SupportDesk
from contacts.escalations.follow import recent_handoffs
from contacts.escalations.items import ASSIGNABLE_ROLES, check_priority, choice
from contacts.escalations.models import (
    CHANNELS,
    ITEM_TITLE,
    KINDS,
    OPEN_STATUSES,
    STATUSES,
    VERIFIED,
    SavedView,
    ShiftHandoff,
    WorkItem,
)
from contacts.escalations.neighbours import Person
from contacts.vault import service as vault_service


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


def check_filter(desk: SupportDesk, given: QueueFilter) -> QueueFilter:
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
        choice(given.channel, CHANNELS, "channel")
    if given.kind:
        choice(given.kind, KINDS, "kind")
    if given.priority is not None:
        check_priority(given.priority)
    if given.sla:
        choice(given.sla, ("ok", "at_risk", "breached"), "sla")
    return given


# Filters that keep the items whose column equals the value given.
EQUAL = {"region": WorkItem.region, "account": WorkItem.account_id,
         "incident": WorkItem.incident_id, "channel": WorkItem.channel, "kind": WorkItem.kind,
         "priority": WorkItem.priority, "sla": WorkItem.sla_state}


def _filtered(query, given: QueueFilter):
    if given.status == "open":  # a deleted item is never open: the queue index answers alone
        query = query.where(col(WorkItem.is_open).is_(True))
    else:
        query = query.where(col(WorkItem.deleted_at).is_(None))
        if given.status != "all":
            query = query.where(WorkItem.status == given.status)
    for name, column in EQUAL.items():
        if value := getattr(given, name):
            query = query.where(column == value)
    if given.owner == "none":
        query = query.where(col(WorkItem.owner_id).is_(None))
    elif given.owner:
        query = query.where(WorkItem.owner_id == given.owner)
    if given.verified is True:
        query = query.where(col(WorkItem.requester_verification).in_(VERIFIED))
    elif given.verified is False:
        query = query.where(or_(col(WorkItem.requester_verification).is_(None),
                                WorkItem.requester_verification == "unverified"))
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


def queue(*, session: Session, desk: SupportDesk, given: QueueFilter, now: datetime, page: int = 1,
          per_page: int = 50) -> Queue:
    """Items by priority, then the time left on their running SLA target."""
    matching = _filtered(select(WorkItem.id), given).limit(COUNT_CAP + 1).subquery()
    total = session.exec(select(func.count()).select_from(matching)).one()
    page = max(1, page)
    items = _in_queue_order(session, given, (page - 1) * per_page, per_page + 1)
    return Queue(queue_rows(session, desk, items[:per_page], now), min(total, COUNT_CAP),
                 total > COUNT_CAP, page, len(items) > per_page)


def queue_rows(session: Session, desk: SupportDesk, items: list[WorkItem],
               now: datetime) -> list[QueueRow]:
    accounts = vault_service.accounts_by_id(
        session=session, ids={item.account_id for item in items if item.account_id})
    owners = desk.neighbours.staff_by_id(
        session, [item.owner_id for item in items if item.owner_id])
    return [QueueRow(item, desk.open(item.title_encrypted, ITEM_TITLE),
                     accounts[item.account_id].name if item.account_id in accounts else None,
                     owners[item.owner_id].email if item.owner_id in owners else None,
                     time_left(item, now))
            for item in items]


def items_api(*, session: Session, desk: SupportDesk, given: QueueFilter, now: datetime,
              limit: int, offset: int) -> tuple[list[QueueRow], int]:
    total = session.exec(_filtered(select(func.count()).select_from(WorkItem), given)).one()
    return queue_rows(session, desk, _in_queue_order(session, given, offset, limit), now), total


def _in_queue_order(session: Session, given: QueueFilter, offset: int,
                    limit: int) -> list[WorkItem]:
    """By priority, then the time left on the running SLA target."""
    return list(session.exec(_filtered(select(WorkItem), given)
                             .order_by(WorkItem.priority, WorkItem.next_due,
                                       WorkItem.created_at).offset(offset).limit(limit)))


# -- saved views -----------------------------------------------------------------------------


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


def dashboard(*, session: Session, desk: SupportDesk, now: datetime, hours: int = 72) -> Dashboard:
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


def assignable_staff(*, session: Session, desk: SupportDesk) -> list[Person]:
    return [member for member in desk.neighbours.list_staff(session)
            if member.is_active and member.role in ASSIGNABLE_ROLES]

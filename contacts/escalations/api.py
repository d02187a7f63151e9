"""The escalations over JSON: work items, their workflow, links and merges, an account's
items and timeline, bulk actions and the dashboard. Reading needs `read`; everything that
changes an item needs `escalations:write`. Deleting stays in the console (admins only)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from flask import Blueprint, g
from pydantic import BaseModel, Field

from contacts.core.api import API_PREFIX, from_row, operation
from contacts.core.db import request_session, utcnow
from contacts.core.ids import AccountId, ContactId, IncidentId, ItemId, StaffId, typed_id
from contacts.escalations import service
from contacts.escalations.web import desk

bp = Blueprint("escalations_api", __name__, url_prefix=API_PREFIX)
StaffOrNone = typed_id("stf", or_also="none")  # the queue's owner filter
StaffOrBlank = typed_id("stf", or_also="")  # an owner change: empty unassigns

Kind = Literal["ticket", "escalation", "task"]
Channel = Literal["web_form", "email", "phone", "executive", "social", "partner", "internal"]
Status = Literal["new", "triaged", "in_progress", "waiting_on_customer", "resolved", "closed"]


class ItemOut(BaseModel):
    id: str
    account_id: str | None
    account_name: str | None
    kind: str
    channel: str
    title: str
    priority: int
    status: str
    owner_id: str | None
    region: str | None
    parent_id: str | None
    incident_id: str | None
    merged_into_id: str | None
    request_id: str | None
    requester_verification: str | None
    sla_state: str
    sla_business_hours: bool
    first_response_due: datetime
    first_response_at: datetime | None
    resolution_due: datetime
    seconds_left: int | None = Field(description="Until the running SLA target is due "
                                                 "(negative once missed); null while paused.")
    created_at: datetime
    updated_at: datetime


def _out(row: service.QueueRow) -> ItemOut:
    return from_row(ItemOut, row.item, account_name=row.account_name, title=row.title,
                    seconds_left=int(row.time_left.total_seconds())
                    if row.time_left is not None else None)


def _one(item) -> ItemOut:
    view = service.item_view(session=request_session(), desk=desk(), item=item, now=utcnow())
    return _out(service.QueueRow(item, view.title, view.account_name, view.owner_email,
                                 view.time_left))


class ItemList(BaseModel):
    items: list[ItemOut]
    total: int


class ItemQuery(BaseModel):
    status: str = Field(default="open", max_length=24,
                        description="open (default), all, or one status")
    region: str | None = Field(default=None, max_length=16)
    owner: StaffOrNone | None = Field(
        default=None, max_length=40, description="A staff ID, or none for unowned items")
    account: AccountId | None = Field(default=None, max_length=40)
    incident: IncidentId | None = Field(default=None, max_length=40)
    channel: Channel | None = None
    kind: Kind | None = None
    priority: int | None = Field(default=None, ge=1, le=4)
    verified: bool | None = None
    sla: Literal["ok", "at_risk", "breached"] | None = None
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=1_000_000)


@bp.get("/items")
@operation(scope="read", response=ItemList, query=ItemQuery, tags=("escalations",))
def list_items(query: ItemQuery):
    """The queue: by priority, then the time left on the running SLA target."""
    given = service.check_filter(desk(), service.QueueFilter(
        status=query.status, region=query.region, owner=query.owner, account=query.account,
        incident=query.incident, channel=query.channel, kind=query.kind,
        priority=query.priority, verified=query.verified, sla=query.sla))
    rows, total = service.items_api(session=request_session(), desk=desk(), given=given,
                                    now=utcnow(), limit=query.limit, offset=query.offset)
    return ItemList(items=[_out(row) for row in rows], total=total)


class ItemIn(BaseModel):
    account_id: AccountId | None = Field(default=None, max_length=40,
                                         description="Required for tickets and escalations.")
    kind: Kind
    channel: Channel
    title: str = Field(min_length=1, max_length=300)
    body: str | None = Field(default=None, max_length=20_000)
    priority: int = Field(default=3, ge=1, le=4)
    owner_id: StaffId | None = Field(default=None, max_length=40)
    region: str | None = Field(default=None, max_length=16)
    incident_id: IncidentId | None = Field(default=None, max_length=40)
    parent_id: ItemId | None = Field(default=None, max_length=40)
    parent_kind: Kind | None = Field(default=None, description="When given, the parent must "
                                                              "be of this kind (409 if not).")
    requester_contact_id: ContactId | None = Field(default=None, max_length=40)


@bp.post("/items")
@operation(scope="escalations:write", response=ItemOut, status=201, body=ItemIn,
           errors=(404, 409), tags=("escalations",))
def create_item(json: ItemIn):
    """Log a ticket, escalation or task (a phone call, an executive's email, a task)."""
    item = service.create_item(session=request_session(), desk=desk(), actor=g.actor,
                               new=service.NewItem(**json.model_dump()), now=utcnow())
    return _one(item), 201


class EventOut(BaseModel):
    at: datetime
    actor: str
    kind: str
    detail: str
    body: str | None


class ItemDetail(BaseModel):
    item: ItemOut
    body: str | None
    history: list[EventOut]
    children: list[str]


@bp.get("/items/<item_id>")
@operation(scope="read", response=ItemDetail, tags=("escalations",))
def get_item(item_id: str):
    """An item with its history. A merged item answers with `merged_into_id` set."""
    item = service.get_item(session=request_session(), item_id=item_id)
    view = service.item_view(session=request_session(), desk=desk(), item=item, now=utcnow())
    return ItemDetail(
        item=_out(service.QueueRow(item, view.title, view.account_name, view.owner_email,
                                   view.time_left)),
        body=view.body,
        history=[EventOut(at=event.at, actor=event.actor, kind=event.kind,
                          detail=event.detail, body=event.body) for event in view.history],
        children=[child.id for child in view.children])


class ItemChange(BaseModel):
    priority: int | None = Field(default=None, ge=1, le=4)
    owner_id: StaffOrBlank | None = Field(
        default=None, max_length=40, description="A support staff ID; empty string unassigns.")
    region: str | None = Field(default=None, max_length=16)


@bp.patch("/items/<item_id>")
@operation(scope="escalations:write", response=ItemOut, body=ItemChange, errors=(409,),
           tags=("escalations",))
def change_item(item_id: str, json: ItemChange):
    session, now = request_session(), utcnow()
    if json.priority is not None:
        service.set_priority(session=session, desk=desk(), actor=g.actor, item_id=item_id,
                             priority=json.priority, now=now)
    if json.owner_id is not None:
        service.assign(session=session, desk=desk(), actor=g.actor, item_id=item_id,
                       owner_id=json.owner_id or None, now=now)
    if json.region is not None:
        service.set_region(session=session, desk=desk(), actor=g.actor, item_id=item_id,
                           region=json.region, now=now)
    return _one(service.get_item(session=session, item_id=item_id))


class TransitionIn(BaseModel):
    status: Status
    note: str | None = Field(default=None, max_length=2000)


@bp.post("/items/<item_id>/transitions")
@operation(scope="escalations:write", response=ItemOut, body=TransitionIn, errors=(409,),
           tags=("escalations",))
def transition(item_id: str, json: TransitionIn):
    """Move the item along its workflow; a move the workflow does not allow is 409, naming
    the moves it does allow. Resolving an item resolves its linked children."""
    item = service.change_status(session=request_session(), desk=desk(), actor=g.actor,
                                 item_id=item_id, status=json.status, note=json.note,
                                 now=utcnow())
    return _one(item)


class CommentIn(BaseModel):
    body: str = Field(min_length=1, max_length=20_000)
    reply: bool = Field(default=False, description="true: emailed to the requester; "
                                                   "false: an internal note.")


@bp.post("/items/<item_id>/comments")
@operation(scope="escalations:write", response=ItemOut, body=CommentIn, errors=(409,),
           tags=("escalations",))
def add_comment(item_id: str, json: CommentIn):
    action = service.reply if json.reply else service.comment
    item = action(session=request_session(), desk=desk(), actor=g.actor, item_id=item_id,
                  body=json.body, now=utcnow())
    return _one(item)


class LinkIn(BaseModel):
    parent_id: ItemId | None = Field(default=None, max_length=40)
    parent_kind: Kind | None = Field(default=None, description="The kind the parent must be.")
    incident_id: IncidentId | None = Field(default=None, max_length=40)


@bp.post("/items/<item_id>/links")
@operation(scope="escalations:write", response=ItemOut, body=LinkIn, errors=(409,),
           tags=("escalations",))
def link_item(item_id: str, json: LinkIn):
    """Link under a parent item and/or to an incident. An ID of another kind than the field
    expects is refused (400 naming both kinds); a parent of another kind than declared, 409."""
    item = service.link(session=request_session(), desk=desk(), actor=g.actor,
                        item_id=item_id, now=utcnow(), parent_id=json.parent_id,
                        parent_kind=json.parent_kind, incident_id=json.incident_id)
    return _one(item)


class MergeIn(BaseModel):
    into_id: ItemId = Field(max_length=40)


@bp.post("/items/<item_id>/merge")
@operation(scope="escalations:write", response=ItemOut, body=MergeIn, errors=(409,),
           tags=("escalations",))
def merge_item(item_id: str, json: MergeIn):
    """Merge this duplicate into another item of the same account; answers the survivor."""
    survivor = service.merge(session=request_session(), desk=desk(), actor=g.actor,
                             item_id=item_id, into_id=json.into_id, now=utcnow())
    return _one(survivor)


class BulkIn(BaseModel):
    items: list[ItemId] = Field(min_length=1, max_length=500)
    action: Literal["status", "assign", "link", "reply"]
    status: Status | None = None
    owner_id: StaffId | None = Field(default=None, max_length=40)
    incident_id: IncidentId | None = Field(default=None, max_length=40)
    parent_id: ItemId | None = Field(default=None, max_length=40)
    body: str | None = Field(default=None, max_length=20_000)


class BulkOut(BaseModel):
    changed: int


@bp.post("/accounts/<account_id>/items/bulk")
@operation(scope="escalations:write", response=BulkOut, body=BulkIn, errors=(409,),
           tags=("escalations",))
def bulk(account_id: str, json: BulkIn):
    """One action on many items of the account; one refusal refuses all (nothing changes).
    `reply` goes to the verified requesters among them."""
    changed = service.bulk(session=request_session(), desk=desk(), actor=g.actor,
                           account_id=account_id, item_ids=json.items, action=json.action,
                           now=utcnow(), status=json.status, owner_id=json.owner_id,
                           incident_id=json.incident_id, parent_id=json.parent_id,
                           body=json.body)
    return BulkOut(changed=changed)


class TimelineOut(BaseModel):
    at: datetime
    kind: str
    text: str


class AccountWork(BaseModel):
    account_id: str
    open_items: list[ItemOut]
    closed_items: list[ItemOut]
    timeline: list[TimelineOut]


@bp.get("/accounts/<account_id>/items")
@operation(scope="read", response=AccountWork, tags=("escalations",))
def account_items(account_id: str):
    """One account, one picture: its open and closed items and its timeline."""
    picture = service.account_picture(session=request_session(), desk=desk(),
                                      account_id=account_id, now=utcnow())
    return AccountWork(account_id=picture.account_id,
                       open_items=[_out(row) for row in picture.open_items],
                       closed_items=[_out(row) for row in picture.closed_items],
                       timeline=[TimelineOut(at=entry.at, kind=entry.kind, text=entry.text)
                                 for entry in picture.timeline])


class DashboardOut(BaseModel):
    by_priority: dict[str, int]
    by_status: dict[str, int]
    by_region: dict[str, int]
    at_risk: int
    breached: int
    top_accounts: list[dict]
    intake_per_hour: list[dict]


@bp.get("/escalations/dashboard")
@operation(scope="read", response=DashboardOut, tags=("escalations",))
def dashboard():
    board = service.dashboard(session=request_session(), desk=desk(), now=utcnow())
    return DashboardOut(
        by_priority={f"P{priority}": count for priority, count in board.by_priority.items()},
        by_status=board.by_status, by_region=board.by_region, at_risk=board.at_risk,
        breached=board.breached,
        top_accounts=[{"account_id": account_id, "name": name, "open_items": count}
                      for account_id, name, count in board.top_accounts],
        intake_per_hour=[{"hour": hour.isoformat(), "items": count}
                         for hour, count in board.intake_per_hour])

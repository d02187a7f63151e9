"""Work items (tickets, escalations, tasks) under one account, the history of each, the
hand-offs between regions, saved queue views and each account's support hours. Account,
request, incident and contact IDs are other domains', held without foreign keys."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, ForeignKey, Index, String, Text
from sqlmodel import Field, SQLModel

from contacts.core.crypto import encrypted_column
from contacts.core.db import utc_column

KINDS = ("ticket", "escalation", "task")
CHANNELS = ("web_form", "email", "phone", "executive", "social", "partner", "internal")
STATUSES = ("new", "triaged", "in_progress", "waiting_on_customer", "resolved", "closed")
OPEN_STATUSES = ("new", "triaged", "in_progress", "waiting_on_customer")
# The workflow: each status and the ones it may move to.
TRANSITIONS = {
    "new": ("triaged", "in_progress"),
    "triaged": ("in_progress", "waiting_on_customer", "resolved"),
    "in_progress": ("triaged", "waiting_on_customer", "resolved"),
    "waiting_on_customer": ("in_progress", "resolved"),
    "resolved": ("closed", "in_progress"),
    "closed": (),
}
PRIORITIES = (1, 2, 3, 4)
SLA_STATES = ("ok", "at_risk", "breached")
# Requesters whose address or identity was proven: replies and bulk replies go to them.
VERIFIED = ("email_verified", "authorized", "callback_confirmed")
# The next due time of an item whose clock is stopped (waiting on the customer, or done).
PAUSED = datetime(9000, 1, 1, tzinfo=UTC)


class WorkItem(SQLModel, table=True):
    __tablename__ = "work_item"
    __table_args__ = (
        Index("ix_work_item_queue", "is_open", "priority", "next_due"),
        Index("ix_work_item_account", "account_id", "created_at"),
        Index("ix_work_item_due", "sla_state", "next_due"),
        Index("ix_work_item_risk", "sla_state", "next_risk_at"),
        Index("ix_work_item_region", "region", "is_open"),
    )

    id: str = Field(primary_key=True, max_length=40)
    account_id: str | None = Field(default=None, max_length=40)
    kind: str = Field(max_length=16)
    channel: str = Field(max_length=16)
    # Staff and customers write names and addresses into both: sealed like the vault's fields.
    title_encrypted: str = Field(max_length=2048)
    body_encrypted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    priority: int = Field(default=3)
    status: str = Field(default="new", max_length=24)
    is_open: bool = Field(default=True)  # status is new, triaged, in progress or waiting
    owner_id: str | None = Field(default=None, max_length=40, index=True)
    region: str | None = Field(default=None, max_length=16)
    parent_id: str | None = Field(default=None, max_length=40, index=True)
    incident_id: str | None = Field(default=None, max_length=40, index=True)
    merged_into_id: str | None = Field(default=None, max_length=40)
    # A ticket opened from the public form follows its support request.
    request_id: str | None = Field(default=None, max_length=40, unique=True)
    request_changed_at: datetime | None = Field(default=None,
                                                sa_column=utc_column(nullable=True, index=True))
    requester_contact_id: str | None = Field(default=None, max_length=40)
    # unverified, email_verified, authorized, callback_confirmed (None: an internal task)
    requester_verification: str | None = Field(default=None, max_length=24)
    created_at: datetime = Field(sa_column=utc_column())
    created_by: str = Field(max_length=40)
    updated_at: datetime = Field(sa_column=utc_column())
    # The last time staff did something on the item: a shift change hands on the idle ones.
    last_worked_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    # SLA: the targets of the item's priority, as times; each "risk" time is when the item
    # turns at risk. Stored so the SLA job and the queue order are plain index reads.
    sla_business_hours: bool = Field(default=False)
    first_response_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    first_response_due: datetime = Field(sa_column=utc_column())
    first_response_risk_at: datetime = Field(sa_column=utc_column())
    resolution_due: datetime = Field(sa_column=utc_column())
    resolution_risk_at: datetime = Field(sa_column=utc_column())
    # While waiting on the customer the resolution clock stops; the minutes it stood still
    # (in the policy's time) push the resolution target back.
    paused_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    paused_minutes: float = Field(default=0.0)
    # The target running now (first response until there is one, then resolution): the
    # queue's second sort key and what the SLA job watches. PAUSED while the clock stops.
    next_due: datetime = Field(sa_column=utc_column())
    next_risk_at: datetime = Field(sa_column=utc_column())
    sla_state: str = Field(default="ok", max_length=16)
    resolved_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    closed_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    deleted_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    deleted_by: str | None = Field(default=None, max_length=40)


class ItemEvent(SQLModel, table=True):
    """Every change and comment on an item, in order: its history."""

    __tablename__ = "item_event"

    id: int | None = Field(default=None, primary_key=True)
    item_id: str = Field(sa_column=Column(String(40), ForeignKey("work_item.id"),
                                          nullable=False, index=True))
    at: datetime = Field(sa_column=utc_column())
    actor: str = Field(max_length=40)  # a staff or token ID, or "system"
    kind: str = Field(max_length=24)  # created, status, priority, owner, region, comment, ...
    # What changed, in words without personal data ("new -> triaged", "P3 -> P1").
    detail: str = Field(default="", max_length=500)
    # Comments, replies and notes, sealed.
    body_encrypted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # A customer's email (a customer_reply): its Message-ID, sealed, which support's answer
    # names (In-Reply-To), so the customer's mail client threads it under their message.
    message_ref_encrypted: str | None = Field(default=None,
                                              sa_column=Column(Text, nullable=True))


class ShiftHandoff(SQLModel, table=True):
    """One shift change: the region going off shift handed its idle open items on."""

    __tablename__ = "shift_handoff"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=utc_column(index=True))
    from_region: str = Field(max_length=16)
    to_region: str = Field(max_length=16)
    items: int = Field(default=0)
    note: str = Field(default="", max_length=2000)


class SavedView(SQLModel, table=True):
    """A queue filter a staff member saved under a name."""

    __tablename__ = "saved_view"

    id: int | None = Field(default=None, primary_key=True)
    staff_id: str = Field(max_length=40, index=True)
    name: str = Field(max_length=80)
    query: str = Field(max_length=1000)  # the queue's query string: region=EMEA&priority=1


class AccountProfile(SQLModel, table=True):
    """An account's own support hours, where it has them (else the configured defaults)."""

    __tablename__ = "account_profile"

    account_id: str = Field(primary_key=True, max_length=40)
    timezone: str = Field(max_length=64)
    business_hours: str = Field(max_length=64)  # "mon-fri 09:00-17:00"
    updated_at: datetime = Field(sa_column=utc_column())


ITEM_TITLE = encrypted_column(WorkItem.__table__, "title_encrypted", "work_item.title")
ITEM_BODY = encrypted_column(WorkItem.__table__, "body_encrypted", "work_item.body")
EVENT_BODY = encrypted_column(ItemEvent.__table__, "body_encrypted", "item_event.body")
EVENT_MESSAGE_REF = encrypted_column(ItemEvent.__table__, "message_ref_encrypted",
                                     "item_event.message_ref")

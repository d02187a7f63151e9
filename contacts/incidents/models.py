"""Incidents, the sites they affect and each site's restore stage (with its history), and
the updates published about them. Account and site IDs are the vault's, held without
foreign keys (the vault may purge; the record of what was said must stay)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, ForeignKey, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from contacts.core.crypto import encrypted_column
from contacts.core.db import utc_column

STATES = ("investigating", "identified", "monitoring", "resolved", "post_incident_review")
SEVERITIES = ("minor", "major", "critical")
CONFIDENCE = ("low", "medium", "high")



class Incident(SQLModel, table=True):
    __tablename__ = "incident"

    id: str = Field(primary_key=True, max_length=40)
    title: str = Field(max_length=200)
    state: str = Field(max_length=24)
    severity: str = Field(max_length=16)
    started_at: datetime = Field(sa_column=utc_column())
    created_at: datetime = Field(sa_column=utc_column())
    updated_at: datetime = Field(sa_column=utc_column())
    # When customers were promised the next update; None once resolved.
    next_update_due: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    last_update_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    # Every this many hours, until resolved, the latest update goes out again with the
    # progress as it then stands. None: updates only when staff publish one.
    cadence_hours: float | None = Field(default=None)
    # The promised time the comms team was last warned about, so each miss warns once.
    late_warned_for: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    created_by: str = Field(max_length=40)


class AffectedSite(SQLModel, table=True):
    """A site an incident affects, and the restore stage it has reached."""

    __tablename__ = "affected_site"
    __table_args__ = (Index("ix_affected_site_account", "incident_id", "account_id"),
                      Index("ix_affected_site_by_account", "account_id"))

    incident_id: str = Field(sa_column=Column(String(40), ForeignKey("incident.id"),
                                              primary_key=True))
    site_id: str = Field(sa_column=Column(String(40), primary_key=True))
    account_id: str = Field(max_length=40)
    stage: str = Field(max_length=32)
    stage_at: datetime = Field(sa_column=utc_column())


class StageChange(SQLModel, table=True):
    """Every stage a site reached, when and from whom: the restore curve's history."""

    __tablename__ = "stage_change"
    __table_args__ = (Index("ix_stage_change_incident_at", "incident_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(max_length=40)
    site_id: str = Field(max_length=40)
    stage: str = Field(max_length=32)
    at: datetime = Field(sa_column=utc_column())
    source: str = Field(max_length=64)  # "token tok_...", "staff stf_..."


class IncidentUpdate(SQLModel, table=True):
    """What was told, field by field: an update cannot be published with one missing."""

    __tablename__ = "incident_update"
    __table_args__ = (UniqueConstraint("incident_id", "number", name="uq_update_number"),)

    id: str = Field(primary_key=True, max_length=40)
    incident_id: str = Field(sa_column=Column(String(40), ForeignKey("incident.id"),
                                              nullable=False, index=True))
    number: int
    state: str = Field(max_length=24)
    what_happened: str = Field(sa_column=Column(Text, nullable=False))
    scope: str = Field(sa_column=Column(Text, nullable=False))
    accounts_affected: int
    sites_affected: int
    timeline: str = Field(sa_column=Column(Text, nullable=False))
    next_update_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    restore_percentage: float
    restore_note: str | None = Field(default=None, max_length=500)  # set when overridden
    data_loss: str = Field(sa_column=Column(Text, nullable=False))
    # {"timeline": "medium", "restore": "high", "data_loss": "low"}
    confidence: dict = Field(sa_column=Column(JSON, nullable=False))
    support: str = Field(max_length=500)
    published_at: datetime = Field(sa_column=utc_column(index=True))
    published_by: str = Field(max_length=40)
    recipients: int = Field(default=0)
    # Saved templates that failed for some audiences, who got the default instead:
    # [{"kind", "locale", "audiences", "error"}]; None when every template rendered.
    template_failures: list | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class MessageTemplate(SQLModel, table=True):
    """A template comms staff wrote (sandboxed Jinja2), versioned per kind and locale; the
    newest version of each is the one used. Without one, the file under
    templates/messages/incident_update/ is."""

    __tablename__ = "message_template"
    __table_args__ = (UniqueConstraint("kind", "locale", "version", name="uq_template_version"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)  # email_subject, email_text, email_html, public
    locale: str = Field(max_length=8)
    version: int
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_by: str = Field(max_length=40)
    created_at: datetime = Field(sa_column=utc_column())


class UpdateFallback(SQLModel, table=True):
    """An account none of whose contacts an update's email reached (every one refused or
    given up): it falls back to a call by support (a task in the escalations queue)."""

    __tablename__ = "update_fallback"

    update_id: str = Field(sa_column=Column(String(40), ForeignKey("incident_update.id"),
                                            primary_key=True))
    account_id: str = Field(sa_column=Column(String(40), primary_key=True))
    incident_id: str = Field(max_length=40, index=True)
    contacts_failed: int
    at: datetime = Field(sa_column=utc_column())


class UpdateFanout(SQLModel, table=True):
    """An update's audience, queued in the outbox a batch at a time by a job after the
    update is published: where it stands. Each batch and its cursor commit together, so a
    crash resumes where it stopped, queuing no recipient twice and skipping none."""

    __tablename__ = "update_fanout"
    __table_args__ = (Index("ix_update_fanout_pending", "finished_at", "lease_until"),)

    update_id: str = Field(sa_column=Column(String(40), ForeignKey("incident_update.id"),
                                            primary_key=True))
    incident_id: str = Field(max_length=40, index=True)
    # contacts (the affected accounts', an account per step of the keyset), webhooks,
    # subscribers (by ID), done.
    phase: str = Field(default="contacts", max_length=16)
    after: str | None = Field(default=None, max_length=40)  # the last account or subscriber
    audience: int | None = None  # counted by the job's first batch
    queued: int = 0
    batches: int = 0
    lease_until: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    created_at: datetime = Field(sa_column=utc_column())
    finished_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class Subscriber(SQLModel, table=True):
    """Someone who asked for updates by email on the public page (double opt-in)."""

    __tablename__ = "status_subscriber"

    id: int | None = Field(default=None, primary_key=True)
    email_encrypted: str = Field(max_length=1024)
    email_index: str = Field(max_length=64, unique=True)
    locale: str = Field(max_length=8)
    created_at: datetime = Field(sa_column=utc_column())
    confirmed_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    unsubscribed_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


SUBSCRIBER_EMAIL = encrypted_column(Subscriber.__table__, "email_encrypted",
                                    "status_subscriber.email")

"""Support requests as received from the public form and API, the accounts matching
proposes for them, and the messages exchanged. Everything the requester typed is stored
encrypted; the email and phone are found by blind index."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Index, String, Text
from sqlmodel import Field, SQLModel

from contacts.core.crypto import encrypted_column
from contacts.core.db import UTCDateTime, utc_column, utcnow

SEVERITIES = {
    "critical": "My site or its data is gone",
    "high": "Something important is broken",
    "normal": "Something is not working right",
    "low": "A question",
}
# From least to most trusted; each level drives the queue, the SLA and what the requester sees.
LEVELS = ("unverified", "email_verified", "authorized", "callback_confirmed")
# The queue priority a request starts at (1 first); trust can raise it (see trust.py).
SEVERITY_PRIORITY = {"critical": 1, "high": 2, "normal": 3, "low": 4}



class SupportRequest(SQLModel, table=True):
    __tablename__ = "support_request"
    __table_args__ = (
        Index("ix_support_request_queue", "status", "trust_rank", "priority", "received_at"),
        Index("ix_support_request_pending", "processed_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    reference: str = Field(max_length=16, unique=True)  # LL-7KQ2-9XHD, what the customer quotes
    received_at: datetime = Field(sa_column=utc_column())  # when the customer sent it
    stored_at: datetime = Field(sa_column=utc_column())  # later when it waited in the spool
    locale: str = Field(max_length=8)
    # How it came: "web" (the form and the API) or "email" (a message to a support address).
    channel: str = Field(default="web", max_length=16,
                         sa_column_kwargs={"server_default": "web"})
    inbound_id: str | None = Field(default=None, max_length=40)  # the email it came as
    severity: str = Field(max_length=16)
    email_encrypted: str = Field(max_length=1024)
    email_index: str = Field(max_length=64, index=True)
    domain_index: str = Field(max_length=64, index=True)
    phone_encrypted: str | None = Field(default=None, max_length=256)
    name_encrypted: str | None = Field(default=None, max_length=1024)
    company_encrypted: str | None = Field(default=None, max_length=1024)
    site_encrypted: str | None = Field(default=None, max_length=2048)
    message_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="open", max_length=16)  # open, closed
    verification: str = Field(default="unverified", max_length=24)
    # 0 for authorized or called back, 1 for a verified email, 2 for unverified: the queue's
    # first sort key, so proof of who is asking comes before anything they claim.
    trust_rank: int = Field(default=2)
    priority: int = Field(default=3)  # 1 (highest) to 4
    verified_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    code_digest: str | None = Field(default=None, max_length=64)
    code_expires_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    code_attempts: int = Field(default=0)
    codes_sent: int = Field(default=1)
    # The account the request is about: proposed by matching or attached by staff. No foreign
    # key: the vault may purge an account for good, and the request must stay.
    account_id: str | None = Field(default=None, max_length=40, index=True)
    account_source: str | None = Field(default=None, max_length=16)  # match, staff
    # The vault contact the verified email belongs to, when it is one of the account's.
    contact_id: str | None = Field(default=None, max_length=40)
    contact_role: str | None = Field(default=None, max_length=16)
    processed_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    callback_by: str | None = Field(default=None, max_length=40)
    callback_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    # Stamped when stored and by every change after: the escalations domain follows requests
    # by this time (its tickets take the account, trust and priority from them).
    changed_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True,
                                                  onupdate=utcnow))


class RequestCandidate(SQLModel, table=True):
    """An account matching proposes for a request, with its score and the reasons."""

    __tablename__ = "request_candidate"

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(sa_column=Column(String(40), ForeignKey("support_request.id"),
                                             nullable=False, index=True))
    account_id: str = Field(max_length=40)
    score: float
    reasons: str = Field(max_length=1000)  # "email is a site admin; site hostname", no PII


class RequestMessage(SQLModel, table=True):
    """The conversation on a request: the customer's first message, replies both ways."""

    __tablename__ = "request_message"

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(sa_column=Column(String(40), ForeignKey("support_request.id"),
                                             nullable=False, index=True))
    # customer (the requester), staff, other (someone else wrote on the thread: kept, marked,
    # acts as nobody), auto (an automatic reply: out of office...)
    author: str = Field(max_length=16)
    staff_id: str | None = Field(default=None, max_length=40)
    channel: str = Field(default="web", max_length=16,  # web, email
                         sa_column_kwargs={"server_default": "web"})
    # The inbound email it came in (inm_...), whose page shows it whole with its attachments,
    # and that email's Message-ID, sealed: support's answer names it (In-Reply-To).
    inbound_id: str | None = Field(default=None, max_length=40)
    message_ref_encrypted: str | None = Field(default=None,
                                              sa_column=Column(Text, nullable=True))
    body_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    at: datetime = Field(sa_column=utc_column())


REQUEST_EMAIL = encrypted_column(SupportRequest.__table__, "email_encrypted", "request.email")
REQUEST_PHONE = encrypted_column(SupportRequest.__table__, "phone_encrypted", "request.phone")
REQUEST_NAME = encrypted_column(SupportRequest.__table__, "name_encrypted", "request.name")
REQUEST_COMPANY = encrypted_column(SupportRequest.__table__, "company_encrypted",
                                   "request.company")
REQUEST_SITE = encrypted_column(SupportRequest.__table__, "site_encrypted", "request.site")
REQUEST_MESSAGE = encrypted_column(SupportRequest.__table__, "message_encrypted",
                                   "request.message")
MESSAGE_BODY = encrypted_column(RequestMessage.__table__, "body_encrypted",
                                "request_message.body")
MESSAGE_REF = encrypted_column(RequestMessage.__table__, "message_ref_encrypted",
                               "request_message.message_ref")

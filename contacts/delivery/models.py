"""The outbox: one row per message to send, written in the same transaction as the change
that calls for it, so a message is neither lost with a rollback nor sent for a change that
never happened; and the accounts' webhook endpoints, with their secrets and quarantine."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text, text
from sqlmodel import Field, SQLModel

from contacts.core.crypto import encrypted_column
from contacts.core.db import utc_column

STATES = ("queued", "sent", "failed")
# Why a message is not (yet) sent: its recipient's address was refused for good (`bounced`),
# the message or endpoint was refused for good (`refused`), it waits for a retry after a
# temporary failure (`deferred`), or it ran out of attempts or time (`expired`).
FAILURES = ("bounced", "refused", "deferred", "expired")


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox_message"
    # Each delivery lane claims its own channel's due messages through this index.
    __table_args__ = (
        Index("ix_outbox_message_due", "state", "channel", "next_attempt_at"),
        # The webhook lane sends an endpoint's messages one at a time, in order: it asks
        # whether an earlier one of the same endpoint is still queued.
        Index("ix_outbox_message_endpoint", "endpoint_id", "state", "id"),
        # Counts per update, an incident's proof: what a message is about.
        Index("ix_outbox_message_about", "about_kind", "about_id", "state"),
        # An account's messages, for its page and timeline.
        Index("ix_outbox_message_account", "account_id", "about_kind", "about_id", "state"),
        # Bounces (and other failures) since a time, read by jobs every few seconds; only
        # failed or deferred rows are in it, so queuing a message costs it nothing.
        Index("ix_outbox_message_failure", "failure", "created_at",
              postgresql_where=text("failure IS NOT NULL"),
              sqlite_where=text("failure IS NOT NULL")),
        # A purged contact's messages lose their sealed copy of its address.
        Index("ix_outbox_message_recipient", "recipient_kind", "recipient_id"),
        # Retention walks the old messages.
        Index("ix_outbox_message_created", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # Idempotency: the same key is enqueued once, whatever retries the caller makes.
    key: str = Field(max_length=120, unique=True)
    channel: str = Field(max_length=16)  # email or webhook: the lane that sends it
    # A webhook's endpoint (whk_...): its URL and current secret are read when it is sent.
    endpoint_id: str | None = Field(default=None, max_length=40)
    # What the message is for, for the console and the logs; never personal data.
    purpose: str = Field(max_length=64)
    # What the message is about (update, request, item, incident, confirmation,
    # subscription, handoff) and its ID; and for whom: the account, if any, and the kind of
    # recipient (contact, subscriber, webhook, requester, staff, inbox) with its ID. IDs
    # only: never an address.
    about_kind: str = Field(max_length=16)
    about_id: str = Field(max_length=64)
    account_id: str | None = Field(default=None, max_length=40)
    recipient_kind: str = Field(max_length=16)
    recipient_id: str | None = Field(default=None, max_length=64)
    # The recipient and the whole message, sealed: they hold addresses and one-time codes.
    # Dropped (NULL) after the retention, or when the vault purges the recipient: what is
    # left says who, by ID, was told what and when.
    payload_encrypted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    state: str = Field(default="queued", max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(sa_column=utc_column())
    # A claimed message is not claimed again before this time: a sender that died while
    # sending leaves it to be retried, not lost.
    lease_until: datetime | None = Field(default=None,
                                         sa_column=utc_column(nullable=True))
    last_error: str | None = Field(default=None, max_length=500)
    failure: str | None = Field(default=None, max_length=16)  # one of FAILURES
    created_at: datetime = Field(sa_column=utc_column())
    sent_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


OUTBOX_PAYLOAD = encrypted_column(OutboxMessage.__table__, "payload_encrypted",
                                  "outbox_message.payload")


class WebhookEndpoint(SQLModel, table=True):
    """Where an account's systems receive its updates: a POST per update, signed when sent
    (Standard Webhooks) with the endpoint's current secret. An account may have several."""

    __tablename__ = "webhook_endpoint"

    id: str = Field(primary_key=True, max_length=40)  # whk_...
    account_id: str = Field(max_length=40, index=True)
    url: str = Field(max_length=2048)
    # "whsec_<base64 of 32 random bytes>"; an endpoint saved before Standard Webhooks holds
    # its older secret (no prefix) until it is rotated, and is also sent the old header.
    secret_encrypted: str = Field(max_length=512)
    created_by: str = Field(max_length=40)
    created_at: datetime = Field(sa_column=utc_column())
    rotated_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    # Set when a message to it failed for good; updates skip it until it is saved again.
    quarantined_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


# The context of the column it was first sealed in: the migration moved the sealed secrets
# here as they were (it holds no key to seal them again).
WEBHOOK_SECRET = encrypted_column(WebhookEndpoint.__table__, "secret_encrypted",
                                  "account_webhook.secret")

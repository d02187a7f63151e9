"""The outbox: one row per message to send, written in the same transaction as the change
that calls for it, so a message is neither lost with a rollback nor sent for a change that
never happened; and each account's webhook endpoint, with its secret and its quarantine."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from contacts.core.crypto import encrypted_column
from contacts.core.db import utc_column

STATES = ("queued", "sent", "failed")


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox_message"
    # Each delivery lane claims its own channel's due messages through this index.
    __table_args__ = (Index("ix_outbox_message_due", "state", "channel", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    # Idempotency: the same key is enqueued once, whatever retries the caller makes.
    key: str = Field(max_length=120, unique=True)
    channel: str = Field(max_length=16)  # email or webhook: the lane that sends it
    # What the message is for, for the console and the logs; never personal data.
    purpose: str = Field(max_length=64)
    # The recipient and the whole message, sealed: they hold addresses and one-time codes.
    payload_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    state: str = Field(default="queued", max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(sa_column=utc_column())
    # A claimed message is not claimed again before this time: a sender that died while
    # sending leaves it to be retried, not lost.
    lease_until: datetime | None = Field(default=None,
                                         sa_column=utc_column(nullable=True))
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(sa_column=utc_column())
    sent_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


OUTBOX_PAYLOAD = encrypted_column(OutboxMessage.__table__, "payload_encrypted",
                                  "outbox_message.payload")


class AccountWebhook(SQLModel, table=True):
    """Where an account's systems receive its updates: a signed POST per update."""

    __tablename__ = "account_webhook"

    account_id: str = Field(primary_key=True, max_length=40)
    url: str = Field(max_length=2048)
    secret_encrypted: str = Field(max_length=512)
    created_by: str = Field(max_length=40)
    created_at: datetime = Field(sa_column=utc_column())
    # Set when a message to it failed for good; updates skip it until it is saved again.
    quarantined_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


WEBHOOK_SECRET = encrypted_column(AccountWebhook.__table__, "secret_encrypted",
                                  "account_webhook.secret")

"""What inbound mail leaves in the database: one row per message read from a mailbox (its
mailbox UID, the whole message sealed, what the router did with it) and its attachments,
sealed. Plain text exists only in memory while a message is handled."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from contacts.core.crypto import FieldCipher, encrypted_column
from contacts.core.db import utc_column

STATES = ("processed", "failed")
# What the router did with a processed message (`store_only` stores it, nothing more).
OUTCOMES = ("reply", "request", "bounce", "delay", "complaint", "auto_reply", "duplicate",
            "ignored", "stored")


class InboundMessage(SQLModel, table=True):
    __tablename__ = "inbound_message"
    __table_args__ = (
        # A mailbox's message is known by its UID under the folder's UIDVALIDITY: two
        # readers (or one that crashed before moving it) never process it twice.
        UniqueConstraint("mailbox", "uidvalidity", "uid", name="uq_inbound_message_uid"),
        # The same message delivered again (another UID, a new UIDVALIDITY) is known by it.
        Index("ix_inbound_message_message_id", "mailbox", "message_id_digest"),
        # An account's inbound mail, for its timeline.
        Index("ix_inbound_message_account", "account_id", "stored_at"),
    )

    id: str = Field(primary_key=True, max_length=40)  # inm_...
    mailbox: str = Field(max_length=64)  # `[inbound] mailboxes` name
    uidvalidity: int = Field(sa_column=Column(BigInteger, nullable=False))
    uid: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Keyed digest (blind index, purpose "inbound.message_id") of the Message-ID header.
    message_id_digest: str | None = Field(default=None, max_length=64)
    received_at: datetime = Field(sa_column=utc_column())  # the server's INTERNALDATE
    stored_at: datetime = Field(sa_column=utc_column())
    size: int  # bytes, as the server gave them
    # The whole message, sealed (`seal_raw`); None when it was too large to read.
    raw_encrypted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    state: str = Field(max_length=16)  # one of STATES
    outcome: str | None = Field(default=None, max_length=24)  # one of OUTCOMES
    # Why it failed: "too large" or an exception's class name; never personal data.
    error: str | None = Field(default=None, max_length=200)

    # Filled by the router: the thread it joined (kind and ID), who it is from and about.
    thread_kind: str | None = Field(default=None, max_length=16)
    thread_id: str | None = Field(default=None, max_length=40)
    account_id: str | None = Field(default=None, max_length=40)
    request_id: str | None = Field(default=None, max_length=40, index=True)
    item_id: str | None = Field(default=None, max_length=40, index=True)
    contact_id: str | None = Field(default=None, max_length=40)
    sender_index: str | None = Field(default=None, max_length=64, index=True)  # From, blind
    sender_verified: bool = Field(default=False)
    sender_is_party: bool | None = Field(default=None)
    automatic: str | None = Field(default=None, max_length=24)
    channel: str = Field(default="email", max_length=16)
    subject_encrypted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    text_encrypted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    shown_encrypted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    html_encrypted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    answered_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


_table = InboundMessage.__table__
INBOUND_RAW = encrypted_column(_table, "raw_encrypted", "inbound_message.raw")
INBOUND_SUBJECT = encrypted_column(_table, "subject_encrypted", "inbound_message.subject")
INBOUND_TEXT = encrypted_column(_table, "text_encrypted", "inbound_message.text")
INBOUND_SHOWN = encrypted_column(_table, "shown_encrypted", "inbound_message.shown")
INBOUND_HTML = encrypted_column(_table, "html_encrypted", "inbound_message.html")


class InboundAttachment(SQLModel, table=True):
    __tablename__ = "inbound_attachment"

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(sa_column=Column(String(40), ForeignKey("inbound_message.id"),
                                             nullable=False, index=True))
    filename_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    content_type: str = Field(max_length=127)
    size: int  # bytes, decoded
    # base64 of the bytes, sealed; None when dropped (over `[inbound] attachment_max_bytes`).
    data_encrypted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    dropped: bool = Field(default=False)


ATTACHMENT_FILENAME = encrypted_column(InboundAttachment.__table__, "filename_encrypted",
                                       "inbound_attachment.filename")
ATTACHMENT_DATA = encrypted_column(InboundAttachment.__table__, "data_encrypted",
                                   "inbound_attachment.data")


def seal_raw(cipher: FieldCipher, raw: bytes) -> str:
    """A message's bytes sealed. Read as Latin-1 (one character a byte) any bytes round-trip,
    and mail, mostly ASCII, grows far less than through base64 (8-bit bytes take two)."""
    return cipher.encrypt(raw.decode("latin-1"), context=INBOUND_RAW)


def open_raw(cipher: FieldCipher, sealed: str) -> bytes:
    return cipher.decrypt(sealed, context=INBOUND_RAW).encode("latin-1")

"""Vault tables. Contact names, emails and phones are stored only encrypted (FieldCipher)
and found by blind index; account names, site URLs and names are business data, in clear."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, ForeignKey, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from contacts.core.crypto import encrypted_column
from contacts.core.db import utc_column

ROLES = ("site_admin", "billing", "technical", "other")
SOURCES = ("import", "sync", "console")



class Account(SQLModel, table=True):
    __tablename__ = "account"

    id: str = Field(primary_key=True, max_length=40)
    external_id: str = Field(max_length=128, unique=True)
    name: str = Field(max_length=200)
    created_at: datetime = Field(sa_column=utc_column())
    updated_at: datetime = Field(sa_column=utc_column())
    deleted_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class Site(SQLModel, table=True):
    __tablename__ = "site"

    id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(sa_column=Column(String(40), ForeignKey("account.id"),
                                             nullable=False, index=True))
    external_id: str = Field(max_length=128, unique=True)
    url: str | None = Field(default=None, max_length=2048)
    hostname: str | None = Field(default=None, max_length=255, index=True)
    name: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_column=utc_column())
    updated_at: datetime = Field(sa_column=utc_column())
    deleted_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class App(SQLModel, table=True):
    __tablename__ = "app"

    id: str = Field(primary_key=True, max_length=40)
    site_id: str = Field(sa_column=Column(String(40), ForeignKey("site.id"), nullable=False,
                                          index=True))
    external_id: str = Field(max_length=128, unique=True)
    name: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_column=utc_column())
    updated_at: datetime = Field(sa_column=utc_column())
    deleted_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class Contact(SQLModel, table=True):
    __tablename__ = "contact"
    __table_args__ = (
        UniqueConstraint("account_id", "external_id", name="uq_contact_account_external"),
        Index("ix_contact_email_index", "email_index"),
        Index("ix_contact_phone_index", "phone_index"),
        Index("ix_contact_domain_index", "domain_index"),
    )

    id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(sa_column=Column(String(40), ForeignKey("account.id"),
                                             nullable=False, index=True))
    external_id: str = Field(max_length=128)
    name_encrypted: str = Field(max_length=1024)
    email_encrypted: str = Field(max_length=1024)
    phone_encrypted: str | None = Field(default=None, max_length=256)
    email_index: str = Field(max_length=64)
    phone_index: str | None = Field(default=None, max_length=64)
    domain_index: str = Field(max_length=64)
    # Keyed digest of every field, so a sync can tell "unchanged" without decrypting.
    content_digest: str = Field(max_length=64)
    role: str = Field(max_length=16)
    locale: str = Field(max_length=35)
    timezone: str = Field(max_length=64)
    source: str = Field(max_length=16)
    version: int = Field(default=1)
    last_confirmed_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    # When the freshness job last emailed this contact a link to confirm their details.
    confirmation_requested_at: datetime | None = Field(default=None,
                                                       sa_column=utc_column(nullable=True))
    # When mail to this contact was refused for good (a bounce): their details need checking.
    # Cleared when they confirm their details or a sync changes them.
    undeliverable_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    created_at: datetime = Field(sa_column=utc_column())
    updated_at: datetime = Field(sa_column=utc_column())
    deleted_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class ContactSite(SQLModel, table=True):
    __tablename__ = "contact_site"

    contact_id: str = Field(sa_column=Column(String(40), ForeignKey("contact.id"),
                                             primary_key=True))
    site_id: str = Field(sa_column=Column(String(40), ForeignKey("site.id"), primary_key=True,
                                          index=True))


class ContactVersion(SQLModel, table=True):
    """One row per create, change, delete or restore of a contact: the whole contact as it
    was after that event, encrypted."""

    __tablename__ = "contact_version"
    __table_args__ = (
        UniqueConstraint("contact_id", "version", name="uq_contact_version"),
        Index("ix_contact_version_account_at", "account_id", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contact_id: str = Field(max_length=40)
    account_id: str = Field(max_length=40)
    version: int
    event: str = Field(max_length=16)  # created, updated, deleted, restored
    at: datetime = Field(sa_column=utc_column())
    actor_kind: str = Field(max_length=16)
    actor_id: str | None = Field(default=None, max_length=64)
    snapshot_encrypted: str = Field(sa_column=Column(Text, nullable=False))


class BulkDeletion(SQLModel, table=True):
    """A guarded bulk delete: planned by a dry run, acted on only with its token."""

    __tablename__ = "bulk_deletion"

    id: str = Field(primary_key=True, max_length=40)
    kind: str = Field(max_length=16)
    target_ids: list[str] = Field(sa_column=Column(JSON, nullable=False))
    targets_digest: str = Field(max_length=64)
    token_hash: str = Field(max_length=64, unique=True)
    reason: str | None = Field(default=None, max_length=500)
    planned_by: str = Field(max_length=64)
    planned_at: datetime = Field(sa_column=utc_column())
    expires_at: datetime = Field(sa_column=utc_column())
    confirmed_by: str | None = Field(default=None, max_length=64)
    confirmed_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    undone_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


# Each ciphertext is bound to its column (the context is the AEAD's associated data).
CONTACT_NAME = encrypted_column(Contact.__table__, "name_encrypted", "contact.name")
CONTACT_EMAIL = encrypted_column(Contact.__table__, "email_encrypted", "contact.email")
CONTACT_PHONE = encrypted_column(Contact.__table__, "phone_encrypted", "contact.phone")
VERSION_SNAPSHOT = encrypted_column(ContactVersion.__table__, "snapshot_encrypted",
                                    "contact_version.snapshot")

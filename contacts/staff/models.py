"""Staff users and API tokens. Emails are stored encrypted, found by blind index."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from contacts.crypto import encrypted_column
from contacts.db import UTCDateTime


class StaffUser(SQLModel, table=True):
    __tablename__ = "staff_user"

    id: str = Field(primary_key=True, max_length=40)
    email_encrypted: str = Field(max_length=512)
    email_index: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=16)
    password_hash: str = Field(max_length=256)
    is_active: bool = Field(default=True)
    # Bumped when the password changes or the account is deactivated: old cookies stop working.
    session_version: int = Field(default=1)
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    last_login_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=100)
    # The first characters of the secret, shown in lists so a person can tell tokens apart.
    prefix: str = Field(max_length=16)
    secret_hash: str = Field(max_length=64, unique=True)
    scopes: str = Field(max_length=255)  # space-separated
    created_by: str = Field(max_length=40)
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    last_used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()

    def is_usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


STAFF_EMAIL = encrypted_column(StaffUser.__table__, "email_encrypted", "staff.email")

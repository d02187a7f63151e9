"""Staff users, their second factor and API tokens. Emails and TOTP secrets are stored
encrypted; emails are found by blind index, recovery codes by keyed digest."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, String
from sqlmodel import Field, SQLModel

from contacts.core.crypto import encrypted_column
from contacts.core.db import UTCDateTime


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
    # TOTP (RFC 6238): the sealed secret; enrolled once a first code confirmed it.
    totp_secret_encrypted: str | None = Field(default=None, max_length=512)
    totp_enrolled_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # The time step of the last code accepted: a code of this step or an earlier one is
    # refused, so a code cannot be replayed within its window.
    totp_last_step: int | None = Field(default=None)

    @property
    def has_totp(self) -> bool:
        return self.totp_enrolled_at is not None


class RecoveryCode(SQLModel, table=True):
    """A single-use code that stands in for a TOTP code, stored as a keyed digest."""

    __tablename__ = "staff_recovery_code"

    code_digest: str = Field(primary_key=True, max_length=64)
    staff_id: str = Field(sa_column=Column(String(40), ForeignKey("staff_user.id"),
                                           nullable=False, index=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


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
STAFF_TOTP_SECRET = encrypted_column(StaffUser.__table__, "totp_secret_encrypted",
                                     "staff.totp_secret")

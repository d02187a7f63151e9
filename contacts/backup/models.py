"""The backup area's one table: the record of each restore drill."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from contacts.core.db import utc_column


class BackupDrill(SQLModel, table=True):
    """The result of one restore drill: proof that a snapshot restores and checks out."""

    __tablename__ = "backup_drill"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=utc_column(index=True))
    snapshot: str = Field(max_length=255)
    ok: bool
    seconds: float
    rows: int
    detail: str = Field(max_length=2000)

"""Append-only audit entries: who (staff, token, system or anonymous), did what, to which
object, when, from which address. The database itself refuses UPDATE and DELETE on the table
(triggers in the first migration). Entries never carry personal data: IDs and digests only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, Session, SQLModel, col, select

from contacts.core.db import UTCDateTime, bulk_insert, utcnow

ACTOR_KINDS = ("staff", "token", "system", "anonymous")
# audit_log.id is an INTEGER column, 32 bits on PostgreSQL: no entry has a larger ID, and a
# larger number cannot even be compared with one there.
LARGEST_ID = 2**31 - 1


@dataclass(frozen=True)
class Actor:
    kind: str
    id: str | None = None
    ip: str | None = None

    @classmethod
    def system(cls, name: str = "cli") -> Actor:
        return cls("system", name)


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))
    actor_kind: str = Field(max_length=16)
    actor_id: str | None = Field(default=None, max_length=64, index=True)
    action: str = Field(max_length=64, index=True)
    target_kind: str | None = Field(default=None, max_length=32)
    target_id: str | None = Field(default=None, max_length=64, index=True)
    ip: str | None = Field(default=None, max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


def record(session: Session, actor: Actor, action: str, *, target_kind: str | None = None,
           target_id: str | None = None, **detail: Any) -> AuditEntry:
    entry = AuditEntry(at=utcnow(), actor_kind=actor.kind, actor_id=actor.id, action=action,
                       target_kind=target_kind, target_id=target_id, ip=actor.ip, detail=detail)
    session.add(entry)
    return entry


def record_many(session: Session, actor: Actor, action: str, *, target_kind: str,
                target_ids: list[str], **detail: Any) -> None:
    """One entry per target, written in one insert (the purge audits tens of thousands)."""
    at = utcnow()
    bulk_insert(session.connection(), AuditEntry.__table__, [
        {"at": at, "actor_kind": actor.kind, "actor_id": actor.id, "action": action,
         "target_kind": target_kind, "target_id": target_id, "ip": actor.ip, "detail": detail}
        for target_id in target_ids])


@dataclass(frozen=True)
class AuditFilter:
    actor_id: str | None = None
    action: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_entries(session: Session, filters: AuditFilter, *, limit: int = 50,
                 before_id: int | None = None) -> list[AuditEntry]:
    """Newest first; `before_id` pages back from an entry."""
    query = select(AuditEntry)
    if filters.actor_id:
        query = query.where(AuditEntry.actor_id == filters.actor_id)
    if filters.action:
        query = query.where(col(AuditEntry.action).startswith(filters.action))
    if filters.target_id:
        query = query.where(AuditEntry.target_id == filters.target_id)
    if filters.since:
        query = query.where(col(AuditEntry.at) >= filters.since)
    if filters.until:
        query = query.where(col(AuditEntry.at) < filters.until)
    if before_id:
        query = query.where(col(AuditEntry.id) < before_id)
    query = query.order_by(col(AuditEntry.id).desc()).limit(limit)
    return list(session.exec(query))


def distinct_actions(session: Session) -> list[str]:
    query = select(AuditEntry.action).distinct().order_by(AuditEntry.action)
    return list(session.exec(query))

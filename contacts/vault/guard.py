"""The bulk-delete guard's records, for every way a deletion arrives (the deletions API and
CLI, and deletions in a sync or an import): a held bulk delete, bound by its token to exactly
one set of IDs, the undo record of a deletion applied at once, and how a target is shown."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.db import utcnow
from contacts.core.ids import new_id
from contacts.vault.models import BulkDeletion
from contacts.vault.schemas import Sample


@dataclass(frozen=True)
class Limits:
    cap: int = 50
    token_minutes: int = 15
    retention_days: int = 30

    @classmethod
    def from_settings(cls, settings) -> Limits:
        return cls(cap=settings.vault_bulk_delete_cap,
                   token_minutes=settings.vault_bulk_delete_token_minutes,
                   retention_days=settings.vault_retention_days)


def targets_digest(kind: str, ids: list[str]) -> str:
    return hashlib.sha256(f"{kind}:{','.join(sorted(ids))}".encode()).hexdigest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def deletion_sample(row) -> Sample:
    """How a bulk delete shows a target (an ORM row or a plain one): IDs, and a site's or an
    app's name or URL; never a contact's personal data."""
    def value(name):
        return row.get(name) if isinstance(row, dict) else getattr(row, name, None)

    label = None if value("name_encrypted") else value("name")
    return Sample(id=value("id"), external_id=value("external_id"),
                  label=label or value("url"))


def hold(*, session: Session, actor: Actor, kind: str, targets: list[str], limits: Limits,
         reason: str | None = None, source: str = "deletions") -> tuple[BulkDeletion, str]:
    """A planned bulk delete (nothing deleted) and the token that alone confirms it."""
    token = secrets.token_urlsafe(24)
    now = utcnow()
    deletion = BulkDeletion(
        id=new_id("del"), kind=kind, target_ids=targets,
        targets_digest=targets_digest(kind, targets), token_hash=token_hash(token),
        reason=reason, planned_by=actor.id or actor.kind, planned_at=now,
        expires_at=now + timedelta(minutes=limits.token_minutes))
    session.add(deletion)
    audit.record(session, actor, "bulk_delete.planned", target_kind="bulk_deletion",
                 target_id=deletion.id, kind=kind, count=len(targets), reason=reason,
                 source=source)
    return deletion, token


def record_applied(*, session: Session, actor: Actor, kind: str, targets: list[str],
                   at: datetime, source: str) -> BulkDeletion:
    """The undo record of a deletion applied at once (under the cap): `undo` restores what
    was deleted at `at`, as for a confirmed bulk delete. Its token is never given out."""
    by = actor.id or actor.kind
    deletion = BulkDeletion(
        id=new_id("del"), kind=kind, target_ids=targets,
        targets_digest=targets_digest(kind, targets),
        token_hash=token_hash(secrets.token_urlsafe(24)), reason=None, planned_by=by,
        planned_at=at, expires_at=at, confirmed_by=by, confirmed_at=at)
    session.add(deletion)
    audit.record(session, actor, "bulk_delete.confirmed", target_kind="bulk_deletion",
                 target_id=deletion.id, kind=kind, count=len(targets), source=source)
    return deletion

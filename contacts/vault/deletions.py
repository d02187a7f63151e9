"""Guarded bulk deletes: declare the kind and the IDs, get a dry run with the count, a sample
and a token bound to exactly that set; only the confirm call with that token acts.

The deletion API in the incident behind Lifeline took a site ID where an app ID was meant,
asked nothing, and deleted 883 sites. Here an ID of another kind than declared refuses the
whole request, and a set above the blast-radius cap needs an admin and a reason.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from contacts import audit
from contacts.audit import Actor
from contacts.db import utcnow
from contacts.errors import Conflict, Forbidden, Invalid, NotFound, WrongKind
from contacts.ids import new_id, parse_id
from contacts.vault import service
from contacts.vault.models import BulkDeletion


class Sample(BaseModel):
    id: str
    external_id: str | None
    label: str | None = Field(description="Name or URL; never a contact's personal data.")


class DryRun(BaseModel):
    deletion_id: str
    kind: str
    count: int
    sample: list[Sample]
    token: str = Field(description="Give it back, with the same kind and IDs, to confirm.")
    expires_at: datetime


class Done(BaseModel):
    deletion_id: str
    kind: str
    deleted: int
    restorable_until: datetime


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


def _digest(kind: str, ids: list[str]) -> str:
    return hashlib.sha256(f"{kind}:{','.join(sorted(ids))}".encode()).hexdigest()


def _checked_ids(kind: str, ids: list[str]) -> list[str]:
    if kind not in service.KINDS:
        raise Invalid(f"kind must be one of {', '.join(service.KINDS)}, got {kind!r}")
    if not ids:
        raise Invalid("give at least one ID")
    prefix = service.KINDS[kind][0]
    checked = []
    for position, value in enumerate(ids):
        try:
            checked.append(parse_id(value, prefix))
        except WrongKind as exc:
            raise WrongKind(f"ids[{position}]: {exc.message}",
                            details={**exc.details, "index": position}) from None
        except Invalid as exc:
            raise Invalid(f"ids[{position}]: {exc.message}") from None
    return sorted(set(checked))


def plan(*, session: Session, actor: Actor, kind: str, ids: list[str], limits: Limits,
         is_admin: bool = False, reason: str | None = None) -> DryRun:
    targets = _checked_ids(kind, ids)
    reason = (reason or "").strip() or None
    if len(targets) > limits.cap and not (is_admin and reason):
        raise Forbidden(f"{len(targets)} {kind}s is over the cap of {limits.cap} for one "
                        "bulk delete; only an admin giving a reason may go above it")
    model = service.KINDS[kind][1]
    rows = list(session.exec(select(model).where(col(model.id).in_(targets),
                                                 col(model.deleted_at).is_(None))))
    if len(rows) != len(targets):
        found = {row.id for row in rows}
        missing = [target for target in targets if target not in found]
        raise NotFound(f"{len(missing)} of the {kind} IDs do not exist or are already "
                       f"deleted, for example {missing[0]}")
    token = secrets.token_urlsafe(24)
    now = utcnow()
    deletion = BulkDeletion(
        id=new_id("del"), kind=kind, target_ids=targets, targets_digest=_digest(kind, targets),
        token_hash=hashlib.sha256(token.encode()).hexdigest(), reason=reason,
        planned_by=actor.id or actor.kind, planned_at=now,
        expires_at=now + timedelta(minutes=limits.token_minutes))
    session.add(deletion)
    audit.record(session, actor, "bulk_delete.planned", target_kind="bulk_deletion",
                 target_id=deletion.id, kind=kind, count=len(targets), reason=reason)
    return DryRun(deletion_id=deletion.id, kind=kind, count=len(targets),
                  sample=[_sample(row) for row in rows[:5]], token=token,
                  expires_at=deletion.expires_at)


def _sample(row) -> Sample:
    label = getattr(row, "name", None) if not hasattr(row, "name_encrypted") else None
    return Sample(id=row.id, external_id=row.external_id,
                  label=label or getattr(row, "url", None))


def confirm(*, session: Session, vault: service.Vault, actor: Actor, kind: str, ids: list[str],
            token: str, limits: Limits) -> Done:
    targets = _checked_ids(kind, ids)
    deletion = session.exec(select(BulkDeletion).where(
        BulkDeletion.token_hash == hashlib.sha256(token.encode()).hexdigest())).first()
    if deletion is None:
        raise Forbidden("unknown confirmation token: run the dry run again")
    if deletion.confirmed_at is not None:
        raise Conflict("this bulk delete was already confirmed")
    if deletion.expires_at < utcnow():
        raise Forbidden("the confirmation token has expired: run the dry run again")
    if deletion.kind != kind or deletion.targets_digest != _digest(kind, targets):
        raise Forbidden("the kind or the IDs differ from the dry run this token was given for")
    now = utcnow()
    deleted = service.soft_delete(session=session, vault=vault, actor=actor, kind=kind,
                                  ids=deletion.target_ids, at=now)
    deletion.confirmed_at, deletion.confirmed_by = now, actor.id or actor.kind
    session.add(deletion)
    audit.record(session, actor, "bulk_delete.confirmed", target_kind="bulk_deletion",
                 target_id=deletion.id, kind=kind, count=deleted)
    return Done(deletion_id=deletion.id, kind=kind, deleted=deleted,
                restorable_until=now + timedelta(days=limits.retention_days))


def undo(*, session: Session, vault: service.Vault, actor: Actor, deletion_id: str) -> int:
    """Restore everything a confirmed bulk delete removed (before the purge)."""
    deletion = session.get(BulkDeletion, parse_id(deletion_id, "del"))
    if deletion is None or deletion.confirmed_at is None:
        raise NotFound("no confirmed bulk deletion with this ID")
    if deletion.undone_at is not None:
        raise Conflict("this bulk deletion was already undone")
    restored = service.restore(session=session, vault=vault, actor=actor, kind=deletion.kind,
                               ids=deletion.target_ids, deleted_at=deletion.confirmed_at)
    if restored == 0:
        raise Conflict("nothing left to restore: the objects were purged or restored already")
    deletion.undone_at = utcnow()
    session.add(deletion)
    audit.record(session, actor, "bulk_delete.undone", target_kind="bulk_deletion",
                 target_id=deletion.id, count=restored)
    return restored

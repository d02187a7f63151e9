"""Guarded bulk deletes: declare the kind and the IDs, get a dry run with the count, a sample
and a token bound to exactly that set; only the confirm call with that token acts.

The deletion API in the incident behind Lifeline took a site ID where an app ID was meant,
asked nothing, and deleted 883 sites. Here an ID of another kind than declared refuses the
whole request, and a set above the blast-radius cap needs an admin and a reason.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.db import in_chunks, utcnow
from contacts.core.errors import Conflict, Forbidden, Invalid, NotFound, WrongKind
from contacts.core.ids import parse_id
from contacts.vault import guard, service, softdelete
from contacts.vault.guard import Limits
from contacts.vault.models import BulkDeletion
from contacts.vault.schemas import Sample

__all__ = ["Done", "DryRun", "Held", "Limits", "Sample", "confirm", "confirm_held", "dismiss",
           "held", "plan", "undo"]


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
    rows = [row for chunk in in_chunks(targets)
            for row in session.exec(select(model).where(col(model.id).in_(chunk),
                                                        col(model.deleted_at).is_(None)))]
    if len(rows) != len(targets):
        found = {row.id for row in rows}
        missing = [target for target in targets if target not in found]
        raise NotFound(f"{len(missing)} of the {kind} IDs do not exist or are already "
                       f"deleted, for example {missing[0]}")
    deletion, token = guard.hold(session=session, actor=actor, kind=kind, targets=targets,
                                 limits=limits, reason=reason)
    return DryRun(deletion_id=deletion.id, kind=kind, count=len(targets),
                  sample=[guard.deletion_sample(row) for row in rows[:5]], token=token,
                  expires_at=deletion.expires_at)


def confirm(*, session: Session, vault: service.Vault, actor: Actor, kind: str, ids: list[str],
            token: str, limits: Limits, is_admin: bool = False,
            reason: str | None = None) -> Done:
    """Apply the bulk delete a dry run (or a sync over the cap) planned, given its token and
    exactly its kind and IDs; above the cap only an admin giving a reason may."""
    targets = _checked_ids(kind, ids)
    deletion = session.exec(select(BulkDeletion).where(
        BulkDeletion.token_hash == guard.token_hash(token))).first()
    if deletion is None:
        raise Forbidden("unknown confirmation token: run the dry run again")
    if deletion.kind != kind or deletion.targets_digest != guard.targets_digest(kind, targets):
        raise Forbidden("the kind or the IDs differ from the dry run this token was given for")
    return _apply(session, vault, actor, deletion, limits, is_admin, reason)


def confirm_held(*, session: Session, vault: service.Vault, actor: Actor, deletion_id: str,
                 token: str, limits: Limits, is_admin: bool = False,
                 reason: str | None = None) -> Done:
    """Apply a held bulk delete named by its ID (the CLI), given the token it was held with."""
    deletion = session.get(BulkDeletion, parse_id(deletion_id, "del"))
    if deletion is None or not hmac.compare_digest(deletion.token_hash,
                                                   guard.token_hash(token)):
        raise Forbidden("this token was not given for this bulk delete: use the token its dry "
                        "run or sync report gave")
    return _apply(session, vault, actor, deletion, limits, is_admin, reason)


def _apply(session: Session, vault: service.Vault, actor: Actor, deletion: BulkDeletion,
           limits: Limits, is_admin: bool, reason: str | None) -> Done:
    if deletion.confirmed_at is not None:
        raise Conflict("this bulk delete was already confirmed")
    if deletion.expires_at < utcnow():
        raise Forbidden("the confirmation token has expired: run the dry run again")
    reason = (reason or "").strip() or deletion.reason
    count = len(deletion.target_ids)
    if count > limits.cap and not (is_admin and reason):
        raise Forbidden(f"{count} {deletion.kind}s is over the cap of {limits.cap} for one "
                        "bulk delete; only an admin giving a reason may confirm it")
    now = utcnow()
    deleted = softdelete.soft_delete(session=session, vault=vault, actor=actor,
                                     kind=deletion.kind, ids=deletion.target_ids, at=now)
    deletion.confirmed_at, deletion.confirmed_by = now, actor.id or actor.kind
    deletion.reason = reason[:500] if reason else None
    session.add(deletion)
    audit.record(session, actor, "bulk_delete.confirmed", target_kind="bulk_deletion",
                 target_id=deletion.id, kind=deletion.kind, count=deleted, reason=reason)
    return Done(deletion_id=deletion.id, kind=deletion.kind, deleted=deleted,
                restorable_until=now + timedelta(days=limits.retention_days))


def undo(*, session: Session, vault: service.Vault, actor: Actor, deletion_id: str) -> int:
    """Restore everything a confirmed bulk delete removed (before the purge)."""
    deletion = session.get(BulkDeletion, parse_id(deletion_id, "del"))
    if deletion is None or deletion.confirmed_at is None:
        raise NotFound("no confirmed bulk deletion with this ID")
    if deletion.undone_at is not None:
        raise Conflict("this bulk deletion was already undone")
    restored = softdelete.restore(session=session, vault=vault, actor=actor,
                                  kind=deletion.kind, ids=deletion.target_ids,
                                  deleted_at=deletion.confirmed_at)
    if restored == 0:
        raise Conflict("nothing left to restore: the objects were purged or restored already")
    deletion.undone_at = utcnow()
    session.add(deletion)
    audit.record(session, actor, "bulk_delete.undone", target_kind="bulk_deletion",
                 target_id=deletion.id, count=restored)
    return restored


class Held(BaseModel):
    """A bulk delete over the cap waiting for an admin (the console lists them)."""

    deletion_id: str
    kind: str
    count: int
    sample: list[Sample]
    planned_at: datetime
    expires_at: datetime


def held(*, session: Session, limits: Limits, now: datetime) -> list[Held]:
    """The bulk deletes over the cap that nobody confirmed yet and whose token still works,
    the newest first, each with a sample of what it would delete."""
    found = []
    for deletion in session.exec(select(BulkDeletion).where(
            col(BulkDeletion.confirmed_at).is_(None), col(BulkDeletion.expires_at) >= now)
            .order_by(col(BulkDeletion.planned_at).desc())):
        if len(deletion.target_ids) <= limits.cap:
            continue
        model = service.KINDS[deletion.kind][1]
        rows = session.exec(select(model).where(col(model.id).in_(deletion.target_ids[:5])))
        found.append(Held(deletion_id=deletion.id, kind=deletion.kind,
                          count=len(deletion.target_ids),
                          sample=[guard.deletion_sample(row) for row in rows],
                          planned_at=deletion.planned_at, expires_at=deletion.expires_at))
    return found


def dismiss(*, session: Session, actor: Actor, deletion_id: str, now: datetime) -> None:
    """Drop a held bulk delete: its token stops working now, nothing is deleted."""
    deletion = session.get(BulkDeletion, parse_id(deletion_id, "del"))
    if deletion is None or deletion.confirmed_at is not None or deletion.expires_at < now:
        raise NotFound("no held bulk deletion with this ID")
    deletion.expires_at = now
    session.add(deletion)
    audit.record(session, actor, "bulk_delete.dismissed", target_kind="bulk_deletion",
                 target_id=deletion.id, kind=deletion.kind, count=len(deletion.target_ids))

"""The vault's JSON API: the product's sync, contacts of an account (now or as of a time),
lookups by blind index, bulk deletes, and snapshots with their restore drills."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Literal

from flask import Blueprint, current_app, g
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contacts.core import audit, schema
from contacts.core.api import API_PREFIX, Moment, operation
from contacts.core.db import request_session
from contacts.core.ids import VaultId
from contacts.vault import backup, deletions, service
from contacts.vault import sync as vault_sync
from contacts.vault.schemas import (
    ContactList,
    ContactMatch,
    ImportReport,
    LookupResult,
    SyncDocument,
)

bp = Blueprint("vault_api", __name__, url_prefix=API_PREFIX)


def _vault() -> service.Vault:
    return current_app.extensions["lifeline.vault"]


@bp.post("/sync")
@operation(scope="contacts:write", response=ImportReport, body=SyncDocument, tags=("vault",))
def sync(json: SyncDocument):
    """Upsert accounts, sites and contacts keyed on the product's external IDs.

    Idempotent. An entry that cannot be stored is listed in `rejections` with its path and
    reason; the others are stored. `"deleted": true` soft-deletes a site, an app or a
    contact through the bulk-delete guard, per kind: up to `vault.bulk_delete_cap` at once
    (listed in `deletions` as applied, with the bulk deletion to undo), above it held
    (listed as held, with a sample and a token; an admin confirms them with a reason).
    """
    entries = [vault_sync.AccountEntry.from_document(account, index)
               for index, account in enumerate(json.accounts)]
    return vault_sync.sync(session=request_session(), vault=_vault(), actor=g.actor,
                           entries=entries, source="sync")


class AsOfQuery(BaseModel):
    as_of: Moment | None = Field(
        default=None, description="The contacts as they were at this time (with a zone).")


@bp.get("/accounts/<account_id>/contacts")
@operation(scope="read", response=ContactList, query=AsOfQuery, tags=("vault",))
def account_contacts(account_id: str, query: AsOfQuery):
    """The account's contacts, decrypted; every read is audited."""
    session = request_session()
    contacts = service.list_contacts(session=session, vault=_vault(), account_id=account_id,
                                     as_of=query.as_of)
    audit.record(session, g.actor, "contact.read", target_kind="account", target_id=account_id,
                 count=len(contacts), as_of=query.as_of.isoformat() if query.as_of else None)
    return ContactList(account_id=account_id, as_of=query.as_of, contacts=contacts)


class LookupQuery(BaseModel):
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=40)
    domain: str | None = Field(default=None, max_length=255)

    @model_validator(mode="after")
    def exactly_one(self):
        given = [name for name in ("email", "phone", "domain") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give exactly one of email, phone or domain")
        return self


@bp.get("/contacts/lookup")
@operation(scope="read", response=LookupResult, query=LookupQuery, tags=("vault",))
def lookup(query: LookupQuery):
    """Contacts matching an email, a phone or an email domain; IDs only, nothing decrypted."""
    found = service.find_contacts(session=request_session(), vault=_vault(), email=query.email,
                                  phone=query.phone, domain=query.domain)
    return LookupResult(matches=[ContactMatch(id=row.id, account_id=row.account_id,
                                              role=row.role) for row in found])


def _limits() -> deletions.Limits:
    return deletions.Limits.from_settings(current_app.extensions["lifeline.settings"])


class DeletionRequest(BaseModel):
    kind: Literal["account", "site", "app", "contact"] = Field(
        description="The kind every ID must be; an ID of another kind refuses the request.")
    ids: list[VaultId] = Field(min_length=1, max_length=10_000)
    reason: str | None = Field(default=None, max_length=500)


class DeletionConfirmation(BaseModel):
    kind: Literal["account", "site", "app", "contact"]
    ids: list[VaultId] = Field(min_length=1, max_length=10_000)
    token: str = Field(min_length=1, max_length=100)
    reason: str | None = Field(default=None, max_length=500)


class Undone(BaseModel):
    deletion_id: str
    restored: int


@bp.post("/deletions")
@operation(scope="contacts:write", response=deletions.DryRun, body=DeletionRequest,
           errors=(404,), tags=("vault",))
def plan_deletion(json: DeletionRequest):
    """Dry run of a bulk delete: the count, a sample and a token bound to exactly this set.

    Nothing is deleted. Above the blast-radius cap the request is refused (403).
    """
    return deletions.plan(session=request_session(), actor=g.actor, kind=json.kind,
                          ids=json.ids, limits=_limits(), reason=json.reason)


@bp.post("/deletions/confirm")
@operation(scope="contacts:write", response=deletions.Done, body=DeletionConfirmation,
           errors=(409,), tags=("vault",))
def confirm_deletion(json: DeletionConfirmation):
    """Soft-delete the set a dry run planned; restorable until the retention period ends.

    Only sets at most the blast-radius cap: above it only an admin may, with a reason, and a
    token is not an admin (403). A sync's held deletions are always over the cap: an admin
    confirms them on the console's import page or with `contacts confirm-deletion`.
    """
    return deletions.confirm(session=request_session(), vault=_vault(), actor=g.actor,
                             kind=json.kind, ids=json.ids, token=json.token, limits=_limits(),
                             reason=json.reason)


@bp.post("/deletions/<deletion_id>/undo")
@operation(scope="contacts:write", response=Undone, errors=(409,), tags=("vault",))
def undo_deletion(deletion_id: str):
    """Restore everything a confirmed bulk delete removed."""
    restored = deletions.undo(session=request_session(), vault=_vault(), actor=g.actor,
                              deletion_id=deletion_id)
    return Undone(deletion_id=deletion_id, restored=restored)


# -- snapshots and drills -------------------------------------------------------------------


def _backup_dir() -> Path:
    return Path(current_app.extensions["lifeline.settings"].backup_dir)


def _backup_key() -> bytes:
    return current_app.extensions["lifeline.settings"].secrets.backup_key


class SnapshotTaken(BaseModel):
    name: str = Field(description="The snapshot's file name in the backup folder (never a "
                                  "path); give it to POST /api/v1/backups/drill.")
    rows: int = Field(description="Rows in the snapshot, every table together.")
    tables: int = Field(description="Tables in the snapshot.")
    created_at: datetime = Field(description="The single point in time the snapshot holds.")
    seconds: float = Field(description="How long writing it took.")


@bp.post("/backups")
@operation(scope="backups:write", response=SnapshotTaken, status=201, tags=("backups",))
def create_backup():
    """Write an encrypted, authenticated snapshot of the whole database to the backup folder,
    as `flask backup create` does. Runs before the answer: seconds for thousands of rows."""
    engine = current_app.extensions["lifeline.engine"]
    started = time.perf_counter()
    path, manifest = backup.create_snapshot(engine=engine, backup_key=_backup_key(),
                                            directory=_backup_dir(),
                                            revision=schema.database_revision(engine))
    audit.record(request_session(), g.actor, "backup.created", snapshot=path.name,
                 rows=manifest.rows)
    return SnapshotTaken(name=path.name, rows=manifest.rows, tables=len(manifest.tables),
                         created_at=datetime.fromisoformat(manifest.created_at),
                         seconds=backup.elapsed(started)), 201


class DrillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot: str | None = Field(default=None, max_length=255,
                                 description="A snapshot's file name, as POST /api/v1/backups "
                                             "answers it; the newest snapshot when left out.")


class DrillOutcome(BaseModel):
    snapshot: str = Field(description="The file name of the snapshot drilled.")
    ok: bool = Field(description="Whether it restored and every check passed; a failed drill "
                                 "is answered 200 too, with ok false and the reason in detail.")
    seconds: float
    rows: int = Field(description="Rows restored and checked against the manifest.")
    fields: int = Field(description="Encrypted fields that decrypt with the current keys.")
    detail: str


@bp.post("/backups/drill")
@operation(scope="backups:write", response=DrillOutcome, body=DrillRequest, errors=(404,),
           tags=("backups",))
def drill_backup(json: DrillRequest):
    """Restore a snapshot into a scratch database and check counts, checksums and that every
    encrypted field decrypts, as `flask backup drill` does; the result is recorded, so
    /healthz reports it. A name that is not a snapshot's plain file name is refused (400)."""
    snapshot = backup.snapshot_named(_backup_dir(), json.snapshot)
    result = backup.drill_snapshot(snapshot=snapshot, backup_key=_backup_key(),
                                   load_field_keys=current_app.extensions[
                                       "lifeline.field_keys_source"],
                                   engine=current_app.extensions["lifeline.engine"],
                                   actor=g.actor)
    return DrillOutcome(snapshot=result.snapshot, ok=result.ok, seconds=result.seconds,
                        rows=result.rows, fields=result.fields, detail=result.detail)

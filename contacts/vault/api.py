"""The vault's JSON API: the product's sync, contacts of an account (now or as of a time),
lookups by blind index, bulk deletes."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint, g
from pydantic import BaseModel, Field, model_validator

from contacts.core import audit
from contacts.core.api import API_PREFIX, Moment, operation
from contacts.core.db import request_session
from contacts.core.ids import VaultId
from contacts.core.services import services
from contacts.vault import deletions, service
from contacts.vault import sync as vault_sync
from contacts.vault.schemas import (
    ContactList,
    ContactMatch,
    ImportReport,
    LookupResult,
    SyncDocument,
)
from contacts.vault.service import Vault

bp = Blueprint("vault_api", __name__, url_prefix=API_PREFIX)


def _vault() -> service.Vault:
    return services().get(Vault)


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
    return deletions.Limits.from_settings(services().settings)


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

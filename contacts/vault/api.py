"""The vault's JSON API: the product's sync, contacts of an account (now or as of a time),
and lookups by blind index."""

from __future__ import annotations

from flask import Blueprint, current_app, g
from pydantic import BaseModel, Field, model_validator

from contacts import audit
from contacts.api import API_PREFIX, Moment, operation
from contacts.db import request_session
from contacts.vault import service
from contacts.vault.schemas import (
    ContactList,
    ContactMatch,
    ImportReport,
    LookupResult,
    SyncDocument,
)

bp = Blueprint("vault_api", __name__, url_prefix=API_PREFIX)


def _vault() -> service.Vault:
    return service.Vault.from_settings(current_app.extensions["lifeline.settings"],
                                       current_app.extensions["lifeline.crypto"])


@bp.post("/sync")
@operation(scope="contacts:write", response=ImportReport, body=SyncDocument, tags=("vault",))
def sync(json: SyncDocument):
    """Upsert accounts, sites and contacts keyed on the product's external IDs.

    Idempotent. An entry that cannot be stored is listed in `rejections` with its path and
    reason; the others are stored. `"deleted": true` soft-deletes a site or a contact.
    """
    entries = [service.AccountEntry.from_document(account, index)
               for index, account in enumerate(json.accounts)]
    return service.sync(session=request_session(), vault=_vault(), actor=g.actor,
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

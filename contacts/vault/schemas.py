"""What the vault accepts and returns: pydantic models shared by the sync API, the importer,
the console and the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contacts.core.api import Text

Role = Literal["site_admin", "billing", "technical", "other"]


class AppIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: Text = Field(min_length=1, max_length=128, description="The product's app ID.")
    name: Text | None = Field(default=None, max_length=200)
    deleted: bool = Field(default=False, description="True soft-deletes the app.")


class SiteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: Text = Field(min_length=1, max_length=128, description="The product's site ID.")
    url: Text | None = Field(default=None, max_length=2048)
    name: Text | None = Field(default=None, max_length=200)
    apps: list[AppIn] = Field(default_factory=list, max_length=1000,
                              description="Apps installed on the site (optional).")
    deleted: bool = Field(default=False, description="True soft-deletes the site.")


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: Text = Field(min_length=1, max_length=128,
                              description="The product's ID for this contact.")
    name: Text = Field(min_length=1, max_length=200)
    email: Text = Field(min_length=3, max_length=320)
    phone: Text | None = Field(default=None, max_length=40)
    role: Text = Field(default="other", max_length=32,
                       description="site_admin, billing, technical or other.")
    locale: Text = Field(default="en", max_length=35)
    timezone: Text = Field(default="UTC", max_length=64)
    country: Text | None = Field(
        default=None, max_length=8,
        description="ISO 3166 code (FR) of the contact's country: a phone written without its "
                    "+country code is read as a number of it (else of the locale's region, "
                    "fr-FR -> FR, else of vault.default_phone_region). Not stored.")
    sites: list[Text] = Field(default_factory=list, max_length=1000,
                              description="External IDs of the sites this contact administers.")
    deleted: bool = Field(default=False, description="True soft-deletes the contact.")


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: Text = Field(min_length=1, max_length=128, description="The product's ID.")
    name: Text = Field(min_length=1, max_length=200)
    sites: list[SiteIn] = Field(default_factory=list, max_length=10_000)
    contacts: list[ContactIn] = Field(default_factory=list, max_length=10_000)


class SyncDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accounts: list[AccountIn] = Field(max_length=5_000)


class Rejection(BaseModel):
    line: str = Field(description="CSV line number or JSON path of the rejected entry.")
    kind: str
    external_id: str | None
    reason: str


class Tally(BaseModel):
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    held: int = Field(default=0, description="Deletions held over the bulk-delete cap, "
                                             "waiting for a confirmation (see deletions).")


class Sample(BaseModel):
    id: str
    external_id: str | None
    label: str | None = Field(description="Name or URL; never a contact's personal data.")


class SyncDeletion(BaseModel):
    """Deletions of one kind that arrived by sync, through the bulk-delete guard."""

    deletion_id: str = Field(description="The bulk deletion (del_...): undo it with POST "
                                         "/api/v1/deletions/<id>/undo once applied.")
    kind: Literal["site", "app", "contact"]
    state: Literal["applied", "held"] = Field(
        description="applied: at most vault.bulk_delete_cap, deleted now (restorable); "
                    "held: over the cap, nothing deleted until an admin confirms with the "
                    "token and a reason (console or CLI, not the API).")
    count: int
    sample: list[Sample]
    ids: list[str] = Field(description="Exactly the set the token is bound to.")
    token: str | None = Field(default=None, description=(
        "Held only: an admin confirms the set with it and a reason, on the console's import "
        "page (Held deletions) or with `flask --app app contacts confirm-deletion <id> "
        "--token <token> --reason ...`. Not through POST /api/v1/deletions/confirm: a held "
        "set is over the cap, and the API never acts as an admin (403)."))
    expires_at: datetime | None = Field(default=None, description="Held only.")
    restorable_until: datetime | None = Field(default=None, description="Applied only.")


class ImportReport(BaseModel):
    accounts: Tally = Field(default_factory=Tally)
    sites: Tally = Field(default_factory=Tally)
    apps: Tally = Field(default_factory=Tally)
    contacts: Tally = Field(default_factory=Tally)
    rejections: list[Rejection] = Field(default_factory=list)
    deletions: list[SyncDeletion] = Field(
        default_factory=list, description="Sites, apps and contacts the document deletes, "
        "per kind: applied at once up to vault.bulk_delete_cap, held for a confirmation "
        "above it (the rest of the document is stored either way).")

    def merge(self, other: ImportReport) -> None:
        """Add another report's figures (for example the rejections found while parsing)."""
        for kind in ("accounts", "sites", "apps", "contacts"):
            mine, theirs = getattr(self, kind), getattr(other, kind)
            for figure in Tally.model_fields:
                setattr(mine, figure, getattr(mine, figure) + getattr(theirs, figure))
        self.rejections = other.rejections + self.rejections

    def reject(self, kind: str, line: str, external_id: str | None, reason: str) -> None:
        getattr(self, kind + "s").rejected += 1
        self.rejections.append(Rejection(line=line, kind=kind, external_id=external_id,
                                         reason=reason))


class ContactOut(BaseModel):
    id: str
    account_id: str
    external_id: str
    name: str
    email: str
    phone: str | None
    role: str
    locale: str
    timezone: str
    sites: list[str] = Field(description="External IDs of the contact's sites.")
    source: str
    last_confirmed_at: datetime | None
    version: int


class ContactList(BaseModel):
    account_id: str
    as_of: datetime | None
    contacts: list[ContactOut]


class ContactMatch(BaseModel):
    id: str
    account_id: str
    role: str


class LookupResult(BaseModel):
    matches: list[ContactMatch]

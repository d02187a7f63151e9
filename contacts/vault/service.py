"""Vault operations: sync (the one upsert path for import, API and console), lookups by blind
index, contacts as of a time, soft delete and restore. Other domains call these functions,
never the vault's tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, insert, update
from sqlmodel import Session, col, select

from contacts import audit
from contacts.audit import Actor
from contacts.crypto import Crypto, normalize_email
from contacts.db import utcnow
from contacts.errors import Conflict, Invalid, NotFound
from contacts.ids import new_id, parse_id
from contacts.vault import fields
from contacts.vault.models import (
    CONTACT_EMAIL,
    CONTACT_NAME,
    CONTACT_PHONE,
    VERSION_SNAPSHOT,
    Account,
    App,
    Contact,
    ContactSite,
    ContactVersion,
    Site,
)
from contacts.vault.schemas import AccountIn, ContactIn, ContactOut, ImportReport

NAME, EMAIL, PHONE, SNAPSHOT = CONTACT_NAME, CONTACT_EMAIL, CONTACT_PHONE, VERSION_SNAPSHOT


@dataclass(frozen=True)
class Vault:
    """What vault operations need besides the session: keys and a few settings."""

    crypto: Crypto
    default_phone_region: str = "US"
    batch_size: int = 500

    @classmethod
    def from_settings(cls, settings, crypto: Crypto) -> Vault:
        return cls(crypto=crypto, default_phone_region=settings.vault_default_phone_region,
                   batch_size=settings.vault_batch_size)


@dataclass
class AccountEntry:
    """One account of a sync, with where each of its parts came from (for the report)."""

    account: AccountIn
    line: str
    site_lines: list[str] = field(default_factory=list)
    contact_lines: list[str] = field(default_factory=list)

    @classmethod
    def from_document(cls, account: AccountIn, index: int) -> AccountEntry:
        prefix = f"accounts[{index}]"
        return cls(account, prefix,
                   [f"{prefix}.sites[{n}]" for n in range(len(account.sites))],
                   [f"{prefix}.contacts[{n}]" for n in range(len(account.contacts))])


@dataclass
class _Checked:
    """A contact entry after checking: normalized values and blind indexes, no ciphertext."""

    entry: ContactIn
    line: str
    account_id: str
    email: str
    phone: str | None
    role: str
    locale: str
    timezone: str
    site_ids: list[str]
    site_external_ids: list[str]
    email_index: str
    phone_index: str | None
    domain_index: str
    digest: str


# -- sync -----------------------------------------------------------------------------------


def sync(*, session: Session, vault: Vault, actor: Actor, entries: list[AccountEntry],
         source: str, progress: Callable[[int], None] | None = None) -> ImportReport:
    """Upsert accounts, sites and contacts keyed on the product's external IDs.

    Idempotent: the same document twice changes nothing the second time. A bad entry is
    rejected with its line and reason; the rest goes on.
    """
    report = ImportReport()
    seen_accounts: set[str] = set()
    unique: list[AccountEntry] = []
    for entry in entries:
        if entry.account.external_id in seen_accounts:
            report.reject("account", entry.line, entry.account.external_id,
                          "this account appears twice in the same document")
            continue
        seen_accounts.add(entry.account.external_id)
        unique.append(entry)
    for chunk in _chunks(unique, vault.batch_size):
        _sync_chunk(session, vault, actor, chunk, source, report)
        if progress:
            progress(sum(len(entry.account.contacts) for entry in chunk))
    audit.record(session, actor, "vault.synced", source=source,
                 contacts=report.contacts.model_dump(), accounts=report.accounts.model_dump(),
                 sites=report.sites.model_dump())
    return report


def _chunks(entries: list[AccountEntry], size: int) -> Iterator[list[AccountEntry]]:
    chunk: list[AccountEntry] = []
    weight = 0
    for entry in entries:
        chunk.append(entry)
        weight += max(len(entry.account.contacts), 1)
        if weight >= size:
            yield chunk
            chunk, weight = [], 0
    if chunk:
        yield chunk


def _sync_chunk(session: Session, vault: Vault, actor: Actor, chunk: list[AccountEntry],
                source: str, report: ImportReport) -> None:
    now = utcnow()
    accounts = _upsert_accounts(session, chunk, now, report)
    sites = _upsert_sites(session, chunk, accounts, now, report)
    _upsert_contacts(session, vault, actor, chunk, accounts, sites, source, now, report)


def _rows(session: Session, model, *conditions) -> list[dict]:
    """Plain dicts, not ORM objects: the sync writes in bulk and must not leave dirty
    objects behind for the unit of work to write a second time, row by row."""
    return [dict(row._mapping) for row in
            session.execute(select(model.__table__).where(*conditions))]


def _upsert_accounts(session: Session, chunk: list[AccountEntry], now: datetime,
                     report: ImportReport) -> dict[str, dict]:
    wanted = [entry.account.external_id for entry in chunk]
    existing = {row["external_id"]: row for row in
                _rows(session, Account, col(Account.external_id).in_(wanted))}
    new_rows, changes = [], []
    for entry in chunk:
        given = entry.account
        row = existing.get(given.external_id)
        if row is None:
            row = {"id": new_id("acc"), "external_id": given.external_id, "name": given.name,
                   "created_at": now, "updated_at": now, "deleted_at": None}
            existing[given.external_id] = row
            new_rows.append(row)
            report.accounts.created += 1
        elif row["name"] != given.name or row["deleted_at"] is not None:
            row.update(name=given.name, deleted_at=None, updated_at=now)
            changes.append({"id": row["id"], "name": given.name, "deleted_at": None,
                            "updated_at": now})
            report.accounts.updated += 1
        else:
            report.accounts.unchanged += 1
    if new_rows:
        session.execute(insert(Account.__table__), new_rows)
    if changes:
        session.execute(update(Account), changes)
    return existing


def _upsert_sites(session: Session, chunk: list[AccountEntry], accounts: dict[str, dict],
                  now: datetime, report: ImportReport) -> dict[str, dict]:
    wanted = [site.external_id for entry in chunk for site in entry.account.sites]
    existing: dict[str, dict] = {}
    if wanted:
        existing = {row["external_id"]: row for row in
                    _rows(session, Site, col(Site.external_id).in_(wanted))}
    new_rows, changes = [], []
    for entry in chunk:
        account = accounts[entry.account.external_id]
        for given, line in zip(entry.account.sites, entry.site_lines, strict=True):
            row = existing.get(given.external_id)
            if row is not None and row["account_id"] != account["id"]:
                report.reject("site", line, given.external_id,
                              f"site belongs to another account ({row['account_id']})")
                continue
            hostname = fields.hostname_of(given.url) or fields.hostname_of(given.name)
            if given.deleted:
                if row is not None and row["deleted_at"] is None:
                    row["deleted_at"] = now
                    changes.append({"id": row["id"], "deleted_at": now, "updated_at": now})
                    report.sites.deleted += 1
                else:
                    report.sites.unchanged += 1
                continue
            if row is None:
                row = {"id": new_id("site"), "account_id": account["id"],
                       "external_id": given.external_id, "url": given.url,
                       "hostname": hostname, "name": given.name, "created_at": now,
                       "updated_at": now, "deleted_at": None}
                existing[given.external_id] = row
                new_rows.append(row)
                report.sites.created += 1
            elif (row["url"], row["name"], row["deleted_at"]) != (given.url, given.name, None):
                change = {"url": given.url, "name": given.name, "hostname": hostname,
                          "deleted_at": None, "updated_at": now}
                row.update(change)
                changes.append({"id": row["id"], **change})
                report.sites.updated += 1
            else:
                report.sites.unchanged += 1
    if new_rows:
        session.execute(insert(Site.__table__), new_rows)
    if changes:
        session.execute(update(Site), changes)
    return existing


def _check_contact(vault: Vault, given: ContactIn, line: str, account: dict,
                   sites: dict[str, dict]) -> _Checked:
    email = fields.checked_email(given.email)
    normalized_email = normalize_email(email)
    phone = (fields.e164_phone(given.phone, vault.default_phone_region)
             if given.phone and given.phone.strip() else None)
    role = fields.checked_role(given.role)
    locale = fields.checked_locale(given.locale)
    timezone = fields.checked_timezone(given.timezone)
    site_external_ids = sorted(set(given.sites))
    site_ids = []
    for external_id in site_external_ids:
        site = sites.get(external_id)
        if site is None or site["account_id"] != account["id"] or site["deleted_at"]:
            raise Invalid(f"site {external_id!r} is not a site of account "
                          f"{account['external_id']!r}")
        site_ids.append(site["id"])
    index = vault.crypto.index
    canonical = json.dumps([given.name, email, phone, role, locale, timezone, site_external_ids])
    return _Checked(
        entry=given, line=line, account_id=account["id"], email=email, phone=phone, role=role,
        locale=locale, timezone=timezone, site_ids=site_ids,
        site_external_ids=site_external_ids,
        email_index=index.digest("email", normalized_email),
        phone_index=index.digest("phone", phone) if phone else None,
        domain_index=index.digest("domain", normalized_email.rpartition("@")[2]),
        digest=index.digest("contact", canonical),
    )


def _upsert_contacts(session: Session, vault: Vault, actor: Actor, chunk: list[AccountEntry],
                     accounts: dict[str, dict], sites: dict[str, dict], source: str,
                     now: datetime, report: ImportReport) -> None:
    account_ids = [accounts[entry.account.external_id]["id"] for entry in chunk]
    wanted = [given.external_id for entry in chunk for given in entry.account.contacts]
    missing_sites = {ref for entry in chunk for given in entry.account.contacts
                     for ref in given.sites} - set(sites)
    if missing_sites:  # sites synced earlier, not named in this document
        for row in _rows(session, Site, col(Site.external_id).in_(missing_sites)):
            sites[row["external_id"]] = row
    existing: dict[tuple[str, str], dict] = {}
    if wanted:
        existing = {(row["account_id"], row["external_id"]): row for row in _rows(
            session, Contact, col(Contact.account_id).in_(account_ids),
            col(Contact.external_id).in_(wanted))}
    deleting = [existing[(accounts[entry.account.external_id]["id"], given.external_id)]["id"]
                for entry in chunk for given in entry.account.contacts
                if given.deleted and (accounts[entry.account.external_id]["id"],
                                      given.external_id) in existing]
    old_refs = _site_refs(session, deleting)
    cipher = vault.crypto.cipher
    new_rows, changes, versions, links, relinked = [], [], [], [], []
    for entry in chunk:
        account = accounts[entry.account.external_id]
        seen: set[str] = set()
        for given, line in zip(entry.account.contacts, entry.contact_lines, strict=True):
            if given.external_id in seen:
                report.reject("contact", line, given.external_id,
                              "this contact appears twice in the same account")
                continue
            seen.add(given.external_id)
            row = existing.get((account["id"], given.external_id))
            if given.deleted:
                if row is not None and row["deleted_at"] is None:
                    row.update(deleted_at=now, version=row["version"] + 1, updated_at=now)
                    changes.append({"id": row["id"], "deleted_at": now,
                                    "version": row["version"], "updated_at": now})
                    snapshot = _snapshot_of_row(vault, Contact(**row), old_refs[row["id"]])
                    versions.append(_version_row(vault, row, "deleted", now, actor, snapshot))
                    report.contacts.deleted += 1
                else:
                    report.contacts.unchanged += 1
                continue
            try:
                checked = _check_contact(vault, given, line, account, sites)
            except Invalid as exc:
                report.reject("contact", line, given.external_id, exc.message)
                continue
            if (row is not None and row["deleted_at"] is None
                    and row["content_digest"] == checked.digest):
                report.contacts.unchanged += 1
                continue
            encrypted = {
                "name_encrypted": cipher.encrypt(given.name, context=NAME),
                "email_encrypted": cipher.encrypt(checked.email, context=EMAIL),
                "phone_encrypted": (cipher.encrypt(checked.phone, context=PHONE)
                                    if checked.phone else None),
                "email_index": checked.email_index, "phone_index": checked.phone_index,
                "domain_index": checked.domain_index, "content_digest": checked.digest,
                "role": checked.role, "locale": checked.locale, "timezone": checked.timezone,
                "source": source, "updated_at": now, "deleted_at": None,
            }
            if row is None:
                row = {"id": new_id("ctc"), "account_id": account["id"],
                       "external_id": given.external_id, "version": 1, "created_at": now,
                       "last_confirmed_at": None, **encrypted}
                existing[(account["id"], given.external_id)] = row
                new_rows.append(row)
                event = "created"
                report.contacts.created += 1
            else:
                event = "restored" if row["deleted_at"] is not None else "updated"
                row.update(encrypted, version=row["version"] + 1)
                changes.append({"id": row["id"], "version": row["version"], **encrypted})
                relinked.append(row["id"])
                report.contacts.updated += 1
            links.extend({"contact_id": row["id"], "site_id": site_id}
                         for site_id in checked.site_ids)
            versions.append(_version_row(vault, row, event, now, actor, {
                "external_id": given.external_id, "name": given.name, "email": checked.email,
                "phone": checked.phone, "role": checked.role, "locale": checked.locale,
                "timezone": checked.timezone, "sites": checked.site_external_ids,
                "source": source, "last_confirmed_at": _iso(row["last_confirmed_at"])}))
    if new_rows:
        session.execute(insert(Contact.__table__), new_rows)
    if changes:
        session.execute(update(Contact), changes)
    if relinked:
        session.execute(delete(ContactSite).where(col(ContactSite.contact_id).in_(relinked)))
    if links:
        session.execute(insert(ContactSite.__table__), links)
    if versions:
        session.execute(insert(ContactVersion.__table__), versions)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _version_row(vault: Vault, row: dict, event: str, now: datetime, actor: Actor,
                 snapshot: dict) -> dict:
    sealed = vault.crypto.cipher.encrypt(json.dumps(snapshot), context=SNAPSHOT)
    return {"contact_id": row["id"], "account_id": row["account_id"], "version": row["version"],
            "event": event, "at": now, "actor_kind": actor.kind, "actor_id": actor.id,
            "snapshot_encrypted": sealed}


def _snapshot_of_row(vault: Vault, row: Contact, site_external_ids: list[str]) -> dict:
    """The contact as stored, decrypted, for a version written without new input."""
    view = _decrypt(vault, row, site_external_ids)
    return {"external_id": row.external_id, "name": view.name, "email": view.email,
            "phone": view.phone, "role": row.role, "locale": row.locale,
            "timezone": row.timezone, "sites": view.sites, "source": row.source,
            "last_confirmed_at": _iso(row.last_confirmed_at)}


# -- reading --------------------------------------------------------------------------------


def _decrypt(vault: Vault, row: Contact, site_external_ids: list[str]) -> ContactOut:
    cipher = vault.crypto.cipher
    return ContactOut(
        id=row.id, account_id=row.account_id, external_id=row.external_id,
        name=cipher.decrypt(row.name_encrypted, context=NAME),
        email=cipher.decrypt(row.email_encrypted, context=EMAIL),
        phone=cipher.decrypt(row.phone_encrypted, context=PHONE) if row.phone_encrypted else None,
        role=row.role, locale=row.locale, timezone=row.timezone, sites=site_external_ids,
        source=row.source, last_confirmed_at=row.last_confirmed_at, version=row.version)


def _site_refs(session: Session, contact_ids: Iterable[str]) -> dict[str, list[str]]:
    ids = list(contact_ids)
    refs: dict[str, list[str]] = {contact_id: [] for contact_id in ids}
    if not ids:
        return refs
    query = (select(ContactSite.contact_id, Site.external_id)
             .join(Site, col(Site.id) == col(ContactSite.site_id))
             .where(col(ContactSite.contact_id).in_(ids))
             .order_by(Site.external_id))
    for contact_id, external_id in session.exec(query):
        refs[contact_id].append(external_id)
    return refs


def get_account(*, session: Session, account_id: str, include_deleted: bool = False) -> Account:
    account = session.get(Account, parse_id(account_id, "acc"))
    if account is None or (account.deleted_at is not None and not include_deleted):
        raise NotFound("no account with this ID")
    return account


def list_contacts(*, session: Session, vault: Vault, account_id: str,
                  as_of: datetime | None = None) -> list[ContactOut]:
    """The account's contacts now, or as they were at `as_of` (from the versions)."""
    account = get_account(session=session, account_id=account_id, include_deleted=True)
    if as_of is not None:
        return _contacts_as_of(session, vault, account.id, as_of)
    rows = list(session.exec(select(Contact).where(
        Contact.account_id == account.id, col(Contact.deleted_at).is_(None))
        .order_by(Contact.external_id)))
    refs = _site_refs(session, (row.id for row in rows))
    return [_decrypt(vault, row, refs[row.id]) for row in rows]


def _contacts_as_of(session: Session, vault: Vault, account_id: str,
                    as_of: datetime) -> list[ContactOut]:
    query = (select(ContactVersion)
             .where(ContactVersion.account_id == account_id, col(ContactVersion.at) <= as_of)
             .order_by(ContactVersion.contact_id, ContactVersion.version))
    latest: dict[str, ContactVersion] = {}
    for version in session.exec(query):
        latest[version.contact_id] = version
    contacts = []
    for version in latest.values():
        if version.event == "deleted":
            continue
        snapshot = json.loads(vault.crypto.cipher.decrypt(version.snapshot_encrypted,
                                                          context=SNAPSHOT))
        confirmed = snapshot.get("last_confirmed_at")
        contacts.append(ContactOut(
            id=version.contact_id, account_id=account_id, external_id=snapshot["external_id"],
            name=snapshot["name"], email=snapshot["email"], phone=snapshot["phone"],
            role=snapshot["role"], locale=snapshot["locale"], timezone=snapshot["timezone"],
            sites=snapshot["sites"], source=snapshot["source"],
            last_confirmed_at=datetime.fromisoformat(confirmed) if confirmed else None,
            version=version.version))
    return sorted(contacts, key=lambda contact: contact.external_id)


def find_contacts(*, session: Session, vault: Vault, email: str | None = None,
                  phone: str | None = None, domain: str | None = None) -> list[Contact]:
    """Live contacts matching an email, a phone or an email domain: one indexed query."""
    index = vault.crypto.index
    query = select(Contact).where(col(Contact.deleted_at).is_(None))
    if email is not None:
        query = query.where(Contact.email_index == index.email(fields.checked_email(email)))
    elif phone is not None:
        normalized = fields.e164_phone(phone, vault.default_phone_region)
        query = query.where(Contact.phone_index == index.digest("phone", normalized))
    elif domain is not None:
        normalized = fields.email_domain("x@" + domain.strip().lstrip("@"))
        query = query.where(Contact.domain_index == index.digest("domain", normalized))
    else:
        raise Invalid("give an email, a phone or a domain to look up")
    return list(session.exec(query.order_by(Contact.id).limit(1000)))


def find_contacts_by_email(*, session: Session, vault: Vault, email: str) -> list[Contact]:
    return find_contacts(session=session, vault=vault, email=email)


def get_contact(*, session: Session, contact_id: str) -> Contact:
    contact = session.get(Contact, parse_id(contact_id, "ctc"))
    if contact is None:
        raise NotFound("no contact with this ID")
    return contact


# -- soft delete and restore ----------------------------------------------------------------

KINDS = {"account": ("acc", Account), "site": ("site", Site), "app": ("app", App),
         "contact": ("ctc", Contact)}


def _objects(session: Session, model, ids: list[str]) -> list:
    return list(session.exec(select(model).where(col(model.id).in_(ids)))) if ids else []


def _affected(session: Session, kind: str, ids: list[str], deleted_at: datetime | None):
    """The objects a delete (deleted_at None: live ones) or a restore (deleted at exactly
    `deleted_at`) touches: the targets and what hangs under them."""
    def matching(model, *conditions):
        state = (col(model.deleted_at).is_(None) if deleted_at is None
                 else model.deleted_at == deleted_at)
        return list(session.exec(select(model).where(state, *conditions)))

    accounts = sites = apps = contacts = []
    if kind == "account":
        accounts = matching(Account, col(Account.id).in_(ids))
        account_ids = [a.id for a in accounts]
        sites = matching(Site, col(Site.account_id).in_(account_ids))
        contacts = matching(Contact, col(Contact.account_id).in_(account_ids))
    elif kind == "site":
        sites = matching(Site, col(Site.id).in_(ids))
    elif kind == "app":
        apps = matching(App, col(App.id).in_(ids))
    else:
        contacts = matching(Contact, col(Contact.id).in_(ids))
    if sites and kind != "app":
        apps = matching(App, col(App.site_id).in_([site.id for site in sites]))
    return accounts, sites, apps, contacts


def soft_delete(*, session: Session, vault: Vault, actor: Actor, kind: str, ids: list[str],
                at: datetime | None = None) -> int:
    """Mark objects of one kind deleted, with what hangs under them (an account's sites,
    apps and contacts; a site's apps). Nothing is removed: `restore` brings it all back
    until the purge job runs after the retention period. Returns the targets' count."""
    at = at or utcnow()
    accounts, sites, apps, contacts = _affected(session, kind, ids, None)
    refs = _site_refs(session, [contact.id for contact in contacts])
    for contact in contacts:
        snapshot = _snapshot_of_row(vault, contact, refs[contact.id])
        contact.version += 1
        session.execute(insert(ContactVersion.__table__), [_version_row(
            vault, contact.model_dump(), "deleted", at, actor, snapshot)])
    for obj in (*accounts, *sites, *apps, *contacts):
        obj.deleted_at, obj.updated_at = at, at
        session.add(obj)
        audit.record(session, actor, f"{_kind_of(obj)}.deleted", target_kind=_kind_of(obj),
                     target_id=obj.id)
    session.flush()
    return len({"account": accounts, "site": sites, "app": apps, "contact": contacts}[kind])


def restore(*, session: Session, vault: Vault, actor: Actor, kind: str, ids: list[str],
            deleted_at: datetime) -> int:
    """Bring back objects deleted at `deleted_at`, with what was deleted along with them."""
    accounts, sites, apps, contacts = _affected(session, kind, ids, deleted_at)
    targets = {"account": accounts, "site": sites, "app": apps, "contact": contacts}[kind]
    parents = {"site": [s.account_id for s in sites], "contact": [c.account_id for c in contacts],
               "app": [a.site_id for a in apps]}.get(kind, [])
    parent_model = Site if kind == "app" else Account
    if any(parent.deleted_at for parent in _objects(session, parent_model, parents)):
        raise Conflict(f"restore the {'site' if kind == 'app' else 'account'} first: "
                       f"it is deleted too")
    now = utcnow()
    for obj in (*accounts, *sites, *apps, *contacts):
        obj.deleted_at, obj.updated_at = None, now
        session.add(obj)
        audit.record(session, actor, f"{_kind_of(obj)}.restored", target_kind=_kind_of(obj),
                     target_id=obj.id)
    refs = _site_refs(session, [contact.id for contact in contacts])
    for contact in contacts:
        contact.version += 1
        session.execute(insert(ContactVersion.__table__), [_version_row(
            vault, contact.model_dump(), "restored", now, actor,
            _snapshot_of_row(vault, contact, refs[contact.id]))])
    session.flush()
    return len(targets)


def _kind_of(obj) -> str:
    return {Account: "account", Site: "site", App: "app", Contact: "contact"}[type(obj)]


def contact_view(*, session: Session, vault: Vault, contact: Contact) -> ContactOut:
    return _decrypt(vault, contact, _site_refs(session, [contact.id])[contact.id])

"""Vault operations: sync (the one upsert path for import, API and console), lookups by blind
index, contacts as of a time, soft delete and restore. Other domains call these functions,
never the vault's tables.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, delete, func, or_, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.crypto import Crypto, normalize_email
from contacts.core.db import bulk_insert, get_or_404, in_chunks, utcnow
from contacts.core.errors import Conflict, Invalid
from contacts.core.ids import kind_of, new_id, parse_id
from contacts.vault import fields, guard
from contacts.vault.guard import Limits
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
from contacts.vault.schemas import AccountIn, ContactOut, ImportReport, Sample, SyncDeletion

NAME, EMAIL, PHONE, SNAPSHOT = CONTACT_NAME, CONTACT_EMAIL, CONTACT_PHONE, VERSION_SNAPSHOT


@dataclass(frozen=True)
class Vault:
    """What vault operations need besides the session: keys and a few settings."""

    crypto: Crypto
    default_phone_region: str = "US"
    batch_size: int = 500
    # The bulk-delete guard, which deletions arriving by sync go through too.
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_settings(cls, settings, crypto: Crypto) -> Vault:
        return cls(crypto=crypto, default_phone_region=settings.vault_default_phone_region,
                   batch_size=settings.vault_batch_size, limits=Limits.from_settings(settings))


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


# -- sync -----------------------------------------------------------------------------------


def sync(*, session: Session, vault: Vault, actor: Actor, entries: list[AccountEntry],
         source: str, progress: Callable[[int], None] | None = None,
         parallel: bool = False) -> ImportReport:
    """Upsert accounts, sites and contacts keyed on the product's external IDs.

    Idempotent: the same document twice changes nothing the second time. A bad entry is
    rejected with its line and reason; the rest goes on. With `parallel`, the checking and
    encryption of each batch runs in a worker process while this one writes the previous
    batch (large imports; the two cores both work). Deletions go through the bulk-delete
    guard once everything else is written (`_guard_deletions`).
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
    deleting: Deleting = {kind: {} for kind in ("contact", "app", "site")}
    pool = _worker_pool(vault) if parallel else None
    in_flight: deque = deque()  # (plan, prepared or its future), oldest first
    postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql:
        # Within one long import the planner's statistics still say the tables are empty,
        # and it would scan them whole for every batch's lookups: insist on the indexes.
        session.execute(text("SET LOCAL enable_seqscan = off"))
    try:
        for chunk in _chunks(unique, vault.batch_size):
            plan = _plan_chunk(session, vault, actor, chunk, report, deleting)
            in_flight.append((plan, pool.submit(_prepare_in_worker, plan.jobs, source, plan.now,
                                                actor) if pool
                              else prepare_contacts(vault, plan.jobs, source, plan.now, actor)))
            if len(in_flight) > (WORKERS if pool else 0):
                _apply_chunk(session, *in_flight.popleft(), report)
            if progress:
                progress(sum(len(entry.account.contacts) for entry in chunk))
        while in_flight:
            _apply_chunk(session, *in_flight.popleft(), report)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if postgresql:
            with contextlib.suppress(SQLAlchemyError):  # an aborted transaction refuses it
                session.execute(text("SET LOCAL enable_seqscan = on"))
    _guard_deletions(session, vault, actor, deleting, source, report)
    audit.record(session, actor, "vault.synced", source=source,
                 contacts=report.contacts.model_dump(), accounts=report.accounts.model_dump(),
                 sites=report.sites.model_dump(), apps=report.apps.model_dump())
    return report


# What a sync's document deletes, by kind: the live rows, by ID (until the guard decides).
Deleting = dict[str, dict[str, dict]]


def _guard_deletions(session: Session, vault: Vault, actor: Actor, deleting: Deleting,
                     source: str, report: ImportReport) -> None:
    """Each kind's deletions as one bulk delete: up to the cap applied now with an undo
    record; above it held as a dry run (count, sample, a token bound to exactly that set)
    that only an admin's confirmation with a reason applies. As POST /api/v1/deletions."""
    limits = vault.limits
    for kind, rows in deleting.items():
        if not rows:
            continue
        ids = sorted(rows)
        sample = [deletion_sample(row) for row in
                  sorted(rows.values(), key=lambda row: row["external_id"])[:5]]
        tally = getattr(report, kind + "s")
        if len(ids) > limits.cap:
            deletion, token = guard.hold(session=session, actor=actor, kind=kind, targets=ids,
                                         limits=limits, source=source)
            tally.held += len(ids)
            report.deletions.append(SyncDeletion(
                deletion_id=deletion.id, kind=kind, state="held", count=len(ids),
                sample=sample, ids=ids, token=token, expires_at=deletion.expires_at))
            continue
        at = utcnow()
        soft_delete(session=session, vault=vault, actor=actor, kind=kind, ids=ids, at=at)
        deletion = guard.record_applied(session=session, actor=actor, kind=kind, targets=ids,
                                        at=at, source=source)
        tally.deleted += len(ids)
        report.deletions.append(SyncDeletion(
            deletion_id=deletion.id, kind=kind, state="applied", count=len(ids), sample=sample,
            ids=ids, restorable_until=at + timedelta(days=limits.retention_days)))


def deletion_sample(row) -> Sample:
    """How a bulk delete shows a target (an ORM row or a plain one): IDs, and a site's or an
    app's name or URL; never a contact's personal data."""
    def value(name):
        return row.get(name) if isinstance(row, dict) else getattr(row, name, None)

    label = None if value("name_encrypted") else value("name")
    return Sample(id=value("id"), external_id=value("external_id"),
                  label=label or value("url"))


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


def _rows(session: Session, model, *conditions) -> list[dict]:
    """Plain dicts, not ORM objects: the sync writes in bulk and must not leave dirty
    objects behind for the unit of work to write a second time, row by row."""
    return [dict(row._mapping) for row in
            session.execute(select(model.__table__).where(*conditions))]


@dataclass
class _Wanted:
    """One account, site or app as the product describes it."""

    external_id: str
    line: str
    values: dict  # the columns the product gives: compared with the row, written if changed
    owner: tuple[str, str] | None = None  # (column, id) an existing row must already have
    deleted: bool = False


def _upsert(session: Session, kind: str, wanted: list[_Wanted], now: datetime,
            report: ImportReport, deleting: Deleting | None = None) -> dict[str, dict]:
    """Create, update or restore rows of one kind by external ID, in bulk, and collect the
    live rows to delete in `deleting` (for the guard). Returns every row read or written,
    by external ID (rows of another owner included)."""
    prefix, model = KINDS[kind]
    tally = getattr(report, kind + "s")
    existing: dict[str, dict] = {}
    for chunk in in_chunks({item.external_id for item in wanted}):
        existing.update((row["external_id"], row) for row in _rows(
            session, model, col(model.external_id).in_(chunk)))
    new_rows, changes = [], []
    for item in wanted:
        row = existing.get(item.external_id)
        if row is not None and item.owner and row[item.owner[0]] != item.owner[1]:
            column = item.owner[0]
            report.reject(kind, item.line, item.external_id,
                          f"{kind} belongs to another {column.removesuffix('_id')} "
                          f"({row[column]})")
        elif item.deleted:
            if row is not None and row["deleted_at"] is None and row["id"] not in deleting[kind]:
                deleting[kind][row["id"]] = row
            else:
                tally.unchanged += 1
        elif row is None:
            row = {"id": new_id(prefix), "external_id": item.external_id,
                   **(dict([item.owner]) if item.owner else {}), **item.values,
                   "created_at": now, "updated_at": now, "deleted_at": None}
            existing[item.external_id] = row
            new_rows.append(row)
            tally.created += 1
        elif row["deleted_at"] is not None or any(row[name] != value
                                                  for name, value in item.values.items()):
            change = {**item.values, "deleted_at": None, "updated_at": now}
            row.update(change)
            changes.append({"id": row["id"], **change})
            tally.updated += 1
        else:
            tally.unchanged += 1
    if new_rows:
        bulk_insert(session.connection(), model.__table__, new_rows)
    if changes:
        session.execute(update(model), changes)
    return existing


def _upsert_accounts(session: Session, chunk: list[AccountEntry], now: datetime,
                     report: ImportReport) -> dict[str, dict]:
    return _upsert(session, "account", [
        _Wanted(entry.account.external_id, entry.line, {"name": entry.account.name})
        for entry in chunk], now, report)


def _upsert_sites(session: Session, chunk: list[AccountEntry], accounts: dict[str, dict],
                  now: datetime, report: ImportReport, deleting: Deleting) -> dict[str, dict]:
    return _upsert(session, "site", [
        _Wanted(site.external_id, line,
                {"url": site.url, "name": site.name,
                 "hostname": fields.hostname_of(site.url) or fields.hostname_of(site.name)},
                owner=("account_id", accounts[entry.account.external_id]["id"]),
                deleted=site.deleted)
        for entry in chunk
        for site, line in zip(entry.account.sites, entry.site_lines, strict=True)], now, report,
        deleting)


def _upsert_apps(session: Session, chunk: list[AccountEntry], accounts: dict[str, dict],
                 sites: dict[str, dict], now: datetime, report: ImportReport,
                 deleting: Deleting) -> None:
    wanted = []
    for entry in chunk:
        account_id = accounts[entry.account.external_id]["id"]
        for site_in, line in zip(entry.account.sites, entry.site_lines, strict=True):
            site = sites.get(site_in.external_id)
            if site is None or site["account_id"] != account_id:
                continue  # its site was rejected, and said so
            wanted += [_Wanted(app.external_id, line, {"name": app.name},
                               owner=("site_id", site["id"]), deleted=app.deleted)
                       for app in site_in.apps]
    _upsert(session, "app", wanted, now, report, deleting)


# A contact to check and encrypt: plain values only, so it can go to a worker process.
# (line, account_id, contact fields (country after phone), site ids or an error, existing
#  live digest, existing id, existing version, whether the existing row is deleted)
ContactJob = tuple


@dataclass
class _Plan:
    """One batch after its reads: what to prepare, and what the writes will need."""

    jobs: list[ContactJob]
    existing: dict[tuple[str, str], dict]
    now: datetime


def _plan_chunk(session: Session, vault: Vault, actor: Actor, chunk: list[AccountEntry],
                report: ImportReport, deleting: Deleting) -> _Plan:
    now = utcnow()
    accounts = _upsert_accounts(session, chunk, now, report)
    sites = _upsert_sites(session, chunk, accounts, now, report, deleting)
    _upsert_apps(session, chunk, accounts, sites, now, report, deleting)
    account_ids = [accounts[entry.account.external_id]["id"] for entry in chunk]
    wanted = [given.external_id for entry in chunk for given in entry.account.contacts]
    missing_sites = {ref for entry in chunk for given in entry.account.contacts
                     for ref in given.sites} - set(sites)
    # Reads in chunks: a batch is weighed by its contacts, and the sites its accounts name
    # can be many more than one IN (...) takes.
    for part in in_chunks(missing_sites):  # sites synced earlier, not named in this document
        for row in _rows(session, Site, col(Site.external_id).in_(part)):
            sites[row["external_id"]] = row
    existing: dict[tuple[str, str], dict] = {}
    for part in in_chunks(set(wanted)):
        existing.update(((row["account_id"], row["external_id"]), row) for row in _rows(
            session, Contact, col(Contact.account_id).in_(account_ids),
            col(Contact.external_id).in_(part)))
    plan = _Plan(jobs=[], existing=existing, now=now)
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
                    deleting["contact"][row["id"]] = row
                else:
                    report.contacts.unchanged += 1
                continue
            site_ids, site_error = [], None
            for external_id in sorted(set(given.sites)):
                site = sites.get(external_id)
                if (site is None or site["account_id"] != account["id"] or site["deleted_at"]
                        or site["id"] in deleting["site"]):
                    site_error = (f"site {external_id!r} is not a site of account "
                                  f"{account['external_id']!r}")
                    break
                site_ids.append(site["id"])
            live_digest = row["content_digest"] if row and row["deleted_at"] is None else None
            plan.jobs.append((line, account["id"], given.external_id, given.name, given.email,
                              given.phone, given.country, given.role, given.locale,
                              given.timezone,
                              sorted(set(given.sites)), site_ids, site_error, live_digest,
                              row["id"] if row else None, row["version"] if row else 0,
                              bool(row and row["deleted_at"])))
    return plan


def prepare_contacts(vault: Vault, jobs: list[ContactJob], source: str, now: datetime,
                     actor: Actor) -> list:
    """Check, normalize, index and encrypt contacts, and build the rows to write. CPU only,
    no database (it runs in a worker process for large imports). For each job: None
    (unchanged), a rejection reason (str), or (event, contact row, version row, links)."""
    cipher, index = vault.crypto.cipher, vault.crypto.index
    results: list = []
    for (_line, account_id, external_id, name, email, phone, country, role, locale, timezone,
         site_external_ids, site_ids, site_error, live_digest, existing_id,
         existing_version, was_deleted) in jobs:
        try:
            if site_error:
                raise Invalid(site_error)
            email = fields.checked_email(email)
            normalized_email = normalize_email(email)
            role = fields.checked_role(role)
            locale = fields.checked_locale(locale)
            region = fields.phone_region(fields.checked_country(country), locale,
                                         vault.default_phone_region)
            phone = fields.e164_phone(phone, region) if phone and phone.strip() else None
            timezone = fields.checked_timezone(timezone)
        except Invalid as exc:
            results.append(exc.message)
            continue
        digest = index.digest("contact", json.dumps(
            [name, email, phone, role, locale, timezone, site_external_ids]))
        if digest == live_digest:
            results.append(None)
            continue
        snapshot = json.dumps({
            "external_id": external_id, "name": name, "email": email, "phone": phone,
            "role": role, "locale": locale, "timezone": timezone, "sites": site_external_ids,
            "source": source, "last_confirmed_at": now.isoformat()})
        stored = {
            "name_encrypted": cipher.encrypt(name, context=NAME),
            "email_encrypted": cipher.encrypt(email, context=EMAIL),
            "phone_encrypted": cipher.encrypt(phone, context=PHONE) if phone else None,
            "email_index": index.digest("email", normalized_email),
            "phone_index": index.digest("phone", phone) if phone else None,
            "domain_index": index.digest("domain", normalized_email.rpartition("@")[2]),
            "content_digest": digest, "role": role, "locale": locale, "timezone": timezone,
            "source": source, "updated_at": now, "deleted_at": None,
            "undeliverable_at": None,  # new details: worth writing to again
            # The product has just vouched for these details: they count as confirmed now,
            # so the freshness job does not email a whole fresh import at once.
            "last_confirmed_at": now,
        }
        version = existing_version + 1
        if existing_id is None:
            contact_id = new_id("ctc")
            event = "created"
            row = {"id": contact_id, "account_id": account_id, "external_id": external_id,
                   "version": 1, "created_at": now, **stored}
        else:
            contact_id = existing_id
            event = "restored" if was_deleted else "updated"
            row = {"id": contact_id, "version": version, **stored}
        results.append((event, row, {
            "contact_id": contact_id, "account_id": account_id, "version": version,
            "event": event, "at": now, "actor_kind": actor.kind, "actor_id": actor.id,
            "snapshot_encrypted": cipher.encrypt(snapshot, context=SNAPSHOT)},
            [{"contact_id": contact_id, "site_id": site_id} for site_id in site_ids]))
    return results


def _apply_chunk(session: Session, plan: _Plan, prepared, report: ImportReport) -> None:
    """Write one batch: new contacts, changed ones, their site links and versions."""
    if hasattr(prepared, "result"):
        prepared = prepared.result()
    new_rows, links, relinked, changes, versions = [], [], [], [], []
    tally = report.contacts
    for job, outcome in zip(plan.jobs, prepared, strict=True):
        if outcome is None:
            tally.unchanged += 1
        elif isinstance(outcome, str):
            report.reject("contact", job[0], job[2], outcome)
        else:
            event, row, version, contact_links = outcome
            if event == "created":
                new_rows.append(row)
                tally.created += 1
            else:
                changes.append(row)
                relinked.append(row["id"])
                tally.updated += 1
            versions.append(version)
            links.extend(contact_links)
    if new_rows:
        bulk_insert(session.connection(), Contact.__table__, new_rows)
    if changes:
        session.execute(update(Contact), changes)
    for part in in_chunks(relinked):
        session.execute(delete(ContactSite).where(col(ContactSite.contact_id).in_(part)))
    if links:
        bulk_insert(session.connection(), ContactSite.__table__, links)
    if versions:
        bulk_insert(session.connection(), ContactVersion.__table__, versions)


# -- the worker process of a parallel sync ---------------------------------------------------

_worker_vault: Vault | None = None


# Worker processes of a parallel sync; each has a batch in flight while this one writes.
WORKERS = 2


def _worker_pool(vault: Vault) -> ProcessPoolExecutor:
    # "spawn": a fresh interpreter that shares no database connection with this process.
    return ProcessPoolExecutor(
        max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(vault.crypto.cipher.keyring, vault.crypto.index.key,
                  vault.default_phone_region, vault.batch_size))


def _start_worker(keyring, blind_index_key: bytes, region: str, batch_size: int) -> None:
    global _worker_vault
    _worker_vault = Vault(Crypto(keyring, blind_index_key), region, batch_size)


def _prepare_in_worker(jobs: list[ContactJob], source: str, now: datetime,
                       actor: Actor) -> list:
    return prepare_contacts(_worker_vault, jobs, source, now, actor)


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
    for chunk in in_chunks(ids):
        query = (select(ContactSite.contact_id, Site.external_id)
                 .join(Site, col(Site.id) == col(ContactSite.site_id))
                 .where(col(ContactSite.contact_id).in_(chunk))
                 .order_by(Site.external_id))
        for contact_id, external_id in session.exec(query):
            refs[contact_id].append(external_id)
    return refs


def get_account(*, session: Session, account_id: str, include_deleted: bool = False) -> Account:
    return get_or_404(session, Account, account_id, "acc", "no account with this ID",
                      include_deleted=include_deleted)


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
    return get_or_404(session, Contact, contact_id, "ctc", "no contact with this ID")


# -- soft delete and restore ----------------------------------------------------------------

KINDS = {"account": ("acc", Account), "site": ("site", Site), "app": ("app", App),
         "contact": ("ctc", Contact)}


def _objects(session: Session, model, ids: list[str]) -> list:
    return [row for chunk in in_chunks(set(ids))
            for row in session.exec(select(model).where(col(model.id).in_(chunk)))]


def _affected(session: Session, kind: str, ids: list[str], deleted_at: datetime | None):
    """The objects a delete (deleted_at None: live ones) or a restore (deleted at exactly
    `deleted_at`) touches: the targets and what hangs under them."""
    def matching(column, values: list[str]) -> list:
        model = column.class_
        state = (col(model.deleted_at).is_(None) if deleted_at is None
                 else model.deleted_at == deleted_at)
        return [row for chunk in in_chunks(values)  # a bulk delete may hold many thousands
                for row in session.exec(select(model).where(state, column.in_(chunk)))]

    accounts = sites = apps = contacts = []
    if kind == "account":
        accounts = matching(col(Account.id), ids)
        account_ids = [a.id for a in accounts]
        sites = matching(col(Site.account_id), account_ids)
        contacts = matching(col(Contact.account_id), account_ids)
    elif kind == "site":
        sites = matching(col(Site.id), ids)
    elif kind == "app":
        apps = matching(col(App.id), ids)
    else:
        contacts = matching(col(Contact.id), ids)
    if sites and kind != "app":
        apps = matching(col(App.site_id), [site.id for site in sites])
    return accounts, sites, apps, contacts


def soft_delete(*, session: Session, vault: Vault, actor: Actor, kind: str, ids: list[str],
                at: datetime | None = None) -> int:
    """Mark objects of one kind deleted, with what hangs under them (an account's sites,
    apps and contacts; a site's apps). Nothing is removed: `restore` brings it all back
    until the purge job runs after the retention period. Returns the targets' count."""
    at = at or utcnow()
    accounts, sites, apps, contacts = _affected(session, kind, ids, None)
    _record_versions(session, vault, actor, contacts, "deleted", at)
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
    _record_versions(session, vault, actor, contacts, "restored", now)
    session.flush()
    return len(targets)


def _record_versions(session: Session, vault: Vault, actor: Actor, contacts: list[Contact],
                     event: str, at: datetime) -> None:
    """One new version per contact, as it stands, written in one insert."""
    if not contacts:
        return
    refs = _site_refs(session, [contact.id for contact in contacts])
    rows = []
    for contact in contacts:
        contact.version += 1
        rows.append(_version_row(vault, contact.model_dump(), event, at, actor,
                                 _snapshot_of_row(vault, contact, refs[contact.id])))
    bulk_insert(session.connection(), ContactVersion.__table__, rows)


def record_contact_version(*, session: Session, vault: Vault, actor: Actor, contact: Contact,
                           event: str, at: datetime) -> None:
    """For other vault modules (confirmation): a version after a change they made."""
    _record_versions(session, vault, actor, [contact], event, at)


def _kind_of(obj) -> str:
    return {Account: "account", Site: "site", App: "app", Contact: "contact"}[type(obj)]


def contact_view(*, session: Session, vault: Vault, contact: Contact) -> ContactOut:
    return _decrypt(vault, contact, _site_refs(session, [contact.id])[contact.id])


# -- the console: search, account pages, reveals ----------------------------------------------

PHONE_LIKE = re.compile(r"^\+?[\d\s().\-/]{6,}$")


@dataclass(frozen=True)
class AccountSummary:
    id: str
    external_id: str
    name: str
    sites: int
    contacts: int
    confirmed_admins: int


@dataclass(frozen=True)
class MaskedContact:
    id: str
    external_id: str
    name: str
    email: str
    phone: str | None
    role: str
    locale: str
    timezone: str
    sites: list[str]
    last_confirmed_at: datetime | None
    stale: bool
    deleted_at: datetime | None
    undeliverable_at: datetime | None = None


def search_accounts(*, session: Session, vault: Vault, query: str, confirm_after_days: int,
                    limit: int = 50) -> list[AccountSummary]:
    """Accounts found by a contact's email, phone or email domain (blind indexes), or by
    account name, external ID, site name or hostname. Two queries, whatever the count."""
    text_query = query.strip()
    account_ids: set[str] | None = None
    conditions = [col(Account.deleted_at).is_(None)]
    if text_query:
        account_ids = set()
        lowered = text_query.lower()
        try:
            if "@" in text_query and not text_query.startswith("@"):
                found = find_contacts(session=session, vault=vault, email=text_query)
            elif PHONE_LIKE.match(text_query):
                found = find_contacts(session=session, vault=vault, phone=text_query)
            elif " " not in text_query and "." in text_query:
                found = find_contacts(session=session, vault=vault, domain=text_query)
            else:
                found = []
        except Invalid:
            found = []
        account_ids |= {contact.account_id for contact in found}
        pattern = f"%{lowered}%"
        hostname = fields.hostname_of(text_query)
        site_match = select(Site.account_id).where(
            col(Site.deleted_at).is_(None),
            func.lower(col(Site.name)).like(pattern) | (col(Site.hostname) == hostname)
            if hostname else func.lower(col(Site.name)).like(pattern))
        conditions.append(
            col(Account.id).in_(account_ids) | func.lower(col(Account.name)).like(pattern)
            | (col(Account.external_id) == text_query) | col(Account.id).in_(site_match)
            | (col(Account.id) == text_query))
    accounts = list(session.exec(select(Account).where(*conditions)
                                 .order_by(Account.name).limit(limit)))
    ids = [account.id for account in accounts]
    counts = _account_counts(session, ids, confirm_after_days)
    return [AccountSummary(account.id, account.external_id, account.name,
                           *counts.get(account.id, (0, 0, 0))) for account in accounts]


def _account_counts(session: Session, ids: list[str], confirm_after_days: int
                    ) -> dict[str, tuple[int, int, int]]:
    if not ids:
        return {}
    fresh_after = utcnow() - timedelta(days=confirm_after_days)
    sites = dict(session.exec(select(Site.account_id, func.count()).where(
        col(Site.account_id).in_(ids), col(Site.deleted_at).is_(None))
        .group_by(Site.account_id)).all())
    confirmed = case(((col(Contact.role) == "site_admin")
                      & (col(Contact.last_confirmed_at) >= fresh_after), 1), else_=0)
    contacts = {account_id: (total, admins or 0) for account_id, total, admins in session.exec(
        select(Contact.account_id, func.count(), func.sum(confirmed)).where(
            col(Contact.account_id).in_(ids), col(Contact.deleted_at).is_(None))
        .group_by(Contact.account_id)).all()}
    return {account_id: (sites.get(account_id, 0), *contacts.get(account_id, (0, 0)))
            for account_id in ids}


def account_contacts_masked(*, session: Session, vault: Vault, account_id: str,
                            confirm_after_days: int) -> tuple[list[Site], list[MaskedContact]]:
    """An account's live sites, and its contacts (deleted ones too), masked."""
    account = get_account(session=session, account_id=account_id)
    sites = list(session.exec(select(Site).where(Site.account_id == account.id,
                                                 col(Site.deleted_at).is_(None))
                              .order_by(Site.external_id)))
    rows = list(session.exec(select(Contact).where(Contact.account_id == account.id)
                             .order_by(col(Contact.deleted_at).is_not(None), Contact.role,
                                       Contact.external_id)))
    refs = _site_refs(session, [row.id for row in rows])
    fresh_after = utcnow() - timedelta(days=confirm_after_days)
    masked = []
    for row in rows:
        view = _decrypt(vault, row, refs[row.id])
        masked.append(MaskedContact(
            id=row.id, external_id=row.external_id, name=fields.mask_name(view.name),
            email=fields.mask_email(view.email), phone=fields.mask_phone(view.phone),
            role=row.role, locale=row.locale, timezone=row.timezone, sites=view.sites,
            last_confirmed_at=row.last_confirmed_at,
            stale=(row.last_confirmed_at is None or row.last_confirmed_at < fresh_after
                   or row.undeliverable_at is not None),
            deleted_at=row.deleted_at, undeliverable_at=row.undeliverable_at))
    return sites, masked


def reveal_contact(*, session: Session, vault: Vault, actor: Actor, contact_id: str,
                   reason: str) -> ContactOut:
    """A staff member reads a contact in clear: only with a reason, always audited."""
    reason = reason.strip()
    if len(reason) < 5:
        raise Invalid("say why you need to see this contact (at least 5 characters)")
    contact = get_contact(session=session, contact_id=contact_id)
    audit.record(session, actor, "contact.revealed", target_kind="contact",
                 target_id=contact.id, account_id=contact.account_id, reason=reason[:500])
    return contact_view(session=session, vault=vault, contact=contact)


def stale_accounts(*, session: Session, confirm_after_days: int,
                   limit: int = 200) -> list[AccountSummary]:
    """Live accounts with no site admin who confirmed within the period."""
    fresh_after = utcnow() - timedelta(days=confirm_after_days)
    confirmed = select(Contact.account_id).where(
        col(Contact.deleted_at).is_(None), Contact.role == "site_admin",
        col(Contact.last_confirmed_at) >= fresh_after)
    accounts = list(session.exec(select(Account).where(
        col(Account.deleted_at).is_(None), col(Account.id).not_in(confirmed))
        .order_by(Account.name).limit(limit)))
    counts = _account_counts(session, [account.id for account in accounts], confirm_after_days)
    return [AccountSummary(account.id, account.external_id, account.name,
                           *counts.get(account.id, (0, 0, 0))) for account in accounts]


# -- what other areas ask of the vault (the intake's matching, the console) -----------------


def sites_by_hostname(*, session: Session, value: str) -> list[Site]:
    """Live sites whose hostname is the one in a URL or host as a customer remembers it
    (with or without "www.")."""
    host = fields.hostname_of(value)
    if host is None:
        return []
    bare = host.removeprefix("www.")
    query = select(Site).where(col(Site.hostname).in_({bare, "www." + bare}),
                               col(Site.deleted_at).is_(None))
    return list(session.exec(query.order_by(Site.id).limit(50)))


def sites_named_like(*, session: Session, words: list[str], limit: int = 200) -> list[Site]:
    """Live sites whose name or hostname contains one of the words (a bounded first cut for
    a similarity match)."""
    if not words:
        return []
    conditions = [func.lower(Site.name).contains(word, autoescape=True) for word in words]
    conditions += [col(Site.hostname).contains(word, autoescape=True) for word in words]
    query = select(Site).where(or_(*conditions), col(Site.deleted_at).is_(None))
    return list(session.exec(query.order_by(Site.id).limit(limit)))


def accounts_named_like(*, session: Session, words: list[str],
                        limit: int = 200) -> list[Account]:
    if not words:
        return []
    conditions = [func.lower(Account.name).contains(word, autoescape=True) for word in words]
    query = select(Account).where(or_(*conditions), col(Account.deleted_at).is_(None))
    return list(session.exec(query.order_by(Account.id).limit(limit)))


def accounts_by_id(*, session: Session, ids: Iterable[str]) -> dict[str, Account]:
    wanted = set(ids)
    if not wanted:
        return {}
    return {account.id: account for chunk in in_chunks(wanted)
            for account in session.exec(select(Account).where(col(Account.id).in_(chunk)))}


def mask_email(address: str) -> str:
    return fields.mask_email(address)


def live_sites(*, session: Session, refs: Iterable[str]) -> dict[str, Site]:
    """Live sites by site ID (site_...) or by the product's external ID, keyed by the
    reference given; an ID of another kind is refused, naming both kinds."""
    refs = [ref.strip() for ref in refs if ref and ref.strip()]
    ids = {ref: parse_id(ref, "site") for ref in refs if "_" in ref and kind_of(ref)}
    external = [ref for ref in refs if ref not in ids]
    found: dict[str, Site] = {}
    by_id = {site.id: site for chunk in in_chunks(set(ids.values()))
             for site in session.exec(select(Site).where(
                 col(Site.id).in_(chunk), col(Site.deleted_at).is_(None)))}
    found.update({ref: by_id[site_id] for ref, site_id in ids.items() if site_id in by_id})
    by_external = {site.external_id: site for chunk in in_chunks(external)
                   for site in session.exec(select(Site).where(
                       col(Site.external_id).in_(chunk), col(Site.deleted_at).is_(None)))}
    found.update({ref: by_external[ref] for ref in external if ref in by_external})
    return found


def flag_undeliverable(*, session: Session, actor: Actor, bounced_at: dict[str, datetime],
                       now: datetime) -> list[str]:
    """Mark contacts whose mail was refused for good, for the freshness work (shown as
    stale until they confirm their details); `bounced_at` holds, per contact, when the
    refused message was written. A contact confirmed or changed since is left alone: the
    refusal was of the old details. Returns those newly flagged."""
    flagged = []
    for chunk in in_chunks(sorted(bounced_at)):
        for contact in session.exec(select(Contact).where(
                col(Contact.id).in_(chunk), col(Contact.undeliverable_at).is_(None))):
            written = bounced_at[contact.id]
            if contact.updated_at > written or (contact.last_confirmed_at is not None
                                                and contact.last_confirmed_at > written):
                continue
            contact.undeliverable_at = now
            session.add(contact)
            flagged.append(contact.id)
            audit.record(session, actor, "contact.undeliverable", target_kind="contact",
                         target_id=contact.id)
    return flagged


@dataclass(frozen=True)
class Recipient:
    """What a message to a contact needs: no more is decrypted."""

    id: str
    account_id: str
    email: str
    locale: str


def recipients_of_accounts(*, session: Session, vault: Vault,
                           account_ids: Iterable[str]) -> dict[str, list[Recipient]]:
    """The live contacts of many accounts with their address and locale, in one query per
    10,000 accounts (a fan-out reads every affected account's contacts)."""
    wanted = sorted(set(account_ids))
    found: dict[str, list[Recipient]] = {account_id: [] for account_id in wanted}
    decrypt = vault.crypto.cipher.decrypt
    for chunk in in_chunks(wanted):
        rows = session.execute(
            select(Contact.id, Contact.account_id, Contact.email_encrypted, Contact.locale)
            .where(col(Contact.account_id).in_(chunk), col(Contact.deleted_at).is_(None))
            .order_by(Contact.account_id, Contact.external_id))
        for contact_id, account_id, sealed, locale in rows:
            found[account_id].append(Recipient(contact_id, account_id,
                                               decrypt(sealed, context=EMAIL), locale))
    return found


def account_names(*, session: Session, ids: Iterable[str]) -> dict[str, str]:
    return {account_id: name for chunk in in_chunks(set(ids))
            for account_id, name in session.execute(
                select(Account.id, Account.name).where(col(Account.id).in_(chunk)))}


def site_names(*, session: Session, ids: Iterable[str]) -> dict[str, str]:
    """Each site's name for people: its name, else its hostname, else its external ID."""
    return {site_id: name or hostname or external_id for chunk in in_chunks(set(ids))
            for site_id, name, hostname, external_id in session.execute(
                select(Site.id, Site.name, Site.hostname, Site.external_id)
                .where(col(Site.id).in_(chunk)))}


def contacts_of_accounts(*, session: Session, vault: Vault,
                         account_ids: Iterable[str]) -> dict[str, list[ContactOut]]:
    """The live contacts of several accounts, decrypted, in one query."""
    wanted = set(account_ids)
    found: dict[str, list[ContactOut]] = {account_id: [] for account_id in wanted}
    if not wanted:
        return found
    rows = [row for chunk in in_chunks(sorted(wanted))
            for row in session.exec(select(Contact).where(col(Contact.account_id).in_(chunk),
                                                          col(Contact.deleted_at).is_(None))
                                    .order_by(Contact.account_id, Contact.external_id))]
    refs = _site_refs(session, (row.id for row in rows))
    for row in rows:
        found[row.account_id].append(_decrypt(vault, row, refs[row.id]))
    return found

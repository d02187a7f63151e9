"""The bulk sync: the one upsert path of accounts, sites, apps and contacts from the product's
feed (CLI import, console upload, POST /api/v1/sync): the reads and bulk writes of each batch
(its contacts are checked and encrypted by `sync_workers.py`), and the deletions it collects,
through the bulk-delete guard.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.db import bulk_insert, in_chunks, utcnow
from contacts.core.ids import new_id
from contacts.vault import fields, guard, service, softdelete
from contacts.vault.models import Contact, ContactSite, ContactVersion, Site
from contacts.vault.schemas import AccountIn, ImportReport, SyncDeletion
from contacts.vault.service import Vault
from contacts.vault.sync_workers import (
    WORKERS,
    ContactJob,
    prepare_contacts,
    prepare_in_worker,
    worker_pool,
)


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
    pool = worker_pool(vault) if parallel else None
    in_flight: deque = deque()  # (plan, prepared or its future), oldest first
    postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql:
        # Within one long import the planner's statistics still say the tables are empty,
        # and it would scan them whole for every batch's lookups: insist on the indexes.
        session.execute(text("SET LOCAL enable_seqscan = off"))
    try:
        for chunk in _chunks(unique, vault.batch_size):
            plan = _plan_chunk(session, vault, actor, chunk, report, deleting)
            in_flight.append((plan, pool.submit(prepare_in_worker, plan.jobs, source, plan.now,
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
        sample = [guard.deletion_sample(row) for row in
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
        softdelete.soft_delete(session=session, vault=vault, actor=actor, kind=kind, ids=ids, at=at)
        deletion = guard.record_applied(session=session, actor=actor, kind=kind, targets=ids,
                                        at=at, source=source)
        tally.deleted += len(ids)
        report.deletions.append(SyncDeletion(
            deletion_id=deletion.id, kind=kind, state="applied", count=len(ids), sample=sample,
            ids=ids, restorable_until=at + timedelta(days=limits.retention_days)))


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
    prefix, model = service.KINDS[kind]
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
            plan.jobs.append(ContactJob(
                line=line, account_id=account["id"], external_id=given.external_id,
                name=given.name, email=given.email, phone=given.phone, country=given.country,
                role=given.role, locale=given.locale, timezone=given.timezone,
                site_external_ids=sorted(set(given.sites)), site_ids=site_ids,
                site_error=site_error, live_digest=live_digest,
                existing_id=row["id"] if row else None,
                existing_version=row["version"] if row else 0,
                was_deleted=bool(row and row["deleted_at"])))
    return plan


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
            report.reject("contact", job.line, job.external_id, outcome)
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

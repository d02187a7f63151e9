"""The CPU half of a sync: its contacts checked, normalized, indexed and encrypted into the rows
to write, with no database; for large imports in worker processes (`parallel=True`) while the
sync writes the previous batch.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from contacts.core.audit import Actor
from contacts.core.crypto import Crypto, normalize_email
from contacts.core.errors import Invalid
from contacts.core.ids import new_id
from contacts.vault import fields
from contacts.vault.models import CONTACT_EMAIL, CONTACT_NAME, CONTACT_PHONE, VERSION_SNAPSHOT
from contacts.vault.service import Vault

NAME, EMAIL, PHONE, SNAPSHOT = CONTACT_NAME, CONTACT_EMAIL, CONTACT_PHONE, VERSION_SNAPSHOT


@dataclass(frozen=True, slots=True)
class ContactJob:
    """A contact to check and encrypt: plain values only, so it can go to a worker process."""

    line: str
    account_id: str
    external_id: str
    name: str
    email: str
    phone: str | None
    country: str | None  # not stored: the region a phone without its +country code is of
    role: str
    locale: str
    timezone: str
    site_external_ids: list[str]
    site_ids: list[str]
    site_error: str | None  # why the contact cannot link to its sites, if it cannot
    live_digest: str | None  # the existing live row's content digest
    existing_id: str | None
    existing_version: int
    was_deleted: bool  # whether the existing row is deleted


def prepare_contacts(vault: Vault, jobs: list[ContactJob], source: str, now: datetime,
                     actor: Actor) -> list:
    """Check, normalize, index and encrypt contacts, and build the rows to write. CPU only,
    no database (it runs in a worker process for large imports). For each job: None
    (unchanged), a rejection reason (str), or (event, contact row, version row, links)."""
    cipher, index = vault.crypto.cipher, vault.crypto.index
    results: list = []
    for job in jobs:
        try:
            if job.site_error:
                raise Invalid(job.site_error)
            email = fields.checked_email(job.email)
            normalized_email = normalize_email(email)
            role = fields.checked_role(job.role)
            locale = fields.checked_locale(job.locale)
            region = fields.phone_region(fields.checked_country(job.country), locale,
                                         vault.default_phone_region)
            phone = (fields.e164_phone(job.phone, region) if job.phone and job.phone.strip()
                     else None)
            timezone = fields.checked_timezone(job.timezone)
        except Invalid as exc:
            results.append(exc.message)
            continue
        digest = index.digest("contact", json.dumps(
            [job.name, email, phone, role, locale, timezone, job.site_external_ids]))
        if digest == job.live_digest:
            results.append(None)
            continue
        snapshot = json.dumps({
            "external_id": job.external_id, "name": job.name, "email": email, "phone": phone,
            "role": role, "locale": locale, "timezone": timezone, "sites": job.site_external_ids,
            "source": source, "last_confirmed_at": now.isoformat()})
        stored = {
            "name_encrypted": cipher.encrypt(job.name, context=NAME),
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
        version = job.existing_version + 1
        if job.existing_id is None:
            contact_id = new_id("ctc")
            event = "created"
            row = {"id": contact_id, "account_id": job.account_id, "external_id": job.external_id,
                   "version": 1, "created_at": now, **stored}
        else:
            contact_id = job.existing_id
            event = "restored" if job.was_deleted else "updated"
            row = {"id": contact_id, "version": version, **stored}
        results.append((event, row, {
            "contact_id": contact_id, "account_id": job.account_id, "version": version,
            "event": event, "at": now, "actor_kind": actor.kind, "actor_id": actor.id,
            "snapshot_encrypted": cipher.encrypt(snapshot, context=SNAPSHOT)},
            [{"contact_id": contact_id, "site_id": site_id} for site_id in job.site_ids]))
    return results


# -- the worker process of a parallel sync ---------------------------------------------------

_worker_vault: Vault | None = None


# Worker processes of a parallel sync; each has a batch in flight while this one writes.
WORKERS = 2


def worker_pool(vault: Vault) -> ProcessPoolExecutor:
    # "spawn": a fresh interpreter that shares no database connection with this process.
    return ProcessPoolExecutor(
        max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(vault.crypto.cipher.keyring, vault.crypto.index.key,
                  vault.default_phone_region, vault.batch_size))


def _start_worker(keyring, blind_index_key: bytes, region: str, batch_size: int) -> None:
    global _worker_vault
    _worker_vault = Vault(Crypto(keyring, blind_index_key), region, batch_size)


def prepare_in_worker(jobs: list[ContactJob], source: str, now: datetime,
                      actor: Actor) -> list:
    return prepare_contacts(_worker_vault, jobs, source, now, actor)


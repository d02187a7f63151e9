"""The vault's interface to the other areas: the Vault object, reads of accounts, sites and
contacts (by ID, by blind index, as of a time), the lookups other areas ask for, and contact
versions. Other domains call these functions, never the vault's tables. The bulk sync is in
`sync.py`, soft delete and restore in `softdelete.py`, the console's search in `console.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.crypto import Crypto
from contacts.core.db import bulk_insert, get_or_404, in_chunks, utcnow
from contacts.core.errors import Invalid
from contacts.core.ids import kind_of, parse_id
from contacts.vault import fields
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
from contacts.vault.schemas import ContactOut

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


# The kinds of object the vault holds: each one's ID prefix and model.
KINDS = {"account": ("acc", Account), "site": ("site", Site), "app": ("app", App),
         "contact": ("ctc", Contact)}


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


def contact_view(*, session: Session, vault: Vault, contact: Contact) -> ContactOut:
    return _decrypt(vault, contact, _site_refs(session, [contact.id])[contact.id])


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


# -- contact versions -----------------------------------------------------------------------


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


def record_versions(session: Session, vault: Vault, actor: Actor, contacts: list[Contact],
                    event: str, at: datetime) -> None:
    """One new version per contact, as it stands, written in one insert (for soft delete and
    restore, and the confirmation)."""
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
    record_versions(session, vault, actor, [contact], event, at)


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


def account_ids_by_name(*, session: Session, among, offset: int, limit: int) -> list[str]:
    """The IDs of the accounts that `among` (a subquery of account IDs) selects, ordered by
    name, one page of them."""
    return list(session.exec(select(Account.id).where(col(Account.id).in_(among))
                             .order_by(Account.name, Account.id)
                             .offset(offset).limit(limit)).all())


def count_live_contacts(*, session: Session, account_ids) -> int:
    """The live contacts of the accounts that `account_ids` (a subquery) selects, counted."""
    return session.exec(select(func.count()).select_from(Contact).where(
        col(Contact.account_id).in_(account_ids), col(Contact.deleted_at).is_(None))).one()


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

"""The purge: removes soft-deleted records for good once the retention period has passed,
and audits each one. Run by the scheduler (contacts/jobs.py); nothing else hard-deletes.

After a large deletion there are tens of thousands of IDs to remove: every statement takes
them in chunks (`db.in_chunks`), as one `IN (...)` past 65,535 parameters is refused by
PostgreSQL (and past 32,766 by SQLite).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.db import in_chunks
from contacts.delivery import ledger
from contacts.vault.models import Account, App, Contact, ContactSite, ContactVersion, Site


@dataclass
class Purged:
    accounts: int = 0
    sites: int = 0
    apps: int = 0
    contacts: int = 0

    @property
    def total(self) -> int:
        return self.accounts + self.sites + self.apps + self.contacts


def purge_expired(*, session: Session, now: datetime, retention_days: int) -> Purged:
    cutoff = now - timedelta(days=retention_days)
    actor = Actor.system("purge")
    purged = Purged()

    def expired(model) -> set[str]:
        return set(session.exec(select(model.id).where(col(model.deleted_at).is_not(None),
                                                       col(model.deleted_at) < cutoff)))

    def under(column, parents: list[str]) -> set[str]:
        model = column.class_
        return {row_id for chunk in in_chunks(parents)
                for row_id in session.exec(select(model.id).where(column.in_(chunk)))}

    accounts = sorted(expired(Account))
    # Everything under a purged account goes with it, whatever its own state.
    contacts = sorted(expired(Contact) | under(col(Contact.account_id), accounts))
    sites = sorted(expired(Site) | under(col(Site.account_id), accounts))
    apps = sorted(expired(App) | under(col(App.site_id), sites))
    _delete(session, ContactSite, col(ContactSite.contact_id), contacts)
    _delete(session, ContactVersion, col(ContactVersion.contact_id), contacts)
    _delete(session, Contact, col(Contact.id), contacts)
    # The outbox keeps who was told what, by ID; no sealed copy of a purged address.
    ledger.forget_recipients(session=session, recipient_kind="contact", recipient_ids=contacts)
    _delete(session, App, col(App.id), apps)
    _delete(session, ContactSite, col(ContactSite.site_id), sites)
    _delete(session, Site, col(Site.id), sites)
    _delete(session, Account, col(Account.id), accounts)
    for kind, ids in (("contact", contacts), ("app", apps), ("site", sites),
                      ("account", accounts)):
        audit.record_many(session, actor, f"{kind}.purged", target_kind=kind, target_ids=ids,
                          retention_days=retention_days)
        setattr(purged, kind + "s", len(ids))
    return purged


def _delete(session: Session, model, column, ids: list[str]) -> None:
    for chunk in in_chunks(ids):
        session.execute(delete(model).where(column.in_(chunk)))

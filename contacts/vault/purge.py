"""The purge: removes soft-deleted records for good once the retention period has passed,
and audits each one. Run by the scheduler (contacts/jobs.py); nothing else hard-deletes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_
from sqlmodel import Session, col, select

from contacts import audit
from contacts.audit import Actor
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

    def expired(model):
        return col(model.deleted_at).is_not(None) & (col(model.deleted_at) < cutoff)

    accounts = list(session.exec(select(Account.id).where(expired(Account))))
    # Everything under a purged account goes with it, whatever its own state.
    contacts = list(session.exec(select(Contact.id).where(
        or_(expired(Contact), col(Contact.account_id).in_(accounts)))))
    sites = list(session.exec(select(Site.id).where(
        or_(expired(Site), col(Site.account_id).in_(accounts)))))
    apps = list(session.exec(select(App.id).where(or_(expired(App), col(App.site_id).in_(sites)))))
    if contacts:
        session.execute(delete(ContactSite).where(col(ContactSite.contact_id).in_(contacts)))
        session.execute(delete(ContactVersion).where(col(ContactVersion.contact_id).in_(contacts)))
        session.execute(delete(Contact).where(col(Contact.id).in_(contacts)))
    if apps:
        session.execute(delete(App).where(col(App.id).in_(apps)))
    if sites:
        session.execute(delete(ContactSite).where(col(ContactSite.site_id).in_(sites)))
        session.execute(delete(Site).where(col(Site.id).in_(sites)))
    if accounts:
        session.execute(delete(Account).where(col(Account.id).in_(accounts)))
    for kind, ids in (("contact", contacts), ("app", apps), ("site", sites),
                      ("account", accounts)):
        for target in ids:
            audit.record(session, actor, f"{kind}.purged", target_kind=kind, target_id=target,
                         retention_days=retention_days)
        setattr(purged, kind + "s", len(ids))
    return purged

"""Soft delete and restore: an account, site, app or contact marked deleted together with what
hangs under it (an account's sites, apps and contacts; a site's apps), under one timestamp, so
a restore brings back exactly what went together. The purge removes them for good later.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.db import in_chunks, utcnow
from contacts.core.errors import Conflict
from contacts.vault.models import Account, App, Contact, Site
from contacts.vault.service import Vault, record_versions


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
    record_versions(session, vault, actor, contacts, "deleted", at)
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
    record_versions(session, vault, actor, contacts, "restored", now)
    session.flush()
    return len(targets)


def _kind_of(obj) -> str:
    return {Account: "account", Site: "site", App: "app", Contact: "contact"}[type(obj)]


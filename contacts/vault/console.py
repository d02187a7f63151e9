"""What the console's pages ask of the vault beyond the service: accounts found by a contact's
details or a name, accounts no site admin confirmed lately, and a contact revealed in clear
(with a reason, audited).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import case, func
from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.db import utcnow
from contacts.core.errors import Invalid
from contacts.vault import fields, service
from contacts.vault.models import Account, Contact, Site
from contacts.vault.schemas import ContactOut
from contacts.vault.service import Vault

PHONE_LIKE = re.compile(r"^\+?[\d\s().\-/]{6,}$")


@dataclass(frozen=True)
class AccountSummary:
    id: str
    external_id: str
    name: str
    sites: int
    contacts: int
    confirmed_admins: int


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
                found = service.find_contacts(session=session, vault=vault, email=text_query)
            elif PHONE_LIKE.match(text_query):
                found = service.find_contacts(session=session, vault=vault, phone=text_query)
            elif " " not in text_query and "." in text_query:
                found = service.find_contacts(session=session, vault=vault, domain=text_query)
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


def reveal_contact(*, session: Session, vault: Vault, actor: Actor, contact_id: str,
                   reason: str) -> ContactOut:
    """A staff member reads a contact in clear: only with a reason, always audited."""
    reason = reason.strip()
    if len(reason) < 5:
        raise Invalid("say why you need to see this contact (at least 5 characters)")
    contact = service.get_contact(session=session, contact_id=contact_id)
    audit.record(session, actor, "contact.revealed", target_kind="contact",
                 target_id=contact.id, account_id=contact.account_id, reason=reason[:500])
    return service.contact_view(session=session, vault=vault, contact=contact)


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


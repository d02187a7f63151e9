"""Keeping contacts current: contacts not confirmed for a while are emailed a signed link;
following it confirms they are still the right person, and sets `last_confirmed_at`.

In the incident behind Lifeline, many contacts on file were stale. Asking them regularly,
outside any incident, is how the vault stays worth having on the day it is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import or_
from sqlmodel import Session, col, select

from contacts import audit
from contacts.audit import Actor
from contacts.errors import Invalid
from contacts.mail import Mailer
from contacts.vault import fields, service
from contacts.vault.models import Account, Contact

SALT = "contact-confirmation"


@dataclass(frozen=True)
class ConfirmationMessage:
    """What a renderer gets: the template's inputs. Personal data lives only in memory."""

    locale: str
    name: str
    account_name: str
    link: str
    days: int


# render(message) -> (subject, text body, html body)
Renderer = Callable[[ConfirmationMessage], tuple[str, str, str]]


def _serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=SALT)


def confirmation_token(secret_key: str, contact_id: str) -> str:
    return _serializer(secret_key).dumps({"contact": contact_id})


def contact_of_token(secret_key: str, token: str, max_age_days: int) -> str:
    try:
        payload = _serializer(secret_key).loads(token, max_age=max_age_days * 86400)
    except SignatureExpired:
        raise Invalid("This confirmation link has expired. A new one will be emailed.") from None
    except BadSignature:
        raise Invalid("This confirmation link is not valid.") from None
    return payload["contact"]


def due_for_confirmation(*, session: Session, now: datetime, after_days: int, link_days: int,
                         limit: int) -> list[Contact]:
    """Live contacts not confirmed for `after_days`, not asked in the last `link_days`."""
    stale_before = now - timedelta(days=after_days)
    asked_before = now - timedelta(days=link_days)
    query = (select(Contact)
             .where(col(Contact.deleted_at).is_(None),
                    or_(col(Contact.last_confirmed_at).is_(None),
                        col(Contact.last_confirmed_at) < stale_before),
                    or_(col(Contact.confirmation_requested_at).is_(None),
                        col(Contact.confirmation_requested_at) < asked_before))
             .order_by(col(Contact.last_confirmed_at).is_not(None), Contact.last_confirmed_at,
                       Contact.id)
             .limit(limit))
    return list(session.exec(query))


def request_confirmations(*, session: Session, vault: service.Vault, mailer: Mailer,
                          render: Renderer, secret_key: str, base_url: str, now: datetime,
                          after_days: int, link_days: int, limit: int) -> int:
    """Email each due contact a confirmation link; each one is committed as it is sent, so
    a failure half-way neither loses nor repeats a message."""
    sent = 0
    contacts = due_for_confirmation(session=session, now=now, after_days=after_days,
                                    link_days=link_days, limit=limit)
    names = dict(session.exec(select(Account.id, Account.name).where(
        col(Account.id).in_({contact.account_id for contact in contacts}))).all())
    for contact in contacts:
        view = service.contact_view(session=session, vault=vault, contact=contact)
        link = f"{base_url.rstrip('/')}/confirm/{confirmation_token(secret_key, contact.id)}"
        subject, text, html = render(ConfirmationMessage(
            locale=contact.locale, name=view.name, account_name=names[contact.account_id],
            link=link, days=link_days))
        mailer.send(to=view.email, subject=subject, text=text, html=html,
                    headers={"List-Id": "Lifeline contact confirmation <confirm.lifeline>"})
        contact.confirmation_requested_at = now
        session.add(contact)
        audit.record(session, Actor.system("freshness"), "contact.confirmation_requested",
                     target_kind="contact", target_id=contact.id)
        session.commit()
        sent += 1
    return sent


def confirm(*, session: Session, vault: service.Vault, actor: Actor, contact_id: str,
            now: datetime) -> Contact:
    contact = service.get_contact(session=session, contact_id=contact_id)
    if contact.deleted_at is not None:
        raise Invalid("This contact has been removed; there is nothing to confirm.")
    contact.last_confirmed_at = now
    contact.undeliverable_at = None
    session.add(contact)
    service.record_contact_version(session=session, vault=vault, actor=actor, contact=contact,
                                   event="confirmed", at=now)
    audit.record(session, actor, "contact.confirmed", target_kind="contact",
                 target_id=contact.id)
    return contact


def describe_for_confirmation(*, session: Session, vault: service.Vault,
                              contact_id: str) -> tuple[str, str]:
    """The account's name and the contact's masked address, for the confirmation page."""
    contact = service.get_contact(session=session, contact_id=contact_id)
    if contact.deleted_at is not None:
        raise Invalid("This contact has been removed; there is nothing to confirm.")
    account = service.get_account(session=session, account_id=contact.account_id)
    view = service.contact_view(session=session, vault=vault, contact=contact)
    return account.name, fields.mask_email(view.email)

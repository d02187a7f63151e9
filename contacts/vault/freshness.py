"""Keeping contacts current: contacts not confirmed for a while are emailed a signed link;
following it confirms they are still the right person, and sets `last_confirmed_at`.

In the incident behind Lifeline, many contacts on file were stale. Asking them regularly,
outside any incident, is how the vault stays worth having on the day it is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_
from sqlmodel import Session, col, select

from contacts.core import audit, links
from contacts.core.audit import Actor
from contacts.core.errors import Invalid
from contacts.core.mail import Renderer
from contacts.delivery import ledger, outbox
from contacts.vault import fields, service
from contacts.vault.models import Contact

SALT = "contact-confirmation"
PURPOSE = "contact_confirmation"
# Outbox keys of confirmation emails: confirm:<contact id>:<when asked>.
KEY_PREFIX = "confirm:"
ABOUT = "confirmation"  # what its outbox messages are about
LIST_ID = "Lifeline contact confirmation <confirm.lifeline>"


@dataclass(frozen=True)
class ConfirmationMessage:
    """What a renderer gets: the template's inputs. Personal data lives only in memory."""

    locale: str
    name: str
    account_name: str
    link: str
    days: int


def confirmation_token(secret_key: str, contact_id: str) -> str:
    return links.seal(secret_key, SALT, {"contact": contact_id})


def contact_of_token(secret_key: str, token: str, max_age_days: int) -> str:
    payload = links.unseal(secret_key, SALT, token, max_age=timedelta(days=max_age_days),
                           expired="This confirmation link has expired. A new one will be "
                                   "emailed.", invalid="This confirmation link is not valid.")
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


def request_confirmations(*, session: Session, vault: service.Vault, render: Renderer,
                          secret_key: str, base_url: str, now: datetime, after_days: int,
                          link_days: int, limit: int) -> int:
    """Queue a confirmation link for each due contact in the outbox, in the caller's
    transaction: the outbox sends them (retries, bounces, Message-ID), so a dead mailbox
    fails only its own message and nothing waits on SMTP while the transaction is open."""
    contacts = due_for_confirmation(session=session, now=now, after_days=after_days,
                                    link_days=link_days, limit=limit)
    names = service.account_names(session=session,
                                  ids={contact.account_id for contact in contacts})
    actor = Actor.system("freshness")
    for contact in contacts:
        view = service.contact_view(session=session, vault=vault, contact=contact)
        link = f"{base_url.rstrip('/')}/confirm/{confirmation_token(secret_key, contact.id)}"
        subject, text, html = render("confirm_contact", contact.locale, vars(ConfirmationMessage(
            locale=contact.locale, name=view.name, account_name=names[contact.account_id],
            link=link, days=link_days)))
        outbox.enqueue_email(
            session=session, cipher=vault.crypto.cipher, purpose=PURPOSE, now=now,
            key=f"{KEY_PREFIX}{contact.id}:{now:%Y%m%dT%H%M%S}",
            topic=outbox.Topic(ABOUT, contact.id, "contact", contact.id, contact.account_id),
            email=outbox.Email(to=view.email, subject=subject, text=text, html=html,
                               headers={"List-Id": LIST_ID}))
        contact.confirmation_requested_at = now
        session.add(contact)
        audit.record(session, actor, "contact.confirmation_requested", target_kind="contact",
                     target_id=contact.id)
    return len(contacts)


def flag_bounced_confirmations(*, session: Session, now: datetime,
                               since: timedelta = timedelta(days=7)) -> list[str]:
    """Contacts whose confirmation email was refused for good are flagged undeliverable
    (shown as stale until their details change or they confirm); returns those flagged."""
    bounced_at: dict[str, datetime] = {}
    for bounce in ledger.bounced_since(session=session, since=now - since,
                                       about_kind=ABOUT):
        contact_id, at = bounce.about_id, bounce.created_at
        bounced_at[contact_id] = max(bounced_at.get(contact_id, at), at)
    if not bounced_at:
        return []
    return service.flag_undeliverable(session=session, actor=Actor.system("freshness"),
                                      bounced_at=bounced_at, now=now)


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

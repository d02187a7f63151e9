"""Proof of delivery: what each update told whom and when, with each message's outcome; the
updates an account received; bounces followed up (contacts flagged in the vault) and the
accounts no email reached, which fall back to a call by support."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, func, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.delivery import ledger
from contacts.incidents.models import AffectedSite, Incident, IncidentUpdate, UpdateFallback
from contacts.incidents.publishing import updates_of
from contacts.incidents.records import incident_titles
from contacts.vault import service as vault_service


@dataclass(frozen=True)
class Delivery:
    update_number: int
    published_at: datetime
    account_id: str
    recipient: str  # a contact ID, or "webhook:<whk_...>" (an endpoint)
    channel: str
    state: str
    attempts: int
    sent_at: datetime | None
    failure: str | None = None  # bounced, ... (delivery's FAILURES)


def deliveries(*, session: Session, incident_id: str,
               account_id: str | None = None) -> list[Delivery]:
    """Every message of the incident's updates with its outcome (IDs only, no addresses)."""
    updates = {update.id: update for update in updates_of(session=session,
                                                          incident_id=incident_id)}
    found = []
    for row in ledger.messages_about(session=session, about_kind="update",
                                     about_ids=list(updates), account_id=account_id):
        update = updates[row.about_id]
        recipient = "webhook" if row.recipient_kind == "webhook" else row.recipient_id or ""
        found.append(Delivery(update.number, update.published_at, row.account_id or "public",
                              recipient, row.channel, row.state, row.attempts, row.sent_at,
                              row.failure))
    return sorted(found, key=lambda d: (d.update_number, d.account_id, d.recipient))


def delivery_counts(*, session: Session, incident_id: str) -> dict[int, dict[str, int]]:
    """Per update number: messages queued, sent and failed (counted in the database, not
    read: an update may have 100,000)."""
    updates = updates_of(session=session, incident_id=incident_id)
    found = ledger.counts_about(session=session, about_kind="update",
                                about_ids=[update.id for update in updates])
    return {update.number: found[update.id] for update in updates}


@dataclass(frozen=True)
class AccountUpdate:
    """An update that went to an account, for the account's timeline."""

    incident_id: str
    incident_title: str
    update_number: int
    published_at: datetime
    messages: dict[str, int]  # queued, sent, failed: to this account's contacts and webhook


def updates_to_account(*, session: Session, account_id: str,
                       limit: int = 50) -> list[AccountUpdate]:
    incident_ids = list(session.exec(select(AffectedSite.incident_id)
                                     .where(AffectedSite.account_id == account_id).distinct()))
    if not incident_ids:
        return []
    rows = list(session.exec(select(IncidentUpdate, Incident.title)
                             .join(Incident, col(Incident.id) == IncidentUpdate.incident_id)
                             .where(col(IncidentUpdate.incident_id).in_(incident_ids))
                             .order_by(col(IncidentUpdate.published_at).desc()).limit(limit)))
    found = ledger.counts_about(session=session, about_kind="update",
                                about_ids=[update.id for update, _ in rows],
                                account_id=account_id)
    return [AccountUpdate(update.incident_id, title, update.number, update.published_at,
                          found[update.id])
            for update, title in rows]


# Failed update emails are looked at for this long after they were queued.
FALLBACK_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class Unreached:
    incident_id: str
    incident_title: str
    update_number: int
    account_id: str
    contacts_failed: int


def follow_up_bounces(*, session: Session, now: datetime) -> list[Unreached]:
    """Update emails refused for good: their contacts are flagged in the vault for the
    freshness work, and an account none of whose contacts the update reached is recorded as
    falling back (returned, once each, for support to call).

    It runs every few seconds beside the senders: everything is read first, in a few
    queries, and the writes come last, so SQLite's write lock is held only for them."""
    failed: dict[tuple[str, str], list[str]] = {}
    bounced_at: dict[str, datetime] = {}
    for bounce in ledger.bounced_since(session=session, since=now - FALLBACK_WINDOW,
                                       about_kind="update"):
        if bounce.recipient_kind == "contact" and bounce.account_id and bounce.recipient_id:
            contact, at = bounce.recipient_id, bounce.created_at
            failed.setdefault((bounce.about_id, bounce.account_id), []).append(contact)
            bounced_at[contact] = max(bounced_at.get(contact, at), at)
    if not failed:
        return []
    update_ids = list({update_id for update_id, _ in failed})
    known = {(row.update_id, row.account_id) for row in session.exec(
        select(UpdateFallback).where(col(UpdateFallback.update_id).in_(update_ids)))}
    updates = {update.id: update for update in session.exec(
        select(IncidentUpdate).where(col(IncidentUpdate.id).in_(update_ids)))}
    pending = {pair: contacts for pair, contacts in sorted(failed.items())
               if pair not in known and pair[0] in updates}
    # (update, account): another contact was reached, or may still be
    reached = ledger.accounts_reached(session=session,
                                      update_ids=list({update_id for update_id, _ in pending}),
                                      recipient_kind="contact", states=("sent", "queued"))
    titles = incident_titles(session=session,
                             ids=list({update.incident_id for update in updates.values()}))
    unreached = []
    vault_service.flag_undeliverable(session=session, actor=Actor.system("delivery"),
                                     bounced_at=bounced_at, now=now)
    for (update_id, account_id), contacts in pending.items():
        if (update_id, account_id) in reached:
            continue
        update = updates[update_id]
        session.add(UpdateFallback(update_id=update_id, account_id=account_id,
                                   incident_id=update.incident_id,
                                   contacts_failed=len(contacts), at=now))
        audit.record(session, Actor.system("delivery"), "incident.account_unreached",
                     target_kind="account", target_id=account_id, update=update_id)
        unreached.append(Unreached(update.incident_id, titles.get(update.incident_id, ""),
                                   update.number, account_id, len(contacts)))
    return unreached


def fallbacks_by_update(*, session: Session, incident_id: str) -> dict[int, int]:
    """Per update number: accounts no email reached, handed to support to call."""
    rows = session.exec(select(IncidentUpdate.number, func.count())
                        .join(UpdateFallback, col(UpdateFallback.update_id) == IncidentUpdate.id)
                        .where(IncidentUpdate.incident_id == incident_id)
                        .group_by(IncidentUpdate.number))
    return dict(rows.all())

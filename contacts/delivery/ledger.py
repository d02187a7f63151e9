"""The outbox as a record: what pages and jobs ask of it (counts per update, an account's
messages, bounces since a time), by its columns, never by parsing keys; and its retention
(payloads, the sealed addresses and bodies, dropped after `delivery.retention_days` or when
the vault purges the recipient, keeping who, by ID, was told what and when)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from contacts.core.db import session_scope
from contacts.delivery.models import STATES, OutboxMessage


def messages_about(*, session: Session, about_kind: str, about_ids: list[str],
                   account_id: str | None = None) -> list[OutboxMessage]:
    """The messages about these things (an incident's updates, say), oldest first; only
    one account's, if given."""
    if not about_ids:
        return []
    query = select(OutboxMessage).where(OutboxMessage.about_kind == about_kind,
                                        col(OutboxMessage.about_id).in_(about_ids))
    if account_id is not None:
        query = query.where(OutboxMessage.account_id == account_id)
    return list(session.exec(query.order_by(OutboxMessage.id)))


def counts_about(*, session: Session, about_kind: str, about_ids: list[str],
                 account_id: str | None = None) -> dict[str, dict[str, int]]:
    """Per thing (an update, say): its messages by state, counted in SQL; only one
    account's, if given. Every ID asked for is in the answer."""
    found = {about_id: {state: 0 for state in STATES} for about_id in about_ids}
    if not about_ids:
        return found
    query = select(OutboxMessage.about_id, OutboxMessage.state, func.count()).where(
        OutboxMessage.about_kind == about_kind)
    if account_id is not None:
        # An account's messages are few: all of its messages of this kind, by the account's
        # index (SQLite would otherwise walk every message of an update for one account's).
        query = query.where(OutboxMessage.account_id == account_id)
    else:
        query = query.where(col(OutboxMessage.about_id).in_(about_ids))
    for about_id, state, number in session.exec(
            query.group_by(OutboxMessage.about_id, OutboxMessage.state)):
        if about_id in found:
            found[about_id][state] = number
    return found


@dataclass(frozen=True)
class Bounce:
    about_kind: str
    about_id: str
    account_id: str | None
    recipient_kind: str
    recipient_id: str | None
    created_at: datetime


def bounced_since(*, session: Session, since: datetime,
                  about_kind: str | None = None) -> list[Bounce]:
    """The emails given up since a time because their recipient's address was refused;
    only the columns that say whose, as jobs read them every few seconds."""
    query = select(OutboxMessage.about_kind, OutboxMessage.about_id, OutboxMessage.account_id,
                   OutboxMessage.recipient_kind, OutboxMessage.recipient_id,
                   OutboxMessage.created_at).where(
        OutboxMessage.failure == "bounced", col(OutboxMessage.created_at) >= since,
        OutboxMessage.channel == "email")
    if about_kind is not None:
        query = query.where(OutboxMessage.about_kind == about_kind)
    return [Bounce(*row) for row in session.exec(query).all()]


@dataclass(frozen=True)
class Sent:
    """An email as a later report about it needs it: what it was about, for whom, and how
    it stands; never its payload."""

    id: int
    key: str
    about_kind: str
    about_id: str
    account_id: str | None
    recipient_kind: str
    recipient_id: str | None
    state: str
    created_at: datetime


_SENT = (OutboxMessage.id, OutboxMessage.key, OutboxMessage.about_kind, OutboxMessage.about_id,
         OutboxMessage.account_id, OutboxMessage.recipient_kind, OutboxMessage.recipient_id,
         OutboxMessage.state, OutboxMessage.created_at)


def email_by_id(*, session: Session, message_id: int) -> Sent | None:
    """An email by its row ID (what its return path names), None for anything else."""
    row = session.exec(select(*_SENT).where(OutboxMessage.id == message_id,
                                            OutboxMessage.channel == "email")).first()
    return Sent(*row) if row else None


def emails_to(*, session: Session, recipient_kind: str, recipient_ids: list[str],
              limit: int = 500) -> list[Sent]:
    """The latest emails to these recipients (by the recipient index), newest first: where
    a reply or a report that lost its token finds the message it answers, by Message-ID."""
    if not recipient_ids:
        return []
    return [Sent(*row) for row in session.exec(
        select(*_SENT).where(OutboxMessage.recipient_kind == recipient_kind,
                             col(OutboxMessage.recipient_id).in_(recipient_ids),
                             OutboxMessage.channel == "email")
        .order_by(col(OutboxMessage.id).desc()).limit(limit)).all()]


def bounce_reported(*, session: Session, message_id: int, reason: str) -> bool:
    """An email the relay took but whose recipient's server refused later (a delivery
    status notification): given up as `bounced`, as if refused at RCPT, so the proof, the
    fall-back and the vault's freshness read it as they read a synchronous 5xx. False when
    it was already given up as bounced (a second report of the same)."""
    changed = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.channel == "email",
               or_(col(OutboxMessage.failure).is_(None), OutboxMessage.failure != "bounced"))
        .values(state="failed", failure="bounced", lease_until=None,
                last_error=f"bounced: reported later: {reason}"[:500])
        .execution_options(synchronize_session=False))
    return bool(changed.rowcount)


def accounts_reached(*, session: Session, update_ids: list[str], recipient_kind: str,
                     states: tuple[str, ...]) -> set[tuple[str, str]]:
    """(update, account) pairs with a message to a recipient of this kind in one of
    `states` (an account some contact of which was reached, or may still be)."""
    if not update_ids:
        return set()
    return set(session.exec(select(OutboxMessage.about_id, OutboxMessage.account_id).where(
        OutboxMessage.about_kind == "update", col(OutboxMessage.about_id).in_(update_ids),
        OutboxMessage.recipient_kind == recipient_kind,
        col(OutboxMessage.state).in_(states)).distinct()).all())


def last_webhook_failures(*, session: Session, since: datetime) -> dict[str, datetime]:
    """Per endpoint: when its latest webhook message given up since a time was queued."""
    return dict(session.exec(
        select(OutboxMessage.endpoint_id, func.max(OutboxMessage.created_at)).where(
            OutboxMessage.channel == "webhook", OutboxMessage.state == "failed",
            col(OutboxMessage.created_at) >= since)
        .group_by(OutboxMessage.endpoint_id)).all())


def counts(*, session: Session) -> dict[str, int]:
    """Messages by state, for the console and health checks."""
    rows = session.exec(select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state))
    return {state: 0 for state in STATES} | dict(rows.all())


def _forget(ids_query):
    """The UPDATE that drops the payloads of the selected messages; those still queued can
    no longer be sent and expire."""
    queued = OutboxMessage.state == "queued"
    return (update(OutboxMessage).where(col(OutboxMessage.id).in_(ids_query))
            .values(payload_encrypted=None, lease_until=None,
                    failure=case((queued, "expired"), else_=OutboxMessage.failure),
                    state=case((queued, "failed"), else_=OutboxMessage.state))
            .execution_options(synchronize_session=False))


def drop_old_payloads(*, engine: Engine, now: datetime, retention_days: int,
                      batch: int = 5000) -> int:
    """Drop the payloads of messages queued more than `retention_days` ago, a batch per
    transaction (a long outbox is never locked at once); a message on the wire (leased)
    waits for the next run. Returns how many were dropped."""
    cutoff = now - timedelta(days=retention_days)
    dropped = 0
    while True:
        with session_scope(engine) as session:
            ids = list(session.exec(select(OutboxMessage.id).where(
                col(OutboxMessage.created_at) < cutoff,
                col(OutboxMessage.payload_encrypted).is_not(None),
                (col(OutboxMessage.lease_until).is_(None))
                | (col(OutboxMessage.lease_until) <= now)).limit(batch)).all())
            if ids:
                session.execute(_forget(ids))
        dropped += len(ids)
        if len(ids) < batch:
            return dropped


def forget_recipients(*, session: Session, recipient_kind: str,
                      recipient_ids: list[str]) -> None:
    """The vault purged these recipients: no sealed copy of their address stays here (the
    messages stay, by ID, for the proof); in the caller's transaction."""
    for start in range(0, len(recipient_ids), 500):
        chunk = recipient_ids[start:start + 500]
        session.execute(_forget(select(OutboxMessage.id).where(
            OutboxMessage.recipient_kind == recipient_kind,
            col(OutboxMessage.recipient_id).in_(chunk),
            col(OutboxMessage.payload_encrypted).is_not(None))))

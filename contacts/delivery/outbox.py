"""Enqueue messages in the caller's transaction; drain them from jobs, in two lanes: emails
over SMTP (`drain`) and webhooks over HTTP (`webhook_lane.drain_webhooks`), each claiming
only its own channel, so that no webhook, however slow its endpoint, delays an email.

A message is claimed with a lease before it is sent and marked sent after; a sender that
dies in between leaves the lease to run out and the message to be sent again, with the same
Message-ID so the receiving side can tell. Failures are retried with backoff, then given up
as failed (and counted on /healthz-like pages, never silently dropped).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from contacts.core.crypto import FieldCipher
from contacts.core.db import bulk_insert, session_scope
from contacts.core.mail import Mailer, MailFailed
from contacts.delivery import outcomes
from contacts.delivery.models import OUTBOX_PAYLOAD, OutboxMessage
from contacts.delivery.smtp_client import Letter
from contacts.delivery.smtp_lane import SmtpPool, outcome_backlog
from contacts.delivery.webhook import WebhookFailed

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
# How a message whose recipient's address was refused for good starts its `last_error`.
BOUNCED = "bounced: "
LEASE = timedelta(minutes=2)


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    text: str
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Webhook:
    """A POST of `body` to an endpoint (whk_...), signed when it is sent with the endpoint's
    secret of that moment (webhook_lane.py), at the endpoint's URL of that moment."""

    endpoint: str
    body: str


@dataclass(frozen=True)
class SignedWebhook:
    """A webhook queued before endpoints were named (migration 0017_webhooks): sent as it was
    signed, `X-Lifeline-Signature: sha256=<hex HMAC of the body>`, to the URL it names."""

    url: str
    body: str
    signature: str


@dataclass
class DrainReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Topic:
    """What a message is about and for whom, stored as columns that pages and jobs query
    (IDs only, never an address): `Topic("update", "upd_...", "contact", "ctc_...",
    account_id="acc_...")`."""

    about_kind: str  # update, request, item, incident, confirmation, subscription, handoff
    about_id: str
    recipient_kind: str  # contact, subscriber, webhook, requester, staff, inbox
    recipient_id: str | None = None
    account_id: str | None = None


def message_id_for(key: str, domain: str = "lifeline") -> str:
    """The same Message-ID for every attempt at one message; `domain` is `[mail] domain`
    (the mailer's), so a later message can name an earlier one in `References`."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def enqueue_email(*, session: Session, cipher: FieldCipher, key: str, purpose: str,
                  topic: Topic, email: Email, now: datetime) -> None:
    """Queue an email in the session's transaction; a key already queued is left alone."""
    if session.exec(select(OutboxMessage.id).where(OutboxMessage.key == key)).first():
        return
    session.add(OutboxMessage(**email_row(cipher=cipher, key=key, purpose=purpose,
                                          topic=topic, email=email, now=now)))


def any_queued(*, session: Session, keys: list[str]) -> bool:
    """Whether a message was ever queued under one of these keys (by the unique key)."""
    return bool(keys) and session.exec(select(OutboxMessage.id).where(
        col(OutboxMessage.key).in_(keys)).limit(1)).first() is not None


def email_row(*, cipher: FieldCipher, key: str, purpose: str, topic: Topic, email: Email,
              now: datetime) -> dict:
    """An outbox row for `enqueue_rows`, for callers that write many in one statement."""
    return _row(cipher, key, purpose, topic, "email", json.dumps(email.__dict__), now)


def email_rows(*, cipher: FieldCipher, purpose: str, email: Email, now: datetime,
               recipients: list[tuple[str, Topic, str, dict[str, str]]]) -> list[dict]:
    """The rows of one email sent to many (key, topic, address, headers of its own added
    to the email's): its parts are serialized once, each row's payload differs only by its
    address and headers."""
    shared = json.dumps({name: value for name, value in email.__dict__.items()
                         if name not in ("to", "headers")})

    def payload(to: str, headers: dict[str, str]) -> str:
        own = json.dumps({**email.headers, **headers})
        return f'{{"to": {json.dumps(to)}, "headers": {own}, {shared[1:]}'

    return [_row(cipher, key, purpose, topic, "email", payload(to, headers), now)
            for key, topic, to, headers in recipients]


def webhook_row(*, cipher: FieldCipher, key: str, purpose: str, topic: Topic,
                webhook: Webhook | SignedWebhook, now: datetime) -> dict:
    """An outbox row for a webhook, for `enqueue_rows`; an endpoint's rows go in key order."""
    return _row(cipher, key, purpose, topic, "webhook", json.dumps(webhook.__dict__), now,
                endpoint_id=getattr(webhook, "endpoint", None))


def _row(cipher: FieldCipher, key: str, purpose: str, topic: Topic, channel: str,
         payload: str, now: datetime, endpoint_id: str | None = None) -> dict:
    """A queued row; `payload` is the message as JSON, sealed here."""
    return {"key": key, "channel": channel, "purpose": purpose, "endpoint_id": endpoint_id,
            **topic.__dict__,
            "payload_encrypted": cipher.encrypt(payload, context=OUTBOX_PAYLOAD),
            "state": "queued", "attempts": 0, "next_attempt_at": now, "lease_until": None,
            "last_error": None, "failure": None, "created_at": now, "sent_at": None}


def enqueue_rows(*, session: Session, rows: list[dict]) -> None:
    """Queue rows built by `email_row` in one insert; their keys must be new."""
    bulk_insert(session.connection(), OutboxMessage.__table__, rows)


def _backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min... up to an hour, plus up to a tenth more at random, so messages
    that failed together do not all come back at the same second."""
    base = min(30 * 2 ** (attempts - 1), 3600)
    return timedelta(seconds=base + random.uniform(0, base / 10))  # noqa: S311 - not a secret


def _claim(engine: Engine, now: datetime, limit: int, lease: timedelta = LEASE, *,
           channel: str = "email") -> list[OutboxMessage]:
    with session_scope(engine) as session:
        query = (select(OutboxMessage)
                 .where(OutboxMessage.state == "queued", OutboxMessage.channel == channel,
                        OutboxMessage.next_attempt_at <= now,
                        or_(col(OutboxMessage.lease_until).is_(None),
                            col(OutboxMessage.lease_until) <= now))
                 .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit))
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        claimed = list(session.exec(query))
        session.expunge_all()
        if claimed:  # one statement for the batch, not one UPDATE a row
            session.execute(update(OutboxMessage)
                            .where(col(OutboxMessage.id).in_([m.id for m in claimed]))
                            .values(lease_until=now + lease,
                                    attempts=OutboxMessage.attempts + 1)
                            .execution_options(synchronize_session=False))
        for message in claimed:
            message.lease_until = now + lease
            message.attempts += 1
    return claimed


def drain(*, engine: Engine, cipher: FieldCipher, mailer: Mailer, now: datetime,
          limit: int = 200, lease: timedelta = LEASE, pool: SmtpPool | None = None
          ) -> DrainReport:
    """The email lane: send the emails that are due through `pool` (a pool of sessions to
    `mailer` and its fallback; one made for this call when none is given), each outcome
    committed as soon as it is known (`smtp_lane`, `outcomes`). When no relay can be
    reached, the batch's first email is retried later and the others are handed back
    untouched (one refused connection says the same of every message)."""
    report = DrainReport()
    claimed = _claim(engine, now, limit, lease, channel="email")
    if not claimed:
        return report
    handed_back: list[Letter] = []
    letters = [_letter(cipher, mailer, message) for message in claimed]
    try:
        with (contextlib.nullcontext(pool) if pool else SmtpPool(mailer)) as lane, \
                outcomes.batched_writer(
                    engine, backlog=outcome_backlog(lane.connections)) as record:
            handed_back = lane.deliver(letters, lambda letter, failure: _settle(
                letter.tag, now, report, record, failure))
    finally:
        _release(engine, [letter.tag.id for letter in handed_back])
    return report


def _letter(cipher: FieldCipher, mailer: Mailer, message: OutboxMessage) -> Letter:
    email = Email(**_payload(cipher, message))
    return Letter(to=email.to, tag=message, sender=mailer.envelope_sender(message.id),
                  data=mailer.message_bytes(
                      to=email.to, subject=email.subject, text=email.text, html=email.html,
                      message_id=message_id_for(message.key, mailer.domain),
                      headers=email.headers))


def _payload(cipher: FieldCipher, message: OutboxMessage) -> dict:
    return json.loads(cipher.decrypt(message.payload_encrypted, context=OUTBOX_PAYLOAD))


def _release(engine: Engine, ids: list[int]) -> None:
    if ids:
        with session_scope(engine) as session:
            session.execute(update(OutboxMessage).where(col(OutboxMessage.id).in_(ids))
                            .values(lease_until=None, attempts=OutboxMessage.attempts - 1))


def _settle(message: OutboxMessage, now: datetime, report: DrainReport,
            record: Callable[[int, str, dict], None],
            failure: MailFailed | WebhookFailed | None) -> None:
    """Commit one attempt's outcome: sent, to retry later, or failed for good."""
    if failure is None:
        outcome, values = "sent", {"at": now}
        report.sent += 1
    elif message.attempts >= MAX_ATTEMPTS or getattr(failure, "permanent", False):
        error = (BOUNCED if getattr(failure, "bounced", False) else "") + failure.message
        outcome, values = "failed", {"error": error[:500], "failure": failure_kind(failure)}
        report.failed += 1
        log.warning("outbox message %d (%s) failed for good after %d attempts: %s",
                    message.id, message.purpose, message.attempts, failure.message)
    else:
        outcome = "retry"
        values = {"at": now + _backoff(message.attempts), "error": failure.message[:500]}
        report.retried += 1
    record(message.id, outcome, values)


def failure_kind(failure: MailFailed | WebhookFailed) -> str:
    """Why a message was given up: its recipient refused for good, the message or endpoint
    refused for good, or its attempts ran out."""
    if getattr(failure, "bounced", False):
        return "bounced"
    return "refused" if getattr(failure, "permanent", False) else "expired"


class LaneLoop:
    """Drains one lane continuously in a thread of a worker process, resting
    `idle_seconds` when a round found nothing to send. On PostgreSQL every worker runs one
    per lane (`FOR UPDATE SKIP LOCKED` shares the rows); on SQLite the scheduler's drain
    jobs are the senders. A subclass says how one round drains (`drain_once`)."""

    lane = "lane"

    def __init__(self, *, engine: Engine, cipher: FieldCipher, lease: timedelta = LEASE,
                 idle_seconds: float = 1.0):
        self.engine, self.cipher = engine, cipher
        self.lease, self.idle_seconds = lease, idle_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"delivery-{self.lane}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.close()

    def close(self) -> None:
        """What the loop holds beyond its thread, let go once it has stopped."""

    def drain_once(self) -> DrainReport:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.drain_once()
            except Exception:  # noqa: BLE001 - a database blip must not end the loop
                log.exception("the %s delivery loop failed; retrying", self.lane)
                report = DrainReport()
            if not (report.sent or report.retried or report.failed):
                self._stop.wait(self.idle_seconds)


class DeliveryLoop(LaneLoop):
    """The email lane's loop (the webhook lane's is `webhook_lane.WebhookLoop`): it keeps
    its pool of SMTP sessions open from batch to batch and claims 25 emails per session at
    a time."""

    lane = "email"

    def __init__(self, *, engine: Engine, cipher: FieldCipher, mailer: Mailer,
                 lease: timedelta = LEASE, idle_seconds: float = 1.0,
                 pool: SmtpPool | None = None):
        super().__init__(engine=engine, cipher=cipher, lease=lease, idle_seconds=idle_seconds)
        self.mailer = mailer
        self.pool = pool or SmtpPool(mailer)

    def close(self) -> None:
        self.pool.close()

    def drain_once(self) -> DrainReport:
        return drain(engine=self.engine, cipher=self.cipher, mailer=self.mailer,
                     now=datetime.now(UTC), lease=self.lease, pool=self.pool,
                     limit=max(200, 25 * self.pool.connections))

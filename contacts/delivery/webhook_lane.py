"""The webhook lane: the outbox's webhooks posted `delivery.webhook_concurrency` at once over
pooled, pinned connections (webhook_client.py), each endpoint's one at a time and in order,
each signed when it is sent (Standard Webhooks) with its endpoint's secret of that moment.

Order: a webhook is claimed only when no earlier one of its endpoint is still queued, so
update N+1 leaves only once update N was delivered or given up, whatever the number of
senders or workers. A call that hangs holds its own slot for one deadline, never the others.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import exists, or_
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from contacts.core.crypto import FieldCipher
from contacts.core.db import session_scope
from contacts.delivery import outcomes, webhook_client
from contacts.delivery.models import WEBHOOK_SECRET, OutboxMessage, WebhookEndpoint

# The queue's own steps, shared with the email lane: the outcome of each attempt is settled
# (sent, retried with backoff, failed for good) and committed the same way in both lanes.
from contacts.delivery.outbox import (
    LEASE,
    DrainReport,
    LaneLoop,
    _payload,
    _settle,
    message_id_for,
)
from contacts.delivery.webhook import WebhookFailed, WebhookPolicy
from contacts.delivery.webhook_client import WebhookClient

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 50
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not a secret
SECRET_BYTES = 32
USER_AGENT = "Lifeline webhooks"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _signing_key(secret: str) -> bytes:
    """The HMAC key: the bytes a `whsec_` secret encodes; an endpoint's secret from before
    Standard Webhooks (no prefix) is used as its UTF-8 bytes until it is rotated."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    return secret.encode()


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, the Standard Webhooks signature."""
    digest = hmac.new(_signing_key(secret), f"{message_id}.{timestamp}.{body}".encode(),
                      hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_id(key: str) -> str:
    """The `webhook-id` of a message: the same on every attempt, so receivers drop repeats."""
    return "msg_" + message_id_for(key)[1:33]


def signed_headers(*, secret: str, message_id: str, body: str) -> dict[str, str]:
    """The headers of one attempt, signed now (a receiver refuses a timestamp five minutes
    old: a retry is signed again, with the endpoint's secret of this moment)."""
    timestamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "webhook-id": message_id, "webhook-timestamp": str(timestamp),
               "webhook-signature": sign(secret, message_id, timestamp, body)}
    if not secret.startswith(SECRET_PREFIX):
        # The migration window: an endpoint not rotated since Standard Webhooks came still
        # gets the header its receiver checks today, until its secret is rotated.
        headers["X-Lifeline-Signature"] = "sha256=" + hmac.new(
            secret.encode(), body.encode(), hashlib.sha256).hexdigest()
        headers["Idempotency-Key"] = message_id.removeprefix("msg_")
    return headers


def deliver(*, client: WebhookClient, url: str, secret: str, message_id: str,
            body: str) -> None:
    """One signed attempt at one endpoint; raises WebhookFailed."""
    client.post(url=url, body=body.encode(),
                headers=signed_headers(secret=secret, message_id=message_id, body=body))


@dataclass(frozen=True)
class _Target:
    url: str
    secret: str | None  # None: the endpoint is quarantined or gone


def _targets(session: Session, cipher: FieldCipher, ids: set[str]) -> dict[str, _Target]:
    targets = {}
    for endpoint in session.exec(select(WebhookEndpoint).where(col(WebhookEndpoint.id).in_(ids))):
        secret = None if endpoint.quarantined_at is not None else cipher.decrypt(
            endpoint.secret_encrypted, context=WEBHOOK_SECRET)
        targets[endpoint.id] = _Target(endpoint.url, secret)
    return targets


def _attempt(client: WebhookClient, message: OutboxMessage, payload: dict,
             target: _Target | None) -> WebhookFailed | None:
    try:
        if "signature" in payload:  # queued before endpoints were named: signed then
            client.post(url=payload["url"], body=payload["body"].encode(), headers={
                "Content-Type": "application/json", "User-Agent": USER_AGENT,
                "X-Lifeline-Signature": payload["signature"],
                "Idempotency-Key": message_id_for(message.key)[1:33]})
        elif target is None:
            raise WebhookFailed("the endpoint was removed", permanent=True)
        elif target.secret is None:
            raise WebhookFailed("the endpoint is quarantined", permanent=True)
        else:
            deliver(client=client, url=target.url, secret=target.secret,
                    message_id=webhook_id(message.key), body=payload["body"])
    except WebhookFailed as exc:
        return exc
    return None


def claim_heads(engine: Engine, now: datetime, limit: int,
                lease: timedelta = LEASE) -> list[OutboxMessage]:
    """Claim due webhooks that are first in their endpoint's queue (no earlier one still
    queued, in flight or waiting for a retry), with a lease; SKIP LOCKED on PostgreSQL."""
    earlier = aliased(OutboxMessage)
    with session_scope(engine) as session:
        query = (select(OutboxMessage)
                 .where(OutboxMessage.state == "queued", OutboxMessage.channel == "webhook",
                        OutboxMessage.next_attempt_at <= now,
                        or_(col(OutboxMessage.lease_until).is_(None),
                            col(OutboxMessage.lease_until) <= now),
                        ~exists().where(earlier.endpoint_id == OutboxMessage.endpoint_id,
                                        earlier.state == "queued",
                                        earlier.id < OutboxMessage.id))
                 .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit))
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        claimed = list(session.exec(query))
        for message in claimed:
            message.lease_until = now + lease
            message.attempts += 1
        session.flush()
        session.expunge_all()
    return claimed


@contextmanager
def _outcomes(engine: Engine) -> Iterator[Callable[[int, str, dict], None]]:
    """Each outcome committed before the next claim (one autocommitted UPDATE), so the
    message after a settled one is claimable at once, never a hanging call later. On
    PostgreSQL without waiting for the WAL flush, as the email lane's writer does."""
    with outcomes.outcome_connection(engine) as connection:
        yield lambda message_id, name, values: connection.execute(
            outcomes.STATEMENTS[name], {"id": message_id, **values})


def drain_webhooks(*, engine: Engine, cipher: FieldCipher, policy: WebhookPolicy,
                   now: datetime, lease: timedelta = LEASE,
                   concurrency: int = DEFAULT_CONCURRENCY,
                   stop: threading.Event | None = None) -> DrainReport:
    """Post the webhooks that are due, `concurrency` calls in flight at all times (freed
    slots are filled at once), until none is due. `now` is the time the drain starts at
    (tests give a later one); it runs on from there."""
    report = DrainReport()
    lease = max(lease, timedelta(seconds=2 * policy.deadline_seconds))
    started = time.monotonic()

    def clock() -> datetime:
        return now + timedelta(seconds=time.monotonic() - started)

    client = webhook_client.client_for(policy)
    rounds_until = started + lease.total_seconds() / 2  # a drain under constant load hands over
    with ThreadPoolExecutor(concurrency, thread_name_prefix="webhook") as pool:
        while (not (stop and stop.is_set()) and time.monotonic() < rounds_until
               and _round(engine, cipher, client, pool, clock, lease, concurrency, report,
                          stop)):
            pass
    return report


def _round(engine: Engine, cipher: FieldCipher, client: WebhookClient,
           pool: ThreadPoolExecutor, clock, lease: timedelta, concurrency: int,
           report: DrainReport, stop: threading.Event | None) -> int:
    """Claim and post until nothing is in flight and nothing more is claimable; the number
    of messages settled."""
    in_flight: dict[Future, OutboxMessage] = {}
    settled, more = 0, True
    # Slots are refilled a tenth of them at a time (or when none is busy): one claim per
    # freed slot would make the claims, not the endpoints, the lane's pace.
    refill = max(1, concurrency // 10)
    with _outcomes(engine) as record:
        while True:
            free = concurrency - len(in_flight)
            if more and (free >= refill or not in_flight) and not (stop and stop.is_set()):
                claimed = claim_heads(engine, clock(), free, lease)
                more = len(claimed) == free
                payloads = {message.id: _payload(cipher, message) for message in claimed}
                with session_scope(engine) as session:
                    targets = _targets(session, cipher, {
                        payload["endpoint"] for payload in payloads.values()
                        if "endpoint" in payload})
                for message in claimed:
                    payload = payloads[message.id]
                    in_flight[pool.submit(_attempt, client, message, payload,
                                          targets.get(payload.get("endpoint", "")))] = message
            if not in_flight:
                return settled
            # A second at most: webhooks queued meanwhile are claimed, even while every
            # call in flight hangs.
            done, _ = wait(in_flight, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                _settle(in_flight.pop(future), clock(), report, record, future.result())
                settled += 1
            more = True  # a freed slot, or a message after a settled one, may be due


class WebhookLoop(LaneLoop):
    """Runs the webhook lane continuously in a thread of a worker process (PostgreSQL: every
    worker runs one; SKIP LOCKED shares the rows, the claim keeps each endpoint in order)."""

    lane = "webhook"

    def __init__(self, *, engine: Engine, cipher: FieldCipher, policy: WebhookPolicy,
                 lease: timedelta = LEASE, concurrency: int = DEFAULT_CONCURRENCY,
                 idle_seconds: float = 1.0):
        super().__init__(engine=engine, cipher=cipher, lease=lease, idle_seconds=idle_seconds)
        self.policy, self.concurrency = policy, concurrency

    def drain_once(self) -> DrainReport:
        return drain_webhooks(engine=self.engine, cipher=self.cipher, policy=self.policy,
                              now=datetime.now(UTC), lease=self.lease,
                              concurrency=self.concurrency, stop=self._stop)

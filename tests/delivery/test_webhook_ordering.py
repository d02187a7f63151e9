"""The webhook lane under concurrency: many endpoints served at once, each endpoint's
messages one at a time and in order (message N+1 never leaves before N is delivered or given
up, even with two senders draining together), and an endpoint that never answers holds one
slot for one deadline while the others' messages all go through. The receiver is a real
HTTP server on 127.0.0.1 verifying every delivery with `standardwebhooks`."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.services import services
from contacts.delivery import outbox, webhook_lane
from contacts.delivery.models import OutboxMessage
from contacts.delivery.webhook import UNREACHABLE, WebhookPolicy
from contacts.incidents import endpoints
from contacts.incidents.desk import CommsDesk
from contacts.vault.models import Account
from tests.delivery.receivers import StandardReceiver
from tests.vault.fixtures import make_document

MESSAGES = 6


@pytest.fixture
def receiver():
    made = StandardReceiver(delay=0.02)
    yield made
    made.close()


@pytest.fixture
def app(make_app, receiver):
    return make_app(webhooks_allow_private_hosts=[receiver.host_port],
                    webhooks_deadline_seconds=2)


@pytest.fixture
def register(app, engine, sync_document, receiver):
    """Endpoints on the receiver, one per path, each of its own account, through the
    service; the receiver knows each one's secret."""
    sync_document(make_document(accounts=5, contacts_per_account=1))
    desk = CommsDesk.from_settings(services(app).settings, services(app).crypto,
                                   Path(app.template_folder))
    with session_scope(engine) as session:
        account_ids = list(session.exec(select(Account.id).order_by(Account.id)))

    def make(paths: list[str]) -> dict[str, str]:
        made = {}
        with session_scope(engine) as session:
            for path, account_id in zip(paths, account_ids, strict=False):
                endpoint, secret = endpoints.register_endpoint(
                    session=session, desk=desk, actor=Actor.system("test"),
                    account_id=account_id, url=receiver.url(path), now=utcnow())
                receiver.secrets[path] = secret
                made[path] = endpoint.id
        return made

    return make


def _queue(app, endpoint_ids: dict[str, str], count: int) -> None:
    """`count` messages per endpoint, interleaved across endpoints as publishing queues."""
    rows = [outbox.webhook_row(
        cipher=services(app).crypto.cipher, key=f"test:{endpoint_id}:{n:02d}",
        purpose="test", now=utcnow(),
        topic=outbox.Topic("update", f"upd_{n}", "webhook", endpoint_id),
        webhook=outbox.Webhook(endpoint=endpoint_id, body=json.dumps({"n": n})))
        for n in range(count) for endpoint_id in endpoint_ids.values()]
    with session_scope(services(app).engine) as session:
        outbox.enqueue_rows(session=session, rows=rows)


def _drain(app, now, concurrency: int = 8) -> outbox.DrainReport:
    return webhook_lane.drain_webhooks(
        engine=services(app).engine, cipher=services(app).crypto.cipher,
        policy=WebhookPolicy.from_settings(services(app).settings), now=now,
        concurrency=concurrency)


def _numbers(receiver: StandardReceiver, path: str) -> list[int]:
    return [delivery.event["n"] for delivery in receiver.to(path)]


def test_each_endpoint_gets_its_messages_in_order_while_endpoints_go_together(
        app, register, receiver):
    ids = register(["/e0", "/e1", "/e2", "/e3"])
    _queue(app, ids, MESSAGES)
    receiver.fail["/e1"] = 1  # e1's first message is refused once: e1 waits for its retry
    now = utcnow()
    report = _drain(app, now)
    assert (report.sent, report.retried) == (3 * MESSAGES, 1)
    for path in ("/e0", "/e2", "/e3"):
        assert _numbers(receiver, path) == list(range(MESSAGES)), path
    assert _numbers(receiver, "/e1") == [0]  # nothing after 0 left before 0 was delivered
    assert receiver.most_at_once > 1  # endpoints were served at the same time
    report = _drain(app, now + timedelta(hours=1))
    assert report.sent == MESSAGES
    assert _numbers(receiver, "/e1") == [0, *range(MESSAGES)]
    assert all(delivery.verified for delivery in receiver.deliveries)


def test_two_senders_draining_together_keep_each_endpoint_in_order(app, register, receiver,
                                                                   backend):
    """What two workers do on PostgreSQL (SKIP LOCKED shares the endpoints' heads). SQLite
    has one sender, the scheduler's webhook job (one run at a time), and no row locks: there
    it is one sender draining twice in a row."""
    ids = register(["/e0", "/e1", "/e2"])
    _queue(app, ids, MESSAGES)
    now = utcnow()
    reports: list[outbox.DrainReport] = []
    together = 2 if backend == "postgresql" else 1
    senders = [threading.Thread(target=lambda: reports.append(_drain(app, now, 3)))
               for _ in range(together)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)
    assert sum(report.sent for report in reports) == 3 * MESSAGES
    for path in ids:
        assert _numbers(receiver, path) == list(range(MESSAGES)), path  # once each, in order


def test_a_hanging_endpoint_holds_one_slot_while_the_others_are_delivered(
        app, register, receiver):
    ids = register(["/hang", "/e1"])
    receiver.hang.add("/hang")
    _queue(app, ids, 4)
    report = _drain(app, utcnow(), concurrency=2)
    assert (report.sent, report.retried) == (4, 1)
    assert _numbers(receiver, "/e1") == [0, 1, 2, 3]
    # The last of them arrived while the hanging call was still held (the first ones may
    # beat it to the server on a busy machine).
    assert receiver.to("/e1")[-1].hang_held
    assert receiver.released.wait(10)  # the lane hung up on it at the deadline
    assert len(receiver.to("/hang")) == 1  # its next message waits behind the first
    with session_scope(services(app).engine) as session:
        held = session.exec(select(OutboxMessage).where(
            OutboxMessage.endpoint_id == ids["/hang"],
            OutboxMessage.attempts == 1)).one()
        assert (held.state, held.last_error) == ("queued", UNREACHABLE)


def test_a_message_to_a_quarantined_endpoint_is_given_up_and_frees_the_next(
        app, register, receiver, engine):
    ids = register(["/e0"])
    _queue(app, ids, 2)
    from contacts.delivery.models import WebhookEndpoint

    with session_scope(engine) as session:
        endpoint = session.get(WebhookEndpoint, ids["/e0"])
        endpoint.quarantined_at = utcnow()
    report = _drain(app, utcnow())
    assert (report.sent, report.failed) == (0, 2) and receiver.deliveries == []
    with session_scope(engine) as session:
        errors = {row.last_error for row in session.exec(select(OutboxMessage))}
    assert errors == {"the endpoint is quarantined"}

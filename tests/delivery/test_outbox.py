"""The outbox: queued in the caller's transaction, sent by a job over real SMTP, retried
with the same Message-ID, given up only after its attempts, never sent twice."""

from __future__ import annotations

import socket
from datetime import timedelta

from sqlmodel import select

from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import ledger, outbox
from contacts.delivery.models import OutboxMessage
from tests.helpers import stored_bytes


def _queue(app, key: str, to: str = "someone@example.org", now=None) -> None:
    with session_scope(services(app).engine) as session:
        outbox.enqueue_email(session=session, cipher=services(app).crypto.cipher,
                             key=key, purpose="test", now=now or utcnow(),
                             topic=outbox.Topic("request", "LL-TEST", "requester"),
                             email=outbox.Email(to=to, subject="Hello", text="Body text 4471",
                                                html="<p>Body</p>",
                                                headers={"List-Id": "Test <t.lifeline>"}))


def _drain(app, port: int, now=None) -> outbox.DrainReport:
    return outbox.drain(engine=services(app).engine,
                        cipher=services(app).crypto.cipher,
                        mailer=Mailer(host="127.0.0.1", port=port, sender="l@localhost",
                                      timeout=2), now=now or utcnow())


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_queued_email_is_sent_once_with_its_headers(app, smtp_server):
    port, sink = smtp_server
    _queue(app, "k1")
    _queue(app, "k1")  # the same key again: still one message
    assert _drain(app, port).sent == 1
    assert _drain(app, port).sent == 0
    (message,) = sink.messages
    assert message["To"] == "someone@example.org" and message["List-Id"] == "Test <t.lifeline>"
    assert message["Message-ID"] == outbox.message_id_for("k1")
    assert message.get_body(("plain",)).get_content().strip() == "Body text 4471"


def test_an_unreachable_server_is_retried_later_with_the_same_message_id(app, smtp_server):
    port, sink = smtp_server
    now = utcnow()
    _queue(app, "k2", now=now)
    report = _drain(app, _closed_port(), now=now)
    assert (report.sent, report.retried) == (0, 1)
    assert _drain(app, port, now=now + timedelta(seconds=10)).sent == 0  # backing off
    assert _drain(app, port, now=now + timedelta(seconds=34)).sent == 1
    assert sink.messages[0]["Message-ID"] == outbox.message_id_for("k2")
    with session_scope(services(app).engine) as session:
        stored = session.exec(select(OutboxMessage)).one()
        assert (stored.state, stored.attempts, stored.last_error) == ("sent", 2, None)


def test_a_message_is_given_up_after_its_attempts_and_counted(app):
    now = utcnow()
    _queue(app, "k3", now=now)
    dead = _closed_port()
    for _ in range(outbox.MAX_ATTEMPTS):
        now += timedelta(hours=2)
        _drain(app, dead, now=now)
    with session_scope(services(app).engine) as session:
        assert ledger.counts(session=session) == {"queued": 0, "sent": 0, "failed": 1}
        stored = session.exec(select(OutboxMessage)).one()
        assert stored.attempts == outbox.MAX_ATTEMPTS
        assert "ConnectionRefusedError" in stored.last_error


def test_a_sender_that_died_mid_send_leaves_the_message_to_be_sent_again(app, smtp_server):
    port, sink = smtp_server
    now = utcnow()
    _queue(app, "k4", now=now)
    engine = services(app).engine
    claimed = outbox._claim(engine, now, 10)  # claimed, then the process died
    assert len(claimed) == 1
    assert _drain(app, port, now=now + timedelta(seconds=30)).sent == 0  # still leased
    assert _drain(app, port, now=now + outbox.LEASE + timedelta(seconds=1)).sent == 1
    assert len(sink.messages) == 1


def test_the_recipient_and_the_body_are_stored_sealed(app):
    _queue(app, "k5", to="sealed.recipient@example.org")
    stored = stored_bytes(services(app).engine)
    assert b"sealed.recipient@example.org" not in stored and b"Body text 4471" not in stored


def test_one_smtp_connection_carries_a_whole_batch(app, smtp_server, monkeypatch):
    port, sink = smtp_server
    for n in range(5):
        _queue(app, f"batch-{n}", to=f"r{n}@example.org")
    connections = []
    original = Mailer._connect

    def counting(self):
        connections.append(1)
        return original(self)

    monkeypatch.setattr(Mailer, "_connect", counting)
    assert _drain(app, port).sent == 5
    assert len(connections) == 1 and len(sink.messages) == 5

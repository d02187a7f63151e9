"""The subscribe page does not tell whether an address already receives updates: the same
answer and the same work (one email queued) for a new address, a pending one, a confirmed one
and a stopped one; the email itself says what applies to its reader."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlmodel import col, func, select

from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import outbox
from contacts.delivery.models import OutboxMessage
from contacts.incidents import subscriptions
from contacts.incidents.models import Subscriber
from tests.helpers import CSRF_FIELD, csrf_token_from

YESTERDAY = timedelta(days=1)


def _queued(engine) -> int:
    with session_scope(engine) as session:
        return session.exec(select(func.count()).select_from(OutboxMessage)).one()


def _subscribed_yesterday(engine, desk, email: str, *, confirm: bool, stop: bool) -> None:
    """An address as earlier visits left it, through the same service calls."""
    day = utcnow() - YESTERDAY
    with session_scope(engine) as session:
        subscriptions.subscribe(session=session, desk=desk, email=email, locale="en", now=day)
    with session_scope(engine) as session:
        subscriber = session.exec(select(Subscriber)).all()[-1]
        for action, wanted in (("confirm", confirm), ("stop", stop)):
            if wanted:
                token = subscriptions.subscription_link(
                    desk, subscriber.id, action).rsplit("/", 1)[1]
                subscriptions.follow_subscription_link(session=session, desk=desk, action=action,
                                                       token=token, now=day)


def _drain(app, engine, port) -> None:
    outbox.drain(engine=engine, cipher=services(app).crypto.cipher,
                 mailer=Mailer(host="127.0.0.1", port=port, sender="status@lifeline.test"),
                 now=utcnow())


def _answer(client, email: str):
    page = client.get("/status/subscribe").get_data(as_text=True)
    answer = client.post("/status/subscribe",
                         data={"csrf_token": csrf_token_from(page), "email": email})
    # The form's CSRF token is the session's, signed with a time: not about the address.
    return answer.status_code, CSRF_FIELD.sub("csrf", answer.get_data(as_text=True))


def test_known_and_unknown_addresses_get_the_same_answer_and_one_email_each(
        app, client, engine, desk, smtp_server):
    _subscribed_yesterday(engine, desk, "confirmed@example.org", confirm=True, stop=False)
    _subscribed_yesterday(engine, desk, "pending@example.org", confirm=False, stop=False)
    _subscribed_yesterday(engine, desk, "stopped@example.org", confirm=True, stop=True)
    port, sink = smtp_server
    _drain(app, engine, port)  # yesterday's confirmations
    sink.messages.clear()
    before = _queued(engine)
    answers = {}
    for email in ("new@example.org", "Confirmed@Example.org", "pending@example.org",
                  "stopped@example.org"):
        queued = _queued(engine)
        answers[email] = _answer(client, email)
        assert _queued(engine) == queued + 1, email  # the same work for every address
    assert len(set(answers.values())) == 1
    status, body = answers["new@example.org"]
    assert status == 200 and "Check your inbox" in body

    # Asked again the same day: nothing more is queued, for any of them (no mail bombing).
    for email in answers:
        assert _answer(client, email) == (status, body)
    assert _queued(engine) == before + 4

    _drain(app, engine, port)
    assert len(sink.messages) == 4
    received = {m["To"].lower(): m for m in sink.messages}
    assert len({m["Subject"] for m in received.values()}) == 1  # no hint in the subject
    for email in ("new@example.org", "pending@example.org", "stopped@example.org"):
        text = received[email].get_body(("plain",)).get_content()
        assert re.search(r"/status/subscription/confirm/\S+", text), email
    known = received["confirmed@example.org"].get_body(("plain",)).get_content()
    assert "already receives them" in known
    assert re.search(r"/status/unsubscribe/\d+/\S+", known)
    assert "/subscription/confirm/" not in known


def test_a_new_and_a_known_address_issue_the_same_statements(engine, desk):
    """What the database is asked, statement by statement, for a new address, a pending one,
    a confirmed one and a stopped one: the same, so neither the work nor its time tells."""
    from sqlalchemy import event

    _subscribed_yesterday(engine, desk, "s-confirmed@example.org", confirm=True, stop=False)
    _subscribed_yesterday(engine, desk, "s-pending@example.org", confirm=False, stop=False)
    _subscribed_yesterday(engine, desk, "s-stopped@example.org", confirm=True, stop=True)
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        statements.append(statement)

    traces = {}
    event.listen(engine, "before_cursor_execute", record)
    try:
        for email in ("s-new@example.org", "S-Confirmed@Example.org", "s-pending@example.org",
                      "s-stopped@example.org", "s-other-new@example.org"):
            statements.clear()
            with session_scope(engine) as session:
                subscriptions.subscribe(session=session, desk=desk, email=email, locale="en",
                                        now=utcnow())
            traces[email] = list(statements)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert traces["s-new@example.org"], traces
    assert all(trace == traces["s-new@example.org"] for trace in traces.values()), traces
    with session_scope(engine) as session:
        assert session.exec(select(func.count()).select_from(Subscriber)).one() == 5
        keys = session.exec(select(OutboxMessage.key).where(
            col(OutboxMessage.key).like(f"subscribe:%:{utcnow().date().isoformat()}"))).all()
    assert len(keys) == len(set(keys)) == 5  # one outbox row each

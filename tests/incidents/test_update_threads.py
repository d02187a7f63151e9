"""An incident's updates to an account's contacts as one thread, as a real SMTP server
received them: each carries a Reply-To that reads back to its contact, and names the
incident's first update and the one before it; a subscriber's update carries no reply
token (its answer is the unsubscribe link)."""

from __future__ import annotations

import dataclasses

from sqlmodel import select

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import outbox
from contacts.incidents import subscriptions
from contacts.incidents.models import SUBSCRIBER_EMAIL, Subscriber
from contacts.vault.models import CONTACT_EMAIL, Contact
from tests.conftest import read_strictly
from tests.incidents.conftest import complete_draft, publish_queued

FAN = "fan@example.org"


def _drain(app, port: int) -> None:
    mailer = dataclasses.replace(Mailer.from_settings(services(app).settings),
                                 host="127.0.0.1", port=port)
    outbox.drain(engine=services(app).engine, cipher=services(app).crypto.cipher,
                 mailer=mailer, now=utcnow(), limit=1000)


def _confirmed_subscriber(engine, desk) -> None:
    with session_scope(engine) as session:
        subscriptions.subscribe(session=session, desk=desk, email=FAN, locale="en",
                                now=utcnow())
    with session_scope(engine) as session:
        (found,) = session.exec(select(Subscriber)).all()
        assert desk.crypto.cipher.decrypt(found.email_encrypted,
                                          context=SUBSCRIBER_EMAIL) == FAN
        token = subscriptions.subscription_link(desk, found.id, "confirm").rsplit("/", 1)[1]
        subscriptions.follow_subscription_link(session=session, desk=desk, action="confirm",
                                               token=token, now=utcnow())


def test_contacts_updates_carry_their_contacts_reply_address_and_the_incidents_thread(
        app, engine, desk, vault, incident, smtp_server):
    port, sink = smtp_server
    _confirmed_subscriber(engine, desk)
    _drain(app, port)
    sink.received.clear()
    for _ in range(3):
        with session_scope(engine) as session:
            publish_queued(session=session, desk=desk, vault=vault, actor=Actor.system("t"),
                           incident_id=incident, draft=complete_draft(), now=utcnow())
        _drain(app, port)  # in order: each update's emails leave before the next is queued
    by_recipient: dict[str, list] = {}
    for raw in sink.received:
        message = read_strictly(raw)
        by_recipient.setdefault(str(message["To"]).lower(), []).append(message)
    with session_scope(engine) as session:
        contact_ids = {vault.crypto.cipher.decrypt(contact.email_encrypted,
                                                   context=CONTACT_EMAIL).lower(): contact.id
                       for contact in session.exec(select(Contact))}
    contacts = [address for address in by_recipient if address != FAN]
    assert len(contacts) > 20
    for address in contacts:
        first, second, third = by_recipient[address]
        for message in (first, second, third):
            assert desk.mail.read_reply_address(str(message["Reply-To"])) == (
                "contact", contact_ids[address])
        assert first["References"] is None and first["In-Reply-To"] is None
        assert str(second["References"]).split() == [first["Message-ID"]]
        assert str(second["In-Reply-To"]) == first["Message-ID"]
        assert str(third["References"]).split() == [first["Message-ID"], second["Message-ID"]]
        assert str(third["In-Reply-To"]) == second["Message-ID"]
    # A subscriber's updates thread too, with no reply token: only the unsubscribe link.
    first, second, third = by_recipient[FAN]
    assert all(message["Reply-To"] is None for message in (first, second, third))
    assert all(message["List-Unsubscribe"] for message in (first, second, third))
    assert str(third["References"]).split() == [first["Message-ID"], second["Message-ID"]]

"""Freshness: contacts not confirmed for a while get a signed link by email, in their
language, through the outbox (retries, bounces, Message-ID); following it confirms them;
nobody is asked twice in a row, and a contact the product just synced counts as confirmed."""

import email
import email.policy
import re
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import select

from contacts.core.db import session_scope, utcnow
from contacts.core.errors import Invalid
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import outbox
from contacts.delivery.models import OutboxMessage
from contacts.jobs import message_renderer
from contacts.vault import freshness
from contacts.vault.models import Contact, ContactVersion
from tests.helpers import csrf_token_from, smtp_server_with
from tests.vault.fixtures import make_document

LINK = re.compile(r"http://127\.0\.0\.1:8000(/confirm/[\w.\-]+)")


def age_contacts(engine, days: int = 200) -> None:
    """As if every contact had last been confirmed (or synced) `days` ago."""
    with session_scope(engine) as session:
        session.execute(update(Contact).values(last_confirmed_at=utcnow() - timedelta(days=days)))


def run_job(app, vault, now=None):
    """The freshness job's work: queue the confirmation emails (no SMTP)."""
    settings = services(app).settings
    with session_scope(services(app).engine) as session:
        return freshness.request_confirmations(
            session=session, vault=vault, render=message_renderer(app),
            secret_key=settings.secrets.secret_key, base_url="http://127.0.0.1:8000",
            now=now or utcnow(), after_days=180, link_days=30, limit=200)


def drain(app, port, now=None):
    """The outbox drain job, against the SMTP server on `port`."""
    settings = services(app).settings
    return outbox.drain(engine=services(app).engine,
                        cipher=services(app).crypto.cipher,
                        mailer=Mailer("127.0.0.1", port, settings.mail_sender),
                        now=now or utcnow())


@pytest.fixture
def document(app, sync_document):
    document = make_document(accounts=2, contacts_per_account=2)
    document["accounts"][0]["contacts"][0]["locale"] = "fr-FR"
    document["accounts"][0]["contacts"][1]["locale"] = "en"
    sync_document(document)
    age_contacts(services(app).engine)
    return document


def test_unconfirmed_contacts_are_asked_in_their_language_and_can_confirm(
        app, client, vault, engine, smtp_server, document):
    port, sink = smtp_server
    assert run_job(app, vault) == 4
    assert drain(app, port).sent == 4
    assert len(sink.messages) == 4
    by_address = {message["To"]: message for message in sink.messages}
    french = by_address[document["accounts"][0]["contacts"][0]["email"]]
    english = by_address[document["accounts"][0]["contacts"][1]["email"]]
    assert french["Subject"] == "Êtes-vous toujours le contact de Acme 0 Ltd ?"
    assert english["Subject"] == "Are you still the contact for Acme 0 Ltd?"
    assert english["List-Id"] and english["Message-ID"]
    with session_scope(engine) as session:
        keys = session.exec(select(OutboxMessage.key).where(
            OutboxMessage.purpose == "contact_confirmation", OutboxMessage.state == "sent")).all()
    assert {outbox.message_id_for(key) for key in keys} == {
        message["Message-ID"] for message in sink.messages}  # proof of what was sent
    text = english.get_body(("plain",)).get_content()
    assert document["accounts"][0]["contacts"][1]["name"] in text
    assert english.get_body(("html",)) is not None

    path = LINK.search(text).group(1)
    page = client.get(path)
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "Acme 0 Ltd" in body and document["accounts"][0]["contacts"][1]["email"] not in body
    done = client.post(path, data={"csrf_token": csrf_token_from(body)})
    assert done.status_code == 200 and "are confirmed" in done.get_data(as_text=True)
    with session_scope(engine) as session:
        confirmed = session.exec(select(Contact).where(
            Contact.external_id == document["accounts"][0]["contacts"][1]["external_id"])).one()
        assert confirmed.last_confirmed_at is not None
        events = session.exec(select(ContactVersion.event).where(
            ContactVersion.contact_id == confirmed.id).order_by(ContactVersion.version)).all()
    assert events == ["created", "confirmed"]

    assert run_job(app, vault) == 0  # asked already, nobody is asked twice
    later = utcnow() + timedelta(days=31)
    assert run_job(app, vault, now=later) == 3  # the confirmed one is not asked again


def test_a_tampered_or_expired_link_is_refused(app, client, vault, smtp_server, document):
    port, sink = smtp_server
    run_job(app, vault)
    drain(app, port)
    path = LINK.search(sink.messages[0].get_body(("plain",)).get_content()).group(1)
    tampered = client.get(path[:-3] + ("aaa" if not path.endswith("aaa") else "bbb"))
    assert tampered.status_code == 400
    assert "This confirmation link is not valid." in tampered.get_data(as_text=True)
    secret = services(app).settings.secrets.secret_key
    contact_id = freshness.contact_of_token(secret, path.rsplit("/", 1)[1], 30)
    with pytest.raises(Invalid, match="has expired"):
        freshness.contact_of_token(secret, path.rsplit("/", 1)[1], -1)
    assert contact_id.startswith("ctc_")


def test_queuing_needs_no_mail_server_and_the_messages_wait_in_the_outbox(app, vault, engine,
                                                                         document):
    assert run_job(app, vault) == 4  # no SMTP server anywhere: nothing is sent yet
    with session_scope(engine) as session:
        queued = session.exec(select(OutboxMessage).where(
            OutboxMessage.purpose == "contact_confirmation")).all()
        asked = session.exec(select(Contact).where(
            Contact.confirmation_requested_at.is_not(None))).all()
    assert [message.state for message in queued] == ["queued"] * 4
    assert len(asked) == 4


class RefusingOne:
    """An SMTP server on which one mailbox is dead (550), the others take mail."""

    def __init__(self, dead: str):
        self.dead, self.received = dead, []

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        if address == self.dead:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.received.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        return "250 OK"


def test_one_dead_mailbox_does_not_stop_the_others_and_its_contact_is_flagged(
        app, vault, engine, sync_document):
    document = make_document(accounts=3, contacts_per_account=3)
    sync_document(document)
    contacts = [contact for account in document["accounts"] for contact in account["contacts"]]
    age_contacts(engine)
    dead = contacts[1]  # not the first nor the last of the campaign
    server = RefusingOne(dead["email"])
    with smtp_server_with(server) as port:
        assert run_job(app, vault) == 9
        report = drain(app, port)
    assert (report.sent, report.failed) == (8, 1)
    assert sorted(message["To"] for message in server.received) == sorted(
        contact["email"] for contact in contacts if contact is not dead)
    with session_scope(engine) as session:
        flagged = freshness.flag_bounced_confirmations(session=session, now=utcnow())
    with session_scope(engine) as session:
        undeliverable = session.exec(select(Contact.external_id).where(
            Contact.undeliverable_at.is_not(None))).all()
        assert len(flagged) == 1
    assert undeliverable == [dead["external_id"]]


def test_a_fresh_import_is_not_emailed_and_a_synced_change_counts_as_confirmed(
        app, vault, engine, sync_document):
    document = make_document(accounts=2, contacts_per_account=2)
    sync_document(document)
    now = utcnow()
    assert run_job(app, vault, now=now) == 0  # just imported: confirmed by the import
    assert run_job(app, vault, now=now + timedelta(days=179)) == 0
    # Six months pass with no change from the product: every contact is due...
    age_contacts(engine)
    # ...except the one the product sends again with new details, which counts as confirmed.
    changed = document["accounts"][0]["contacts"][0]
    changed["name"] += " Jr"
    report = sync_document(document)
    assert (report.contacts.updated, report.contacts.unchanged) == (1, 3)
    with session_scope(engine) as session:
        due = freshness.due_for_confirmation(session=session, now=utcnow(), after_days=180,
                                             link_days=30, limit=100)
        assert changed["external_id"] not in {contact.external_id for contact in due}
        assert len(due) == 3

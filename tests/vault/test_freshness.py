"""Freshness: contacts not confirmed for a while get a signed link by email, in their
language; following it confirms them; nobody is asked twice in a row."""

import re
from datetime import timedelta

import pytest
from sqlmodel import select

from contacts.db import session_scope, utcnow
from contacts.errors import Invalid
from contacts.jobs import render_confirmation
from contacts.mail import Mailer, MailFailed
from contacts.vault import freshness
from contacts.vault.models import Contact, ContactVersion
from tests.helpers import csrf_token_from
from tests.vault.fixtures import make_document

LINK = re.compile(r"http://127\.0\.0\.1:8000(/confirm/[\w.\-]+)")


def run_job(app, vault, port, now=None):
    settings = app.extensions["lifeline.settings"]
    with session_scope(app.extensions["lifeline.engine"]) as session:
        return freshness.request_confirmations(
            session=session, vault=vault, mailer=Mailer("127.0.0.1", port, settings.mail_sender),
            render=render_confirmation(app), secret_key=settings.secrets.secret_key,
            base_url="http://127.0.0.1:8000", now=now or utcnow(), after_days=180,
            link_days=30, limit=200)


@pytest.fixture
def document(sync_document):
    document = make_document(accounts=2, contacts_per_account=2)
    document["accounts"][0]["contacts"][0]["locale"] = "fr-FR"
    document["accounts"][0]["contacts"][1]["locale"] = "en"
    sync_document(document)
    return document


def test_unconfirmed_contacts_are_asked_in_their_language_and_can_confirm(
        app, client, vault, engine, smtp_server, document):
    port, sink = smtp_server
    assert run_job(app, vault, port) == 4
    assert len(sink.messages) == 4
    by_address = {message["To"]: message for message in sink.messages}
    french = by_address[document["accounts"][0]["contacts"][0]["email"]]
    english = by_address[document["accounts"][0]["contacts"][1]["email"]]
    assert french["Subject"] == "Êtes-vous toujours le contact de Acme 0 Ltd ?"
    assert english["Subject"] == "Are you still the contact for Acme 0 Ltd?"
    assert english["List-Id"] and english["Message-ID"]
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

    assert run_job(app, vault, port) == 0  # asked already, nobody is asked twice
    later = utcnow() + timedelta(days=31)
    assert run_job(app, vault, port, now=later) == 3  # the confirmed one is not asked again


def test_a_tampered_or_expired_link_is_refused(app, client, vault, smtp_server, document):
    port, sink = smtp_server
    run_job(app, vault, port)
    path = LINK.search(sink.messages[0].get_body(("plain",)).get_content()).group(1)
    tampered = client.get(path[:-3] + ("aaa" if not path.endswith("aaa") else "bbb"))
    assert tampered.status_code == 400
    assert "This confirmation link is not valid." in tampered.get_data(as_text=True)
    secret = app.extensions["lifeline.settings"].secrets.secret_key
    contact_id = freshness.contact_of_token(secret, path.rsplit("/", 1)[1], 30)
    with pytest.raises(Invalid, match="has expired"):
        freshness.contact_of_token(secret, path.rsplit("/", 1)[1], -1)
    assert contact_id.startswith("ctc_")


def test_an_unreachable_mail_server_fails_the_run_without_marking_anyone(app, vault, engine,
                                                                       document):
    with pytest.raises(MailFailed):
        run_job(app, vault, port=1)
    with session_scope(engine) as session:
        asked = session.exec(select(Contact).where(
            Contact.confirmation_requested_at.is_not(None))).all()
    assert asked == []

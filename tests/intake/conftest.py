"""Fixtures of the intake tests: an app sending mail to a real SMTP server, and helpers that
run the jobs (matching, the outbox) the way the scheduler does."""

from __future__ import annotations

import re

import pytest

from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import outbox
from contacts.intake import references, trust
from contacts.intake.config import Intake
from contacts.intake.models import SupportRequest
from contacts.intake.writer import RequestWriter
from contacts.jobs import message_renderer
from contacts.vault import service as vault_service

UNLIMITED = {"intake_rate_limit_per_ip": "100000 per minute",
             "intake_rate_limit_per_email": "100000 per minute",
             "intake_rate_limit_per_domain": "100000 per minute"}
CODE = re.compile(r"\b(\d{6})\b")


class Desk:
    """The intake of one app, as the jobs and the tests reach it."""

    def __init__(self, app, sink):
        self.app = app
        self.sink = sink
        self.engine = services(app).engine
        settings = services(app).settings
        crypto = services(app).crypto
        self.intake = Intake.from_settings(settings, crypto)
        self.writer = RequestWriter(engine=self.engine, intake=self.intake,
                                    render=message_renderer(app))
        self.vault = vault_service.Vault.from_settings(settings, crypto)
        self.mailer = Mailer.from_settings(settings)

    def deliver(self, now=None) -> outbox.DrainReport:
        """Send what the outbox holds, as the delivery job does, to the real SMTP server."""
        return outbox.drain(engine=self.engine, cipher=self.intake.crypto.cipher,
                            mailer=self.mailer, now=now or utcnow())

    def process(self, now=None) -> int:
        with session_scope(self.engine) as session:
            return trust.process_pending(session=session, intake=self.intake,
                                         vault=self.vault, now=now or utcnow())

    def replay(self) -> int:
        with self.app.app_context():
            return self.writer.replay_spool(now=utcnow())

    def request(self, reference: str) -> SupportRequest:
        with session_scope(self.engine) as session:
            found = references.get_by_reference(session=session, reference=reference)
            session.expunge(found)
            return found

    def mail_to(self, address: str) -> list:
        return [message for message in self.sink.messages if message["To"] == address]

    def code_for(self, address: str) -> str:
        """The code in the latest email sent to an address (its body: never the Subject)."""
        latest = self.mail_to(address)[-1]
        return CODE.search(latest.get_body(("plain",)).get_content()).group(1)

    def submit(self, client, **body):
        return client.post("/api/v1/requests", json=body)


@pytest.fixture
def desk_app(make_app, smtp_server):
    port, _sink = smtp_server
    return make_app(mail_port=port, **UNLIMITED)


@pytest.fixture
def desk(desk_app, smtp_server):
    return Desk(desk_app, smtp_server[1])


@pytest.fixture
def desk_client(desk_app):
    return desk_app.test_client()


ACME = {"accounts": [{
    "external_id": "A-ACME", "name": "Acme Corporation",
    "sites": [{"external_id": "S-ACME-SHOP", "url": "https://shop.acme.example",
               "name": "Acme Shop"}],
    "contacts": [
        {"external_id": "C-ADA", "name": "Ada Admin", "email": "ada@acme.example",
         "phone": "+1 415 555 0101", "role": "site_admin", "locale": "en",
         "timezone": "America/Los_Angeles", "sites": ["S-ACME-SHOP"]},
        {"external_id": "C-BOB", "name": "Bob Billing", "email": "bob@acme.example",
         "role": "billing", "locale": "fr", "timezone": "Europe/Paris", "sites": []},
    ]}, {
    "external_id": "A-GLOBEX", "name": "Globex", "sites": [
        {"external_id": "S-GLOBEX", "url": "https://globex.example", "name": "Globex Main"}],
    "contacts": [
        {"external_id": "C-GIL", "name": "Gil Globex", "email": "gil@globex.example",
         "role": "technical", "locale": "en", "timezone": "UTC", "sites": ["S-GLOBEX"]}]}]}


@pytest.fixture
def acme(sync_document, engine):
    """Two accounts in the vault; returns their IDs by external ID."""
    sync_document(ACME)
    from sqlmodel import select

    from contacts.vault.models import Account
    with session_scope(engine) as session:
        return {account.external_id: account.id for account in session.exec(select(Account))}

"""Fixtures of the escalations tests: an app mailing a real SMTP server, accounts in the
vault, support staff, and a `work` helper that calls the service as the pages and jobs do."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import outbox
from contacts.escalations import service
from contacts.escalations.models import WorkItem
from contacts.escalations.service import SupportDesk
from tests.intake.conftest import UNLIMITED

ACCOUNTS = {"accounts": [
    {"external_id": "A-1", "name": "Acme Gardens",
     "sites": [{"external_id": "S-1", "url": "https://acme.example.com", "name": "Acme shop"}],
     "contacts": [{"external_id": "C-1", "name": "Ada Admin", "email": "ada@acme.example.com",
                   "phone": "+33 6 12 34 56 78", "role": "site_admin", "locale": "en",
                   "timezone": "Europe/Paris", "sites": ["S-1"]},
                  {"external_id": "C-2", "name": "Bob Billing", "email": "bob@acme.example.com",
                   "role": "billing", "locale": "fr", "timezone": "Europe/Paris",
                   "sites": []}]},
    {"external_id": "B-1", "name": "Beta Bakery",
     "sites": [{"external_id": "S-2", "url": "https://beta.example.com", "name": "Beta"}],
     "contacts": [{"external_id": "C-3", "name": "Cy Chef", "email": "cy@beta.example.com",
                   "role": "site_admin", "locale": "en", "timezone": "UTC",
                   "sites": ["S-2"]}]},
]}
# Monday 2026-11-23 10:00 UTC: inside EMEA's shift (08:00-16:00) and business hours.
MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


class Work:
    """The escalations of one app, reached as the pages and jobs reach them."""

    def __init__(self, app, sink):
        self.app = app
        self.sink = sink
        self.engine = services(app).engine
        self.desk: service.SupportDesk = services(app).get(SupportDesk)

    def run(self, function, **arguments):
        """Call a service function in its own transaction, as a request or a job does."""
        with self.app.app_context(), session_scope(self.engine) as session:
            result = function(session=session, desk=self.desk, **arguments)
            if isinstance(result, WorkItem):
                session.flush()
                session.expunge(result)
            return result

    def create(self, actor: Actor, now: datetime | None = None, **fields) -> WorkItem:
        fields.setdefault("kind", "escalation")
        fields.setdefault("channel", "phone")
        fields.setdefault("title", "Customer called about a deleted site")
        return self.run(service.create_item, actor=actor, new=service.NewItem(**fields),
                        now=now or utcnow())

    def item(self, item_id: str) -> WorkItem:
        with session_scope(self.engine) as session:
            found = service.get_item(session=session, item_id=item_id, include_deleted=True)
            session.expunge(found)
            return found

    def deliver(self, now: datetime | None = None) -> outbox.DrainReport:
        settings = services(self.app).settings
        return outbox.drain(engine=self.engine, cipher=self.desk.crypto.cipher,
                            mailer=Mailer.from_settings(settings), now=now or utcnow())

    def mail_to(self, address: str) -> list:
        return [message for message in self.sink.messages if message["To"] == address]


@pytest.fixture
def work_app(make_app, smtp_server):
    port, _ = smtp_server
    return make_app(mail_port=port, escalations_region_leads=["EMEA=emea-lead@example.com",
                                                              "AMER=amer-lead@example.com"],
                    **UNLIMITED)


@pytest.fixture
def work(work_app, smtp_server):
    return Work(work_app, smtp_server[1])


@pytest.fixture
def accounts(work_app, sync_document, vault):
    """The two accounts of ACCOUNTS, by external ID: (account ID, {contact external ID: ID})."""
    sync_document(ACCOUNTS)
    from contacts.vault.models import Account, Contact

    with session_scope(services(work_app).engine) as session:
        from sqlmodel import select

        found = {}
        for account in session.exec(select(Account)):
            contacts = {contact.external_id: contact.id for contact in session.exec(
                select(Contact).where(Contact.account_id == account.id))}
            found[account.external_id] = (account.id, contacts)
    return found


@pytest.fixture
def support(work_app, make_staff):
    return make_staff("support")


@pytest.fixture
def actor(support):
    return Actor("staff", support.id)


@pytest.fixture
def desk_for_intake(work_app, smtp_server):
    """The intake of the same app, for requests from the public form."""
    from tests.intake.conftest import Desk

    return Desk(work_app, smtp_server[1])

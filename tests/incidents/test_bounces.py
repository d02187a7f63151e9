"""Bounces: an update email refused for good is not retried, its contact is flagged for the
vault's freshness work, and an account none of whose contacts the update reached falls back
to a call by support (a P1 task in the escalations queue), once."""

from __future__ import annotations

import pytest
from sqlmodel import select

from contacts import jobs
from contacts.core import scheduler
from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import outbox
from contacts.delivery.models import OutboxMessage
from contacts.escalations.models import WorkItem
from contacts.escalations.service import SupportDesk
from contacts.incidents import progress, proof, records
from contacts.incidents.service import CommsDesk
from contacts.vault import freshness
from contacts.vault.models import Contact
from tests.escalations.conftest import ACCOUNTS
from tests.helpers import Auth, smtp_server_with
from tests.incidents.conftest import complete_draft, publish_queued

GONE = {"ada@acme.example.com", "bob@acme.example.com"}  # every contact of Acme Gardens


class Refusing:
    """A real SMTP server whose mailboxes for GONE do not exist (550)."""

    def __init__(self):
        self.delivered: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        if address in GONE:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.delivered += envelope.rcpt_tos
        return "250 OK"


@pytest.fixture
def refusing_server():
    handler = Refusing()
    with smtp_server_with(handler) as port:
        yield port, handler


def test_an_account_no_update_email_reached_falls_back_to_a_call(make_app, refusing_server,
                                                                 sync_document, monkeypatch,
                                                                 make_staff):
    port, server = refusing_server
    app = make_app(mail_port=port)
    engine = services(app).engine
    sync_document(ACCOUNTS)
    desk = services(app).get(CommsDesk)
    actor = Actor.system("test")
    with app.app_context(), session_scope(engine) as session:
        incident = records.create_incident(session=session, actor=actor, title="Deletion",
                                           severity="critical", started_at=utcnow(),
                                           now=utcnow())
        progress.add_sites(session=session, desk=desk, actor=actor, incident_id=incident.id,
                           refs=["S-1", "S-2"], now=utcnow())
        vault = services(app).get(SupportDesk).vault
        publish_queued(session=session, desk=desk, vault=vault, actor=actor,
                           incident_id=incident.id, draft=complete_draft(), now=utcnow())
    report = outbox.drain(engine=engine, cipher=services(app).crypto.cipher,
                          mailer=Mailer.from_settings(services(app).settings),
                          now=utcnow())
    assert (report.sent, report.failed, report.retried) == (1, 2, 0)  # 550: not retried
    assert server.delivered == ["cy@beta.example.com"]

    monkeypatch.setattr(scheduler, "_app", app)
    monkeypatch.setattr(scheduler, "_engine", engine)
    jobs.send_scheduled_updates()
    jobs.send_scheduled_updates()  # once: nothing new the second time
    with session_scope(engine) as session:
        flagged = {contact.external_id for contact in session.exec(select(Contact)) if
                   contact.undeliverable_at is not None}
        tasks = list(session.exec(select(WorkItem)))
        failed = list(session.exec(select(OutboxMessage).where(
            OutboxMessage.state == "failed")))
        fallbacks = proof.fallbacks_by_update(session=session, incident_id=incident.id)
        acme = session.exec(select(Contact).where(Contact.external_id == "C-1")).one()
    assert flagged == {"C-1", "C-2"}
    assert {message.attempts for message in failed} == {1}
    assert "550" in failed[0].last_error
    assert fallbacks == {1: 1}
    assert len(tasks) == 1
    task = tasks[0]
    assert (task.kind, task.priority, task.account_id, task.incident_id) == (
        "task", 1, acme.account_id, incident.id)

    client = app.test_client()
    assert Auth(client).login(make_staff("support")).status_code == 302
    page = client.get(f"/console/accounts/{acme.account_id}").get_data(as_text=True)
    assert page.count(">bounced</span>") == 2
    assert ("Call the account: update 1 of “Deletion” reached none of the account&#39;s 2 "
            "contacts by email") in page

    with session_scope(engine) as session:
        freshness.confirm(session=session, vault=vault, actor=actor, contact_id=acme.id,
                          now=utcnow())
    jobs.send_scheduled_updates()  # the old refusal does not flag the confirmed contact again
    with session_scope(engine) as session:
        assert session.get(Contact, acme.id).undeliverable_at is None
        assert len(session.exec(select(WorkItem)).all()) == 1

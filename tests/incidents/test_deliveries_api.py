"""GET /api/v1/incidents/<id>/accounts/<acc_...>/deliveries: one account's proof of
delivery over the API (what the drill reads to judge late bounces): each message of each
update with its outcome now, IDs only; a late bounce shows as failed and bounced, as a
refusal at RCPT does."""

from __future__ import annotations

from sqlmodel import select

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.ids import new_id
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import ledger, outbox
from contacts.delivery.models import OutboxMessage
from contacts.escalations.service import SupportDesk
from contacts.incidents import progress, records
from contacts.incidents.service import CommsDesk
from contacts.vault.models import Contact
from tests.escalations.conftest import ACCOUNTS
from tests.incidents.conftest import complete_draft, publish_queued


def _get(client, url, token):
    return client.get(url, headers={"Authorization": f"Bearer {token}"})


def test_an_accounts_deliveries_show_a_late_bounce_as_failed_and_bounced(
        make_app, smtp_server, sync_document, make_token):
    port, sink = smtp_server
    app = make_app(mail_port=port)
    engine = services(app).engine
    sync_document(ACCOUNTS)
    desk, actor = services(app).get(CommsDesk), Actor.system("test")
    with app.app_context(), session_scope(engine) as session:
        incident = records.create_incident(session=session, actor=actor, title="Deletion",
                                           severity="critical", started_at=utcnow(),
                                           now=utcnow())
        progress.add_sites(session=session, desk=desk, actor=actor, incident_id=incident.id,
                           refs=["S-1", "S-2"], now=utcnow())
        publish_queued(session=session, desk=desk, vault=services(app).get(SupportDesk).vault,
                       actor=actor, incident_id=incident.id, draft=complete_draft(),
                       now=utcnow())
    report = outbox.drain(engine=engine, cipher=services(app).crypto.cipher,
                          mailer=Mailer.from_settings(services(app).settings), now=utcnow())
    assert report.sent == 3 and len(sink.received) == 3
    with session_scope(engine) as session:
        contacts = {contact.external_id: contact for contact in session.exec(select(Contact))}
        ada = contacts["C-1"]
        sent_to_ada = session.exec(select(OutboxMessage).where(
            OutboxMessage.recipient_id == ada.id)).one()
        # The DSN arrives later: the mailroom marks the message it names.
        assert ledger.bounce_reported(session=session, message_id=sent_to_ada.id,
                                      reason="5.1.1")
    reader = make_token("read")

    answer = _get(app.test_client(),
                  f"/api/v1/incidents/{incident.id}/accounts/{ada.account_id}/deliveries", reader)
    assert answer.status_code == 200, answer.get_json()
    listed = answer.get_json()
    assert listed["account_id"] == ada.account_id
    by_contact = {row["recipient"]: row for row in listed["deliveries"]}
    assert set(by_contact) == {ada.id, contacts["C-2"].id}  # Acme's two, not Beta's
    assert (by_contact[ada.id]["state"], by_contact[ada.id]["failure"]) == ("failed", "bounced")
    bob = by_contact[contacts["C-2"].id]
    assert (bob["state"], bob["failure"], bob["update_number"]) == ("sent", None, 1)
    assert bob["channel"] == "email" and bob["attempts"] == 1 and bob["sent_at"]
    assert "@" not in answer.get_data(as_text=True)  # IDs only, no addresses

    beta = _get(app.test_client(), f"/api/v1/incidents/{incident.id}/accounts/"
                f"{contacts['C-3'].account_id}/deliveries", reader).get_json()["deliveries"]
    assert [(row["recipient"], row["state"]) for row in beta] == [(contacts["C-3"].id, "sent")]


def test_deliveries_need_an_account_id_the_read_scope_and_a_known_incident(
        client, make_token, incident):
    reader = make_token("read")
    url = f"/api/v1/incidents/{incident}/accounts"
    assert _get(client, f"{url}/{incident}/deliveries", reader).status_code == 400  # inc_
    account = new_id("acc")
    assert _get(client, f"{url}/{account}/deliveries", reader).get_json() == {
        "account_id": account, "deliveries": []}  # an account the incident did not reach
    assert _get(client, f"{url}/{account}/deliveries",
                make_token("progress:write")).status_code == 403
    assert client.get(f"{url}/{account}/deliveries").status_code == 401
    assert _get(client, f"/api/v1/incidents/{new_id('inc')}/accounts/{account}/deliveries",
                reader).status_code == 404

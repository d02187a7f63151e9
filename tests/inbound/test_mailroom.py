"""Inbound email end to end, on both databases: what Lifeline sent reaches a real SMTP
server; what customers' software answers (tests/inbound/letters.py) lands in a real Dovecot;
one pass of the reader hands each message to the mailroom, and the request, the item, the
outbox and the vault show what it did."""

from __future__ import annotations

import email
import email.policy
from email.utils import parseaddr

import pytest
from sqlmodel import col, func, select

from contacts.core import mailtokens
from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import outbox
from contacts.delivery.models import OutboxMessage
from contacts.escalations import service as escalations
from contacts.escalations.models import EVENT_BODY, ItemEvent, WorkItem
from contacts.inbound import mailbox as inbound_mailbox
from contacts.inbound.models import InboundAttachment, InboundMessage
from contacts.incidents import progress, records
from contacts.incidents import service as incidents_service
from contacts.incidents.desk import CommsDesk
from contacts.intake.models import SupportRequest
from contacts.intake.service import Intake, process_pending
from contacts.timeline import account_history
from contacts.vault.models import Contact
from contacts.vault.service import Vault
from tests.helpers import stored_bytes
from tests.inbound import letters
from tests.incidents.conftest import complete_draft, publish_queued
from tests.vault.fixtures import make_document

SUPPORT = "support@lifeline.test"
BOUNCES = "bounces@lifeline.test"
STAFF = Actor("staff", "stf_00000000000000000000000000")


@pytest.fixture
def app(make_app, smtp_server, dovecot, monkeypatch):
    port, _ = smtp_server
    monkeypatch.setenv("LIFELINE_INBOUND_SUPPORT_PASSWORD", dovecot.password)
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.cert_file))
    return make_app(mail_port=port, mail_sender=f"Lifeline support <{SUPPORT}>",
                    mail_domain="lifeline.test", mail_reply_to=SUPPORT,
                    mail_return_path=BOUNCES,
                    inbound_trusted_authserv_ids=[letters.MX],
                    inbound_attachment_max_bytes=10 * 1024 * 1024,
                    inbound_mailboxes=[{"name": "support", "host": "127.0.0.1",
                                        "port": dovecot.imaps_port, "security": "tls",
                                        "username": dovecot.user}])


@pytest.fixture
def document():
    return make_document(accounts=3, contacts_per_account=2)


@pytest.fixture
def incident(app, sync_document, document):
    return open_incident(app, sync_document, document)


def open_incident(app, sync_document, document) -> str:
    """An incident over every account's first site, its first update sent."""
    sync_document(document)
    built = services(app)
    desk, vault = built.get(CommsDesk), built.get(Vault)
    actor = Actor.system("test")
    with session_scope(built.engine) as session:
        created = records.create_incident(session=session, actor=actor, severity="critical",
                                          title="Sites deleted by a maintenance script",
                                          started_at=utcnow(), now=utcnow())
        progress.add_sites(session=session, desk=desk, actor=actor, incident_id=created.id,
                           now=utcnow(), refs=[account["sites"][0]["external_id"]
                                               for account in document["accounts"]])
        publish_queued(session=session, desk=desk, vault=vault, actor=actor,
                       incident_id=created.id, draft=complete_draft(), now=utcnow())
    drain(app)
    return created.id


def drain(app) -> None:
    built = services(app)
    while outbox.drain(engine=built.engine, cipher=built.crypto.cipher,
                       mailer=Mailer.from_settings(built.settings), now=utcnow()).sent:
        pass


def poll(app) -> inbound_mailbox.ReadReport:
    """One pass of the reader over the support mailbox, with the app's handler."""
    built = services(app)
    return inbound_mailbox.read_mailbox(
        engine=built.engine, crypto=built.crypto,
        mailbox=inbound_mailbox.configured_mailbox(built.settings, "support"),
        reader=inbound_mailbox.ReaderSettings.from_settings(built.settings),
        handle=built.get(inbound_mailbox.MailHandler).handle)


def to_address(raw: bytes) -> str:
    return parseaddr(str(email.message_from_bytes(raw, policy=email.policy.default)["To"]))[1]


def sent_to(sink, address: str) -> list[bytes]:
    return [raw for raw in sink.received if to_address(raw) == address]


def contacts_of(document, account: int = 0) -> list[dict]:
    return document["accounts"][account]["contacts"]


def account_id(app, document, account: int = 0) -> str:
    with session_scope(services(app).engine) as session:
        email_index = services(app).crypto.index.email(contacts_of(document, account)[0]["email"])
        return session.exec(select(Contact.account_id)
                            .where(Contact.email_index == email_index)).one()


def events(app, item_id: str) -> list[ItemEvent]:
    with session_scope(services(app).engine) as session:
        found = list(session.exec(select(ItemEvent).where(ItemEvent.item_id == item_id)
                                  .order_by(ItemEvent.id)))
        session.expunge_all()
        return found


def test_a_reply_to_an_update_joins_the_accounts_item_and_threads_both_ways(
        app, smtp_server, dovecot, incident, document):
    _, sink = smtp_server
    built = services(app)
    desk = built.get(escalations.SupportDesk)
    admin = contacts_of(document)[0]
    account = account_id(app, document)
    with session_scope(built.engine) as session:
        item = escalations.create_item(session=session, desk=desk, actor=STAFF, now=utcnow(),
                                       new=escalations.NewItem(
                                           kind="ticket", channel="phone", account_id=account,
                                           title="Shop pages missing", incident_id=incident))
        escalations.change_status(session=session, desk=desk, actor=STAFF, item_id=item.id,
                                  status="in_progress", now=utcnow())
        escalations.change_status(session=session, desk=desk, actor=STAFF, item_id=item.id,
                                  status="waiting_on_customer", now=utcnow())
        item_id = item.id
    update, = sent_to(sink, admin["email"])
    reply = letters.thunderbird_reply(
        update, sender=f"{admin['name']} <{admin['email']}>",
        body="Thanks. Our product pages are still missing after the last wave; the blog "
             "came back this morning.")
    dovecot.append(reply)

    report = poll(app)

    assert (report.processed, report.failed) == (1, 0)
    assert dovecot.count("INBOX") == 0
    with session_scope(built.engine) as session:
        row = session.exec(select(InboundMessage)).one()
        assert (row.outcome, row.thread_kind, row.item_id, row.sender_is_party,
                row.sender_verified) == ("reply", "contact", item_id, True, True)
        assert session.get(WorkItem, item_id).status == "in_progress"
        timeline = account_history(session, account)
    answered = [event for event in events(app, item_id) if event.kind == "customer_reply"]
    assert len(answered) == 1
    body = desk.open(answered[0].body_encrypted, EVENT_BODY)
    assert "product pages are still missing" in body and "wrote:" not in body
    assert any(entry.text == "An email answered an incident update" for entry in timeline)

    # Support answers; the customer's client threads the answer and the next reply under it.
    with session_scope(built.engine) as session:
        escalations.reply(session=session, desk=desk, actor=STAFF, item_id=item_id,
                          now=utcnow(), body="We are restoring the product pages now.")
    drain(app)
    answer = sent_to(sink, admin["email"])[-1]
    parsed = email.message_from_bytes(answer, policy=email.policy.default)
    theirs = str(email.message_from_bytes(reply, policy=email.policy.default)["Message-ID"])
    assert str(parsed["In-Reply-To"]) == theirs and theirs in str(parsed["References"])
    assert mailtokens.read_reply_address(parseaddr(str(parsed["Reply-To"]))[1], SUPPORT,
                                         built.settings.secrets.secret_key) == ("item", item_id)
    dovecot.append(letters.thunderbird_reply(
        answer, sender=f"{admin['name']} <{admin['email']}>", body="They are back, thanks!"))
    poll(app)
    answered = [event for event in events(app, item_id) if event.kind == "customer_reply"]
    second = desk.open(answered[1].body_encrypted, EVENT_BODY)
    assert second == "They are back, thanks!"


def test_a_reply_from_someone_else_is_kept_marked_and_moves_nothing(
        app, smtp_server, dovecot, incident, document):
    _, sink = smtp_server
    admin = contacts_of(document)[0]
    update, = sent_to(sink, admin["email"])
    dovecot.append(letters.thunderbird_reply(update, sender="Mallory <mallory@evil.test>",
                                             body="Please send the backups to me."))
    poll(app)
    built = services(app)
    with session_scope(built.engine) as session:
        row = session.exec(select(InboundMessage)).one()
        assert (row.outcome, row.sender_is_party) == ("reply", False)
        item = session.get(WorkItem, row.item_id)
        assert item.requester_contact_id is None
        kinds = [event.kind for event in events(app, item.id)]
    assert "other_reply" in kinds and "customer_reply" not in kinds


def test_a_new_email_becomes_a_request_with_trust_from_the_receiving_server(
        app, smtp_server, dovecot, document, sync_document):
    sync_document(document)
    admin = contacts_of(document)[0]
    dovecot.append([
        letters.new_message(sender="Sam Stranger <sam@stranger.test>", to=SUPPORT,
                            subject="Our site is gone", body="Everything is gone since 7:30.",
                            verdict=None),
        letters.new_message(sender=f"{admin['name']} <{admin['email']}>", to=SUPPORT,
                            subject="Sites deleted", body="All our sites are gone."),
        letters.new_message(sender=f"{admin['name']} <{admin['email']}>", to=SUPPORT,
                            subject="Sites deleted (forged)", body="Give me access.",
                            verdict=letters.passed(admin["email"].rpartition("@")[2]),
                            authserv_id="mx.evil.test"),
    ])
    assert poll(app).processed == 3
    built = services(app)
    with session_scope(built.engine) as session:
        process_pending(session=session, intake=built.get(Intake), vault=built.get(Vault),
                        now=utcnow())
    with session_scope(built.engine) as session:
        requests = list(session.exec(select(SupportRequest).order_by(SupportRequest.received_at,
                                                                     SupportRequest.id)))
        by_message = {row.request_id: row for row in session.exec(select(InboundMessage))}
        receipts = session.exec(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.purpose == "request_received")).one()
    assert [request.channel for request in requests] == ["email"] * 3
    verification = sorted(request.verification for request in requests)
    assert verification == ["authorized", "unverified", "unverified"]
    assert all(by_message[request.id].outcome == "request" for request in requests)
    # One receipt an hour per sender: the admin's second email got none.
    assert receipts == 2


def update_rows(app, account: str) -> dict[str, int]:
    """Per contact of an account: the outbox row of its update email."""
    with session_scope(services(app).engine) as session:
        return {row.recipient_id: row.id for row in session.exec(select(OutboxMessage).where(
            OutboxMessage.about_kind == "update", OutboxMessage.recipient_kind == "contact",
            OutboxMessage.account_id == account))}


def contact_id_of(app, address: str) -> str:
    with session_scope(services(app).engine) as session:
        return session.exec(select(Contact.id).where(
            Contact.email_index == services(app).crypto.index.email(address))).one()


def test_a_late_hard_bounce_acts_as_a_synchronous_one(app, smtp_server, dovecot, incident,
                                                      document):
    _, sink = smtp_server
    built = services(app)
    secret = built.settings.secrets.secret_key
    everyone_bounced = account_id(app, document, 1)
    rows = update_rows(app, everyone_bounced)
    notices = [letters.postfix_bounce(
        sent_to(sink, contact["email"])[0], recipient=contact["email"],
        return_path=mailtokens.return_path(BOUNCES, secret,
                                           rows[contact_id_of(app, contact["email"])]))
        for contact in contacts_of(document, 1)]
    waiting = contacts_of(document, 2)[0]
    delayed = update_rows(app, account_id(app, document, 2))[contact_id_of(app, waiting["email"])]
    notices.append(letters.postfix_bounce(
        sent_to(sink, waiting["email"])[0], recipient=waiting["email"], delayed=True,
        return_path=mailtokens.return_path(BOUNCES, secret, delayed)))
    dovecot.append(notices)

    poll(app)

    with session_scope(built.engine) as session:
        states = {row.id: (row.state, row.failure) for row in session.exec(
            select(OutboxMessage).where(col(OutboxMessage.id).in_([*rows.values(), delayed])))}
        outcomes = sorted(row.outcome for row in session.exec(select(InboundMessage)))
    assert [states[outbox_id] for outbox_id in rows.values()] == [("failed", "bounced")] * 2
    assert states[delayed] == ("sent", None)
    assert outcomes == ["bounce", "bounce", "delay"]
    # What the cadence job does after a synchronous 5xx, it now does after these.
    with session_scope(built.engine) as session:
        unreached = incidents_service.follow_up_bounces(session=session, now=utcnow())
        escalations.call_unreached(session=session, desk=built.get(escalations.SupportDesk),
                                   unreached=unreached, now=utcnow())
    with session_scope(built.engine) as session:
        flagged = set(session.exec(select(Contact.id).where(
            col(Contact.undeliverable_at).is_not(None))))
        calls = [item.account_id for item in session.exec(
            select(WorkItem).where(WorkItem.kind == "task"))]
    assert flagged == set(rows)
    assert calls == [everyone_bounced]
    # The same report again changes nothing more.
    dovecot.append(notices[0])
    poll(app)
    with session_scope(built.engine) as session:
        assert session.exec(select(func.count()).select_from(WorkItem).where(
            WorkItem.kind == "task")).one() == 1


def test_an_abuse_report_flags_a_contact_and_stops_a_subscriber(app, smtp_server, dovecot,
                                                                sync_document, document):
    from contacts.incidents.models import SUBSCRIBER_EMAIL, Subscriber

    _, sink = smtp_server
    built = services(app)
    with session_scope(built.engine) as session:
        session.add(Subscriber(
            email_index=built.crypto.index.digest("subscriber", "reader@mail.test"),
            email_encrypted=built.crypto.cipher.encrypt("reader@mail.test",
                                                        context=SUBSCRIBER_EMAIL),
            locale="en", created_at=utcnow(), confirmed_at=utcnow()))
    open_incident(app, sync_document, document)
    contact = contacts_of(document)[0]
    contact_row = update_rows(app, account_id(app, document))[contact_id_of(app, contact["email"])]
    secret = built.settings.secrets.secret_key
    dovecot.append([
        # The contact's provider names the return path; the subscriber's does not.
        letters.abuse_report(sent_to(sink, contact["email"])[0], recipient=contact["email"],
                             mail_from=mailtokens.return_path(BOUNCES, secret, contact_row)),
        letters.abuse_report(sent_to(sink, "reader@mail.test")[0],
                             recipient="reader@mail.test", mail_from=None, signed=False)])
    poll(app)
    with session_scope(built.engine) as session:
        outcomes = [row.outcome for row in session.exec(select(InboundMessage))]
        flagged = session.get(Contact, contact_id_of(app, contact["email"])).undeliverable_at
        stopped = session.exec(select(Subscriber.unsubscribed_at)).one()
    assert outcomes == ["complaint", "complaint"]
    # Named by its Message-ID alone and signed by no one: recorded, not acted on.
    assert flagged is not None and stopped is None
    dovecot.append(letters.abuse_report(sent_to(sink, "reader@mail.test")[0],
                                        recipient="reader@mail.test", mail_from=None))
    poll(app)
    with session_scope(built.engine) as session:
        assert session.exec(select(Subscriber.unsubscribed_at)).one() is not None


def test_out_of_office_replies_are_recorded_and_never_answered(app, smtp_server, dovecot,
                                                               sync_document):
    _, sink = smtp_server
    open_incident(app, sync_document, make_document(accounts=250, contacts_per_account=2))
    built = services(app)
    with session_scope(built.engine) as session:
        queued_before = session.exec(select(func.count()).select_from(OutboxMessage)).one()
        items_before = session.exec(select(func.count()).select_from(WorkItem)).one()
    updates = [raw for raw in sink.received if b"Reply-To" in raw]
    out_of_office = [letters.exchange_out_of_office(raw, sender=f"Away <{to_address(raw)}>")
                     for raw in updates]
    assert len(out_of_office) == 500
    dovecot.append(out_of_office)
    report = poll(app)
    with session_scope(built.engine) as session:
        outcomes = list(session.exec(select(InboundMessage.outcome)))
        queued_after = session.exec(select(func.count()).select_from(OutboxMessage)).one()
        items_after = session.exec(select(func.count()).select_from(WorkItem)).one()
    assert report.processed == len(out_of_office) == len(outcomes)
    assert set(outcomes) == {"auto_reply"}
    assert (queued_after, items_after) == (queued_before, items_before)


def test_attachments_are_sealed_and_one_too_large_is_refused_with_a_note(
        app, dovecot, document, sync_document):
    sync_document(document)
    admin = contacts_of(document)[0]
    small = b"%PDF-1.4\n" + b"restore-log-line-0123456789-QWERTY\n" * 30_000  # ~1 MB
    large = b"%PDF-1.4\n" + bytes(range(256)) * (25 * 4096)  # 25 MB
    sender = f"{admin['name']} <{admin['email']}>"
    dovecot.append([
        letters.with_attachment(letters.new_message(
            sender=sender, to=SUPPORT, subject="Logs", body="The restore log is attached."),
            filename="restore-log.pdf", data=small),
        letters.with_attachment(letters.new_message(
            sender=sender, to=SUPPORT, subject="Dump", body="The database dump."),
            filename="dump.pdf", data=large),
    ])
    assert poll(app).processed == 2
    built = services(app)
    with session_scope(built.engine) as session:
        attachments = {row.filename_encrypted and row.size: row for row in
                       session.exec(select(InboundAttachment))}
        kept = [row for row in attachments.values() if not row.dropped]
        dropped = [row for row in attachments.values() if row.dropped]
        notes = session.exec(select(OutboxMessage).where(
            OutboxMessage.purpose == "attachment_refused")).all()
    assert [row.size for row in kept] == [len(small)]
    assert [(row.size, row.data_encrypted) for row in dropped] == [(len(large), None)]
    assert len(notes) == 1
    assert b"restore-log-line-0123456789-QWERTY" not in stored_bytes(built.engine)
    with app.test_request_context():
        from contacts.inbound import store

        with session_scope(built.engine) as session:
            name, _, data = store.attachment_bytes(session=session, cipher=built.crypto.cipher,
                                                   message_id=kept[0].message_id,
                                                   number=kept[0].id)
    assert (name, data) == ("restore-log.pdf", small)


def test_staff_read_an_email_on_its_page_and_each_download_is_audited(
        app, dovecot, document, sync_document, client, auth, make_staff):
    from contacts.core.audit import AuditEntry

    sync_document(document)
    admin = contacts_of(document)[0]
    attached = b"%PDF-1.4\nrestore report\n"
    dovecot.append(letters.with_attachment(letters.new_message(
        sender=f"{admin['name']} <{admin['email']}>", to=SUPPORT, subject="Our shop",
        body="The shop is empty since this morning."), filename="report.pdf", data=attached))
    poll(app)
    built = services(app)
    with session_scope(built.engine) as session:
        row = session.exec(select(InboundMessage)).one()
        attachment = session.exec(select(InboundAttachment)).one()
        message_id, number, request_id = row.id, attachment.id, row.request_id
    page = f"/console/inbound/{message_id}"
    auth.login(make_staff("comms"))
    assert client.get(page).status_code == 403
    auth.logout()
    auth.login(make_staff("support"))
    shown = client.get(page)
    assert shown.status_code == 200
    assert b"The shop is empty since this morning." in shown.data
    assert admin["email"].encode() not in shown.data  # the address is revealed elsewhere
    request_page = client.get(f"/console/requests/{request_id}")
    assert page.encode() in request_page.data and b"by email" in request_page.data
    download = client.get(f"{page}/attachments/{number}")
    assert download.status_code == 200 and download.data == attached
    assert download.headers["Content-Disposition"] == 'attachment; filename="report.pdf"'
    assert client.get(f"{page}/attachments/{number + 1}").status_code == 404
    with session_scope(built.engine) as session:
        audited = session.exec(select(AuditEntry).where(
            AuditEntry.action == "inbound.attachment_downloaded")).all()
    assert [entry.target_id for entry in audited] == [message_id]


def test_a_forged_email_keeps_no_one_from_their_receipt(app, smtp_server, dovecot):
    """A From the receiving server found forged gets no receipt, and does not count as the
    address's receipt of the hour: the real sender, writing next, gets theirs, which leads
    with the link (no page showed them a code box)."""
    _, sink = smtp_server
    forged = letters.new_message(sender="Ann <ann@one.test>", to=SUPPORT, subject="Help",
                                 body="Forged.", verdict="dmarc=fail (p=reject) "
                                                         "header.from=one.test")
    real = letters.new_message(sender="Ann <ann@one.test>", to=SUPPORT, subject="Help",
                               body="Our site is down.")
    dovecot.append([forged, real])
    assert poll(app).processed == 2
    drain(app)
    receipts = sent_to(sink, "ann@one.test")
    assert len(receipts) == 1
    text = email.message_from_bytes(receipts[0], policy=email.policy.default).get_body(
        ("plain",)).get_content()
    assert "We received it by email" in text and "page you were shown" not in text

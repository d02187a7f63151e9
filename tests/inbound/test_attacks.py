"""What a hostile sender can make Lifeline do by email, end to end on both databases: the
mail is written as other software writes it (tests/inbound/letters.py), lands in a real
Dovecot, one pass of the reader hands it to the mailroom, and what Lifeline sent is read
from a real SMTP server. Each test states the safe outcome."""

from __future__ import annotations

import email
import email.policy
import logging
import re
from email.header import Header
from email.utils import parseaddr

import pytest
from sqlmodel import func, select

from contacts.core import mailtokens
from contacts.core.db import session_scope
from contacts.core.services import services
from contacts.delivery.models import OutboxMessage
from contacts.escalations.models import WorkItem
from contacts.inbound.models import InboundMessage
from contacts.intake.models import RequestMessage, SupportRequest
from tests.inbound import letters
from tests.inbound import test_mailroom as end_to_end
from tests.inbound.test_mailroom import (
    BOUNCES,
    SUPPORT,
    account_id,
    contact_id_of,
    contacts_of,
    drain,
    poll,
    sent_to,
    update_rows,
)

app = end_to_end.app
document = end_to_end.document
incident = end_to_end.incident


def parsed(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def inbound_rows(app) -> list[InboundMessage]:
    with session_scope(services(app).engine) as session:
        rows = list(session.exec(select(InboundMessage).order_by(InboundMessage.stored_at,
                                                                 InboundMessage.id)))
        session.expunge_all()
        return rows


def emails_queued(app) -> int:
    with session_scope(services(app).engine) as session:
        return session.exec(select(func.count()).select_from(OutboxMessage)).one()


def request_by_email(app, dovecot, smtp_server, sender: str, subject: str = "Help") -> bytes:
    """A new request by email from `sender`; the receipt Lifeline sent back."""
    _, sink = smtp_server
    dovecot.append(letters.new_message(sender=sender, to=SUPPORT, subject=subject,
                                       body="Our site is gone.", verdict=None))
    poll(app)
    drain(app)
    receipt, = sent_to(sink, parseaddr(sender)[1])
    return receipt


def reply_token(receipt: bytes) -> str:
    return parseaddr(str(parsed(receipt)["Reply-To"]))[1]


def test_a_reply_token_names_only_its_own_thread_and_kind(app, smtp_server, dovecot):
    first = request_by_email(app, dovecot, smtp_server, "Ann <ann@one.test>")
    second = request_by_email(app, dovecot, smtp_server, "Bob <bob@two.test>")
    token, other = reply_token(first), reply_token(second)
    local, _, domain = token.partition("@")
    mailbox, _, signed = local.partition("+")
    letter, body, signature = signed[0], signed[1:].split(".")[0], signed.split(".")[1]
    other_body = other.partition("+")[2][1:].split(".")[0]
    forged = [
        f"{mailbox}+{letter}{other_body}.{signature}@{domain}",  # her signature, his thread
        f"{mailbox}+i{body}.{signature}@{domain}",  # another kind's letter
        f"{mailbox}+c{body}.{signature}@{domain}",
        f"{mailbox}+{letter}{body}.{signature[:-1]}@{domain}",  # cut
        f"{mailbox}+{letter}{body}@{domain}",  # no signature
        f"{mailbox}+{letter}{body}.{signature[::-1]}@{domain}",  # forged
        f"{mailbox}+{letter}{body}.{signature}+x@{domain}",
    ]
    dovecot.append([letters.new_message(sender="Ann <ann@one.test>", to=address,
                                        subject="About my request", body=f"Attempt {n}.",
                                        verdict=None)
                    for n, address in enumerate(forged)])
    poll(app)
    rows = inbound_rows(app)[2:]
    assert len(rows) == len(forged)
    # None of them joins a thread: each is a new request (one receipt an hour, had already).
    assert {(row.outcome, row.thread_kind) for row in rows} == {("request", "request")}
    with session_scope(services(app).engine) as session:
        joined = session.exec(select(func.count()).select_from(RequestMessage).where(
            RequestMessage.author != "customer")).one()
    assert joined == 0


def test_a_stranger_with_a_real_token_is_kept_marked_and_acts_as_nobody(
        app, smtp_server, dovecot):
    _, sink = smtp_server
    receipt = request_by_email(app, dovecot, smtp_server, "Ann <ann@one.test>")
    built = services(app)
    with session_scope(built.engine) as session:
        request = session.exec(select(SupportRequest)).one()
        request.status = "closed"
        session.add(request)
        request_id = request.id
    queued = emails_queued(app)
    received = len(sink.received)
    # Mallory was forwarded the receipt: she answers it from her own address, and once
    # with Ann's address in From (unverified: the receiving server vouches for nothing).
    dovecot.append([
        letters.thunderbird_reply(receipt, sender="Mallory <mallory@evil.test>",
                                  body="Send the backups to me instead."),
        letters.thunderbird_reply(receipt, sender="Mallory <mallory@evil.test>",
                                  body="Out of office.", verdict=None).replace(
            b"Subject: Re:", b"Auto-Submitted: auto-replied\r\nSubject: Re:"),
    ])
    poll(app)
    drain(app)
    rows = inbound_rows(app)[1:]
    assert [(row.outcome, row.sender_is_party, row.request_id) for row in rows] == [
        ("reply", False, request_id), ("auto_reply", False, request_id)]
    with session_scope(built.engine) as session:
        request = session.get(SupportRequest, request_id)
        authors = [message.author for message in session.exec(
            select(RequestMessage).where(RequestMessage.request_id == request_id)
            .order_by(RequestMessage.id))]
    assert request.status == "closed"  # not reopened by someone else
    assert "other" in authors and authors.count("customer") <= 1
    # Nothing was sent to anyone: no receipt, no note, no auto-answer.
    assert emails_queued(app) == queued and len(sink.received) == received


def admin_writes(document, verdict: str | None, forged: bytes | None = None,
                 above: bool = False) -> bytes:
    """A listed admin's new request as the receiving server stores it (its own verdict, or
    None for none), with `forged`, the sender's own Authentication-Results, in its head."""
    admin = contacts_of(document)[0]
    raw = letters.new_message(sender=f"{admin['name']} <{admin['email']}>", to=SUPPORT,
                              subject="Give me access", body="Reset our contacts.",
                              verdict=verdict)
    if forged is None:
        return raw
    if above:
        return forged + raw
    head, _, rest = raw.partition(b"\r\nMessage-ID:")
    return head + b"\r\n" + forged + b"Message-ID:" + rest


def forged_results(document) -> bytes:
    domain = contacts_of(document)[0]["email"].rpartition("@")[2]
    return (f"Authentication-Results: {letters.MX};\n\t{letters.passed(domain)}\n"
            ).replace("\n", "\r\n").encode()


def test_a_forged_results_header_below_the_servers_received_line_vouches_for_nobody(
        app, dovecot, document, sync_document):
    sync_document(document)
    domain = contacts_of(document)[0]["email"].rpartition("@")[2]
    forged = forged_results(document)
    dovecot.append([
        admin_writes(document, f"dmarc=fail (p=none) header.from={domain}", forged),
        admin_writes(document, "spf=softfail smtp.mailfrom=" + domain, forged),
        # The control: the same header where the receiving server puts its own.
        admin_writes(document, None, forged, above=True)])
    poll(app)
    assert [(row.outcome, row.sender_verified) for row in inbound_rows(app)] == [
        ("request", False), ("request", False), ("request", True)]


def test_a_forged_results_header_counts_for_nothing_when_the_server_stamped_none(
        app, dovecot, document, sync_document):
    sync_document(document)
    dovecot.append(admin_writes(document, None, forged_results(document)))
    poll(app)
    assert [row.sender_verified for row in inbound_rows(app)] == [False]


def forged_bounce(original: bytes, *, recipient: str, to: str, sender: str) -> bytes:
    """Postfix's bounce layout, but written and sent by a person: a From and an envelope
    sender (Return-Path) of their own, as their mail server delivers it."""
    raw = letters.postfix_bounce(original, return_path=to, recipient=recipient)
    raw = raw.replace(b"Return-Path: <>", f"Return-Path: <{sender}>".encode(), 1)
    return re.sub(rb"From: MAILER-DAEMON@[^\r]*", f"From: {sender}".encode(), raw, count=1)


def test_a_delivery_report_from_a_person_marks_nothing(app, smtp_server, dovecot, incident,
                                                       document):
    _, sink = smtp_server
    victim = contacts_of(document)[0]["email"]
    rows = update_rows(app, account_id(app, document))
    update, = sent_to(sink, victim)
    real_path = mailtokens.return_path(BOUNCES, services(app).settings.secrets.secret_key,
                                       rows[contact_id_of(app, victim)])
    # Mallory holds a copy of the update (forwarded with its headers): she reports it failed
    # to its own return path, and to the support address by its Message-ID.
    dovecot.append([forged_bounce(update, recipient=victim, to=real_path,
                                  sender="mallory@evil.test"),
                    forged_bounce(update, recipient=victim, to=SUPPORT,
                                  sender="mallory@evil.test")])
    poll(app)
    with session_scope(services(app).engine) as session:
        states = {row.state for row in session.exec(select(OutboxMessage).where(
            OutboxMessage.about_kind == "update"))}
    assert states == {"sent"}
    assert [row.outcome for row in inbound_rows(app)] == ["report", "report"]


def test_an_auto_responder_answering_our_receipt_is_never_answered(app, smtp_server, dovecot):
    _, sink = smtp_server
    receipt = request_by_email(app, dovecot, smtp_server, "Ann <ann@one.test>")
    queued = emails_queued(app)
    out_of_office = letters.exchange_out_of_office(receipt, sender="Ann <ann@one.test>")
    # A responder with no marker at all, answering our From rather than the Reply-To.
    bare = letters.new_message(sender="Ann <ann@one.test>", to=SUPPORT,
                               subject="Thank you for your message", body="We got it.",
                               verdict=None)
    dovecot.append([out_of_office, bare, bare.replace(b"Message-ID: <", b"Message-ID: <x")])
    poll(app)
    drain(app)
    outcomes = [row.outcome for row in inbound_rows(app)[1:]]
    assert outcomes == ["auto_reply", "request", "request"]
    # The requests are recorded; at most one receipt an hour, which Ann already had.
    assert len(sent_to(sink, "ann@one.test")) == 1
    assert emails_queued(app) == queued


def test_mail_from_our_own_addresses_is_never_answered(app, smtp_server, dovecot):
    _, sink = smtp_server
    secret = services(app).settings.secrets.secret_key
    ours = ["Lifeline support <support@lifeline.test>", "SUPPORT@Lifeline.Test",
            mailtokens.return_path(BOUNCES, secret, 1), "bounces@lifeline.test",
            mailtokens.reply_address(SUPPORT, secret, "request",
                                     "req_00000000000000000000000000")]
    dovecot.append([letters.with_attachment(
        letters.new_message(sender=sender, to=SUPPORT, subject="Loop", body="Round again.",
                            verdict=None),
        filename="big.bin", data=b"x" * (11 * 1024 * 1024)) for sender in ours])
    poll(app)
    drain(app)
    assert [row.outcome for row in inbound_rows(app)] == ["ignored"] * len(ours)
    assert emails_queued(app) == 0 and sink.received == []


def test_subject_and_message_id_cannot_add_headers_to_what_we_send(app, smtp_server, dovecot):
    _, sink = smtp_server
    injected = "Help\r\nBcc: victim@else.test\r\nX-Injected: yes"
    subject = Header(injected, "utf-8").encode()
    raw = letters.new_message(sender="Ann <ann@one.test>", to=SUPPORT, subject="SUBJECT",
                              body="Attached.", verdict=None)
    raw = raw.replace(b"Subject: SUBJECT", f"Subject: {subject}".encode())
    raw = re.sub(rb"Message-ID: <[^>]*>",
                 b"Message-ID: <a@b>\r\n Bcc: victim@else.test\r\nX-Injected: yes", raw)
    many = " ".join(f"<ref{n}@else.test>" for n in range(10_000))
    raw = raw.replace(b"\r\nTo:", f"\r\nReferences: {many}\r\nTo:".encode(), 1)
    dovecot.append(letters.with_attachment(raw, filename="big.bin",
                                           data=b"x" * (11 * 1024 * 1024)))
    poll(app)
    drain(app)
    assert [row.outcome for row in inbound_rows(app)] == ["request"]
    assert {parseaddr(str(parsed(message)["To"]))[1] for message in sink.received} \
        == {"ann@one.test"}
    assert sink.received  # the receipt and the note about the attachment
    for message in sink.received:
        headers = parsed(message)
        assert headers["Bcc"] is None and headers["X-Injected"] is None
        assert "\n" not in str(headers["Subject"])
        assert len(str(headers["References"] or "").split()) <= 11


def test_a_39_mb_message_is_read_its_attachment_refused_with_a_note(app, smtp_server, dovecot):
    _, sink = smtp_server
    dovecot.append(letters.with_attachment(
        letters.new_message(sender="Ann <ann@one.test>", to=SUPPORT, subject="Huge",
                            body="Here is everything.", verdict=None),
        filename="everything.zip", data=b"\x00" * (27 * 1024 * 1024 + 512 * 1024)))
    poll(app)
    drain(app)
    row, = inbound_rows(app)
    assert 39_000_000 < row.size < 40 * 1024 * 1024
    assert (row.state, row.outcome) == ("processed", "request")
    purposes = {parsed(message)["Subject"].split(" (")[0] for message in sink.received}
    assert len(sink.received) == 2, purposes  # the receipt and the note


def test_a_repeated_message_id_from_someone_else_is_still_read(app, smtp_server, dovecot):
    first = letters.new_message(sender="Mallory <mallory@evil.test>", to=SUPPORT,
                                subject="First", body="Mallory was here first.", verdict=None)
    message_id = re.search(rb"Message-ID: (<[^>]*>)", first).group(1)
    real = letters.new_message(sender="Ann <ann@one.test>", to=SUPPORT, subject="Help",
                               body="Our site is gone.", verdict=None)
    real = re.sub(rb"Message-ID: <[^>]*>", b"Message-ID: " + message_id, real)
    dovecot.append([first, real])
    report = poll(app)
    assert (report.processed, report.duplicates) == (2, 0)
    assert [row.outcome for row in inbound_rows(app)] == ["request", "request"]
    # The same message delivered twice (to two of our addresses) is still read once.
    dovecot.append(real.replace(b"To: support@", b"To: help@"))
    report = poll(app)
    assert (report.processed, report.duplicates) == (0, 1)


def test_html_reaches_the_console_without_scripts_or_anything_remote(
        app, dovecot, client, auth, make_staff):
    hostile = ('<html><head><base href="http://evil.test/"><meta http-equiv="refresh" '
               'content="0;url=http://evil.test/"><link rel="stylesheet" '
               'href="http://evil.test/a.css"><style>body{background:url(http://evil.test/s)}'
               '</style></head><body><script>fetch("http://evil.test/x")</script>'
               '<p onclick="alert(1)" style="background:url(http://evil.test/p)">Hello</p>'
               '<img src="http://evil.test/pixel.gif" srcset="http://evil.test/2x.gif 2x">'
               '<svg><image href="http://evil.test/svg"/></svg>'
               '<iframe src="http://evil.test/frame"></iframe>'
               '<a href="javascript:alert(1)">click</a><a href="https://ok.test/">ok</a>'
               '<form action="http://evil.test/f"><input name=a></form>'
               '<video poster="http://evil.test/v"></video></body></html>')
    raw = letters.new_message(sender="Ann <ann@one.test>", to=SUPPORT, subject="HTML",
                              body="BODY", verdict=None)
    raw = raw.replace(b"Content-Type: text/plain; charset=UTF-8; format=flowed",
                      b"Content-Type: text/html; charset=UTF-8")
    dovecot.append(raw.replace(b"BODY", hostile.encode()))
    poll(app)
    row, = inbound_rows(app)
    auth.login(make_staff("support"))
    page = client.get(f"/console/inbound/{row.id}")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp
    body = page.data.decode()
    shown = body[body.index("<details><summary>As formatted"):]
    assert "Hello" in shown and 'href="https://ok.test/"' in shown
    assert "evil.test" not in shown
    for needle in ("<script", "onclick", "style=", "<img", "<svg", "<iframe", "<form",
                   "<base", "<meta", "<link", "<video", "javascript:"):
        assert needle not in shown.lower(), needle


def test_an_attachment_is_downloaded_only_through_its_own_message(
        app, dovecot, client, auth, make_staff):
    for sender in ("Ann <ann@one.test>", "Bob <bob@two.test>"):
        dovecot.append(letters.with_attachment(
            letters.new_message(sender=sender, to=SUPPORT, subject="File", body="Attached.",
                                verdict=None), filename="a.pdf", data=sender.encode()))
    poll(app)
    first, second = inbound_rows(app)
    with session_scope(services(app).engine) as session:
        from contacts.inbound.models import InboundAttachment

        numbers = {item.message_id: item.id for item in session.exec(select(InboundAttachment))}
    auth.login(make_staff("support"))
    mine = client.get(f"/console/inbound/{first.id}/attachments/{numbers[first.id]}")
    assert mine.status_code == 200
    theirs = client.get(f"/console/inbound/{first.id}/attachments/{numbers[second.id]}")
    assert theirs.status_code == 404


def test_receipts_go_once_an_hour_to_a_sender_and_never_to_a_spoofed_one(
        app, smtp_server, dovecot):
    _, sink = smtp_server
    flood = [letters.new_message(sender="Ann <ann@one.test>", to=SUPPORT,
                                 subject=f"Help {n}", body="Again.", verdict=None)
             for n in range(5)]
    # Many forged senders at a domain whose DMARC the receiving server saw fail.
    spoofed = [letters.new_message(sender=f"Victim {n} <victim{n}@bank.test>", to=SUPPORT,
                                   subject="Buy now", body="Spam.",
                                   verdict="spf=fail smtp.mailfrom=bank.test;\n\t"
                                           "dmarc=fail (p=reject) header.from=bank.test")
               for n in range(5)]
    dovecot.append(flood + spoofed)
    poll(app)
    drain(app)
    assert [(row.outcome, row.error) for row in inbound_rows(app)] == [("request", None)] * 10
    assert len(sent_to(sink, "ann@one.test")) == 1
    assert [message for message in sink.received
            if "bank.test" in str(parsed(message)["To"])] == []
    with session_scope(services(app).engine) as session:
        assert session.exec(select(func.count()).select_from(SupportRequest)).one() == 10


def test_a_reply_in_the_name_of_the_party_that_fails_dmarc_acts_as_nobody(
        app, smtp_server, dovecot, incident, document):
    _, sink = smtp_server
    admin = contacts_of(document)[0]
    domain = admin["email"].rpartition("@")[2]
    update, = sent_to(sink, admin["email"])
    dovecot.append(letters.thunderbird_reply(
        update, sender=f"{admin['name']} <{admin['email']}>", body="Delete the other admin.",
        verdict=f"dkim=none;\n\tdmarc=fail (p=reject) header.from={domain}"))
    poll(app)
    row, = inbound_rows(app)
    assert (row.outcome, row.sender_is_party) == ("reply", False)
    with session_scope(services(app).engine) as session:
        item = session.get(WorkItem, row.item_id)
    assert item.requester_contact_id is None


def test_a_reader_that_fails_logs_its_name_never_the_mail(monkeypatch, caplog):
    from contacts.inbound import parsing, reports

    def quoting(message, sender_address):
        raise ValueError(f"cannot read the report of {sender_address}")

    monkeypatch.setattr(reports, "read_report", quoting)
    caplog.set_level(logging.DEBUG)
    raw = letters.new_message(sender="Ann <ann@one.test>", to=SUPPORT, subject="Help",
                              body="Our site is gone.", verdict=None)
    parsing.parse(raw, trusted_authserv_ids=(letters.MX,), attachment_max_bytes=1000)
    monkeypatch.setattr(parsing, "_parse", lambda *args: quoting(None, "ann@one.test"))
    parsing.parse(raw, trusted_authserv_ids=(letters.MX,), attachment_max_bytes=1000)
    assert "quoting failed (ValueError)" in caplog.text
    assert "ann@one.test" not in caplog.text


def test_a_message_id_computed_from_a_reference_does_not_make_a_party(
        app, smtp_server, dovecot):
    from contacts.delivery import outbox
    from contacts.intake.threads import receipt_key

    request_by_email(app, dovecot, smtp_server, "Ann <ann@one.test>")
    with session_scope(services(app).engine) as session:
        request = session.exec(select(SupportRequest)).one()
        request.status = "closed"
        session.add(request)
        request_id, reference = request.id, request.reference
    # Mallory knows Ann's address and her reference (it is in every subject line).
    computed = outbox.message_id_for(receipt_key(reference), "lifeline.test")
    forged = letters.new_message(sender="Ann <ann@one.test>", to=SUPPORT, subject="Re: help",
                                 body="Close our account.", verdict=None)
    dovecot.append(forged.replace(b"\r\nTo:", f"\r\nIn-Reply-To: {computed}\r\nTo:".encode()))
    poll(app)
    row = inbound_rows(app)[-1]
    with session_scope(services(app).engine) as session:
        status = session.get(SupportRequest, request_id).status
    assert (row.request_id, row.sender_is_party, status) != (request_id, True, "open")


@pytest.fixture
def noreply_app(make_app, smtp_server, dovecot, monkeypatch):
    """The app of the end-to-end tests, its emails From an address of their own."""
    port, _ = smtp_server
    monkeypatch.setenv("LIFELINE_INBOUND_SUPPORT_PASSWORD", dovecot.password)
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.cert_file))
    return make_app(mail_port=port, mail_sender="Lifeline <noreply@lifeline.test>",
                    mail_domain="lifeline.test", mail_reply_to=SUPPORT,
                    mail_return_path=BOUNCES, inbound_trusted_authserv_ids=[letters.MX],
                    inbound_mailboxes=[{"name": "support", "host": "127.0.0.1",
                                        "port": dovecot.imaps_port, "security": "tls",
                                        "username": dovecot.user}])


def test_mail_from_our_own_sender_address_is_never_answered(noreply_app, smtp_server, dovecot):
    _, sink = smtp_server
    dovecot.append(letters.new_message(sender="Lifeline <noreply@lifeline.test>", to=SUPPORT,
                                       subject="We have your request", body="Loop.",
                                       verdict=None))
    poll(noreply_app)
    drain(noreply_app)
    assert [row.outcome for row in inbound_rows(noreply_app)] == ["ignored"]
    assert sink.received == []


def test_notes_about_dropped_attachments_go_once_an_hour_to_a_sender(app, smtp_server, dovecot):
    _, sink = smtp_server
    dovecot.append([letters.with_attachment(
        letters.new_message(sender="Ann <ann@one.test>", to=SUPPORT, subject=f"File {n}",
                            body="Attached.", verdict=None),
        filename="big.bin", data=b"x" * (11 * 1024 * 1024)) for n in range(3)])
    poll(app)
    drain(app)
    assert [row.outcome for row in inbound_rows(app)] == ["request"] * 3
    subjects = [str(parsed(message)["Subject"]) for message in sent_to(sink, "ann@one.test")]
    assert len([subject for subject in subjects if "too large" in subject]) == 1
    assert len(subjects) == 2  # and the one receipt

"""Delivery status notifications and abuse reports, read from real ones: per recipient what
happened, and which message of ours it is about."""

from __future__ import annotations

from contacts.inbound.message import Report
from tests.inbound.samples import eml, parsed


def test_a_postfix_bounce_names_the_failed_recipient_and_the_returned_message():
    message = parsed(eml("dsn_postfix_failed"))
    assert message.report_type == "delivery-status"
    assert message.reports == (Report(
        action="failed", recipient="anne.person@dom.ain", status="5.0.0",
        diagnostic="X-Postfix; host mx.dom.ain[192.168.1.100] said: 550 {mx001-rz3} "
                   "<anne.person@dom.ain>... User unknown or not available - Empfaenger "
                   "unbekannt oder nicht erreichbar (in reply to RCPT TO command)"),)
    assert message.reported_message_id == "<200210211625.12753.b.a.dude@example.com>"
    assert message.attachments == ()  # the returned message is the report's, not a file
    assert "The Postfix program" in message.text
    assert message.automatic is None


def test_a_delayed_postfix_notice_is_a_delay_about_the_message_in_its_headers():
    message = parsed(eml("dsn_postfix_delayed"))
    entry, = message.reports
    assert (entry.action, entry.recipient, entry.status) == (
        "delayed", "news-list.zope@localhost.bln.innominate.de", "4.0.0")
    assert entry.diagnostic.startswith("X-Postfix; temporary failure.")
    assert message.reported_message_id == "<NEBBLDPBKLOKNHPAEECGAENDCIAA.zope@toenjes.com>"
    # Mailman relayed it with Precedence: bulk; a report is still not an auto-reply.
    assert message.automatic is None


def test_a_gmail_failure_notice_is_read_from_its_delivery_status_part():
    message = parsed(eml("dsn_gmail_failed"))
    assert message.reports == (Report(action="failed", recipient="kijitora@example.de",
                                      status="5.0.0",
                                      diagnostic="smtp; 550 #5.1.0 Address rejected."),)
    assert message.reported_message_id == "<00222222-2222-2222-2222-FF00FFFF0000@example.jp>"
    assert message.automatic is None  # Auto-Submitted: auto-replied, but a report
    assert "Address not found" in message.text


def test_an_exchange_ndr_gives_its_status_without_a_message_id_it_does_not_have():
    message = parsed(eml("dsn_exchange_failed"))
    assert message.reports == (Report(
        action="failed", recipient="mikeneko@example.co.jp", status="5.1.1",
        diagnostic="smtp;550 5.1.1 RESOLVER.ADR.RecipNotFound; not found"),)
    assert message.reported_message_id is None


def test_a_plain_bounce_from_a_mailer_daemon_lists_its_failed_recipients():
    message = parsed(eml("bounce_gmail_plain"))
    assert message.report_type == "delivery-status"
    assert message.reports == (Report(action="failed", recipient="mailboxfull@bouncehammer.jp"),)
    assert message.reported_message_id == (
        "<CAByYQsGrtAMtMPpgjc+VGGj=QWruPrLuUsee_4=ahWTY2KCBcg@mail.google.example.com>")


def test_x_failed_recipients_from_a_person_is_no_report():
    raw = eml("bounce_gmail_plain").replace(
        b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
        b"From: Mallory <mallory@evil.example>")
    message = parsed(raw)
    assert (message.report_type, message.reports) == (None, ())


def test_an_abuse_report_is_a_complaint_about_our_message_to_its_recipient():
    message = parsed(eml("arf_yahoo_abuse"))
    assert message.report_type == "feedback-report"
    assert message.reports == (Report(action="complaint", recipient="user@yahoo.com",
                                      feedback_type="abuse"),)
    # The attached message starts with an mbox "From " line; its Message-ID is still found.
    assert message.reported_message_id == "<20120711015015.4A8BE2E088E@www.example.com>"


def test_an_abuse_report_without_original_rcpt_to_names_the_reported_messages_to():
    raw = eml("arf_yahoo_abuse").replace(b"Original-Rcpt-To: user@yahoo.com\r\n", b"")
    assert b"Original-Rcpt-To" not in raw
    assert parsed(raw).reports[0].recipient == "user@yahoo.com"


def test_a_persons_message_is_no_report():
    message = parsed(eml("reply_outlook"))
    assert (message.report_type, message.reports, message.reported_message_id) == (None, (), None)


def test_a_report_with_too_many_recipients_keeps_the_first_hundred():
    blocks = "".join(f"Final-Recipient: rfc822; user{n}@example.org\nAction: failed\n"
                     f"Status: 5.1.1\n\n" for n in range(300))
    raw = ("From: MAILER-DAEMON@example.com\nContent-Type: multipart/report; "
           "report-type=delivery-status; boundary=R\n\n--R\nContent-Type: text/plain\n\nbounce\n"
           "--R\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n\n"
           f"{blocks}--R--\n").encode()
    reports = parsed(raw).reports
    assert len(reports) == 100
    assert reports[0] == Report(action="failed", recipient="user0@example.org", status="5.1.1")

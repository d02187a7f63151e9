"""Auto-replies are recognised by their headers, or failing those by their subject in English
or French; a person's reply, and a report, are not auto-replies."""

from __future__ import annotations

import pytest

from tests.inbound.samples import eml, parsed, with_headers, without_headers

REPLY = eml("reply_thunderbird_en")  # a person's reply, Subject: Re: Test


def test_real_out_of_office_replies_are_automatic():
    assert parsed(eml("autoreply_exchange_oof")).automatic == "x-auto-response-suppress"
    assert parsed(eml("autoreply_apple_vacation")).automatic == "x-apple-action: vacation"
    assert parsed(eml("autoreply_fr_absence")).automatic == "x-auto-response-suppress"
    assert parsed(eml("autoreply_gmail_vacation")).automatic == "auto-submitted: auto-replied"


def test_a_message_an_exchange_rule_forwarded_is_still_a_persons():
    # Exchange stamps X-MS-Exchange-Inbox-Rules-Loop on what an inbox rule forwards too
    # (Zammad's out-of-office tests keep such a follow-up as a person's).
    raw = with_headers(REPLY, "X-MS-Exchange-Inbox-Rules-Loop: bob@xxx.mailgun.org")
    assert parsed(raw).automatic is None


def test_an_exchange_reply_in_french_stripped_of_its_markers_is_known_by_its_subject():
    raw = without_headers(eml("autoreply_fr_absence"), "X-Auto-Response-Suppress")
    assert parsed(raw).automatic == "subject"


def test_a_persons_reply_is_not_automatic():
    assert parsed(REPLY).automatic is None
    assert parsed(eml("reply_outlook")).automatic is None


@pytest.mark.parametrize(("header", "reason"), [
    ("Auto-Submitted: auto-replied", "auto-submitted: auto-replied"),
    ("Auto-Submitted: auto-generated; owner-email=x@example.org", "auto-submitted: auto-generated"),
    ("Auto-Submitted: auto-notified", "auto-submitted: auto-notified"),
    ("Auto-Submitted: auto-replied (zimbra; vacation)", "auto-submitted: auto-replied"),
    ("X-Autoreply: yes", "x-autoreply"),
    ("X-Autorespond: Out of office", "x-autorespond"),
    ("Precedence: bulk", "precedence: bulk"),
    ("Precedence: junk", "precedence: junk"),
    ("Precedence: list", "precedence: list"),
    ("X-Auto-Response-Suppress: OOF, AutoReply", "x-auto-response-suppress"),
])
def test_each_automatic_header_is_a_reason(header, reason):
    assert parsed(with_headers(REPLY, header)).automatic == reason


@pytest.mark.parametrize("header", ["Auto-Submitted: no", "Auto-Submitted: No (a person)",
                                    "Precedence: first-class", "X-Autoreply: no"])
def test_headers_saying_a_person_sent_it_are_not_reasons(header):
    assert parsed(with_headers(REPLY, header)).automatic is None


@pytest.mark.parametrize("subject", [
    "Out of Office: Re: your update", "Out of the office", "Automatic reply: LL-ABCD-1234",
    "Auto: Incident update", "AutoReply: hello", "RE: Out of Office", "Absent",
    "Absence du bureau", "Réponse automatique : Mise à jour",
    "=?utf-8?q?R=C3=A9ponse_automatique?=", "Message d'absence", "Away until May 5",
])
def test_out_of_office_subjects_in_english_and_french(subject):
    raw = REPLY.replace(b"Subject: Re: Test", f"Subject: {subject}".encode())
    assert parsed(raw).automatic == "subject"


@pytest.mark.parametrize("subject", ["Re: Test", "Re: Automatic failover broke", "Autonomy",
                                     "Absentee ballot", "Re: the outage while I was away"])
def test_ordinary_subjects_are_not_out_of_office(subject):
    raw = REPLY.replace(b"Subject: Re: Test", f"Subject: {subject}".encode())
    assert parsed(raw).automatic is None


def test_a_delivery_report_or_an_abuse_report_is_a_report_not_an_auto_reply():
    for name in ("dsn_gmail_failed", "dsn_postfix_delayed", "arf_yahoo_abuse"):
        message = parsed(eml(name))
        assert message.report_type is not None and message.automatic is None, name

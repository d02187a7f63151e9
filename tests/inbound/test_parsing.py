"""parsing.parse over real messages: what the router reads of each, and that no input, however
broken or hostile, makes it raise or work without bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contacts.inbound import mime
from contacts.inbound.message import Inbound
from tests.inbound.samples import FIXTURES, eml, parsed, with_headers, without_headers


def test_a_thunderbird_reply_reads_as_its_headers_say():
    message = parsed(eml("reply_thunderbird_en"))
    assert message.message_id == "<4F79B73C.9030506@xxx.mailgun.org>"
    assert (message.sender.address, message.sender.name) == ("bob@xxx.mailgun.org", "bob")
    assert message.sender.verified is False
    assert message.recipients == ("xxx@gmail.com",)
    assert message.subject == "Re: Test"
    assert message.date == datetime(2012, 4, 2, 14, 27, 8, tzinfo=UTC)
    assert message.date.utcoffset() == timedelta(hours=4)
    assert message.text == "On 04/02/2012 06:26 PM, Megan One wrote:\n> Hi \nHello"
    assert message.shown == "Hello"
    assert (message.html, message.attachments, message.automatic) == (None, (), None)
    assert (message.report_type, message.reports, message.reported_message_id) == (None, (), None)


def test_a_french_reply_keeps_its_whole_text_and_shows_only_what_was_written():
    message = parsed(eml("reply_thunderbird_fr"))
    assert "La panne est résolue de notre côté" in message.text
    assert "Service informatique" in message.text
    assert message.shown == ("Bonjour,\n\nLe service est revenu chez nous depuis ce matin, "
                             "merci pour le suivi.\nPouvez-vous fermer le ticket ?")


def test_an_outlook_reply_prefers_the_plain_text_and_keeps_the_html_sanitized():
    message = parsed(eml("reply_outlook"))
    assert message.text.startswith("Hello\n\nFrom: xxx@xxx.mailgun.org")
    assert message.shown == "Hello"
    assert "Allo! Follow up MIME!" in message.html
    assert "<style" not in message.html and "mso-" not in message.html
    assert message.message_id is None and message.date is None


def test_every_address_it_reached_us_at_is_a_recipient_once_with_its_domain_folded():
    raw = with_headers(eml("reply_thunderbird_en"),
                       "Delivered-To: support+t0k3n@Lifeline.TEST",
                       "X-Original-To: bounces+AbC@lifeline.test",
                       "Cc: Someone <xxx@GMAIL.com>, other@Example.ORG")
    assert parsed(raw).recipients == ("xxx@gmail.com", "other@example.org",
                                      "support+t0k3n@lifeline.test", "bounces+AbC@lifeline.test")


def test_an_international_domain_is_given_in_its_idna_form():
    raw = b"From: =?utf-8?q?J=C3=B6ran?= <joran@b\xc3\xbccher.example>\nTo: x@y.example\n\nhi"
    sender = parsed(raw).sender
    assert (sender.address, sender.name) == ("joran@xn--bcher-kva.example", "Jöran")


def test_subjects_are_decoded_and_cannot_carry_a_second_header_line():
    assert parsed(eml("autoreply_fr_absence")).subject == "Réponse automatique : Nyaan"
    raw = b"Subject: =?utf-8?q?hello=0D=0ABcc:_victim@example.org?=\nFrom: a@b.example\n\nx"
    subject = parsed(raw).subject
    assert "\n" not in subject and "\r" not in subject
    assert subject == "hello Bcc: victim@example.org"


def test_threading_headers_give_message_ids_and_keep_the_newest_hundred():
    references = " ".join(f"<id{number}@example.org>" for number in range(150))
    raw = with_headers(eml("reply_thunderbird_en"), f"References: {references}",
                       "In-Reply-To: <parent@example.org> (the parent)")
    message = parsed(raw)
    assert message.in_reply_to == ("<parent@example.org>",)
    assert len(message.references) == 100
    assert message.references[0] == "<id50@example.org>"
    assert message.references[-1] == "<id149@example.org>"


def test_dates_are_aware_and_an_unreadable_one_is_none():
    raw = eml("reply_thunderbird_en")
    unknown_zone = without_headers(raw, "Date") + b""
    unknown_zone = with_headers(unknown_zone, "Date: Mon, 02 Apr 2012 18:27:08 -0000")
    assert parsed(unknown_zone).date == datetime(2012, 4, 2, 18, 27, 8, tzinfo=UTC)
    assert parsed(with_headers(without_headers(raw, "Date"), "Date: yesterday")).date is None
    offset = parsed(eml("dsn_exchange_failed")).date
    assert offset is not None and offset.tzinfo == timezone(timedelta(hours=9))


def test_an_attachment_over_the_limit_is_dropped_with_its_size_kept():
    kept = parsed(eml("attachments_pdf"), attachment_max_bytes=10_000).attachments
    dropped = parsed(eml("attachments_pdf"), attachment_max_bytes=6_939).attachments
    assert [(a.filename, a.content_type, a.size) for a in kept] == [
        ("test.pdf", "application/pdf", 6940)]
    assert kept[0].data is not None and kept[0].data.startswith(b"%PDF-1.3")
    assert (dropped[0].size, dropped[0].data) == (6940, None)
    assert parsed(eml("attachments_pdf")).text.strip() == "Test - body content"


def test_an_attachment_name_cannot_climb_out_of_a_folder():
    raw = (b"From: a@b.example\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=X\n\n"
           b"--X\nContent-Type: text/plain\n\nsee attached\n--X\n"
           b"Content-Type: application/octet-stream\n"
           b"Content-Disposition: attachment; filename=\"../../etc/passwd\"\n\nroot\n--X--\n")
    attachment, = parsed(raw).attachments
    assert "/" not in attachment.filename and not attachment.filename.startswith(".")
    assert attachment.data == b"root"


def test_an_html_only_message_is_read_as_text_and_shown_without_anything_remote():
    message = parsed(eml("html_only_remote"))
    assert "Have a nice Christmas time." in message.text
    assert "alert" not in message.text and "background" not in message.text
    html = message.html
    for forbidden in ("<script", "<img", "<style", "tracker.example.net", "cdn.example.net",
                      "javascript:", "onload", "onmouseover", "background", "url(", "<svg"):
        assert forbidden not in html.lower(), forbidden
    assert '<a href="http://roundcube.net" rel="noopener noreferrer">' in html


def test_a_message_with_nothing_in_it_still_parses():
    message = parsed(b"")
    assert (message.message_id, message.sender.address, message.subject) == (None, None, "")
    assert (message.text, message.shown, message.recipients) == ("", "", ())


def test_unknown_and_non_text_charsets_are_read_as_utf8():
    for charset in (b"x-unknown", b"hex", b"rot13", b"base64", b"utf-7'; DROP"):
        raw = (b"From: a@b.example\nContent-Type: text/plain; charset=\"" + charset
               + b"\"\n\ncaf\xc3\xa9 \xff")
        assert parsed(raw).text == "café \ufffd"


def test_broken_base64_and_a_missing_final_boundary_give_what_can_be_read():
    raw = (b"From: a@b.example\nContent-Type: multipart/mixed; boundary=B\n\n--B\n"
           b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\naGVsbG8gd29y!!bGQ=\n"
           b"--B\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\n%%%%\n")
    message = parsed(raw)
    assert message.text.startswith("hello wor")
    assert [attachment.content_type for attachment in message.attachments] == ["image/png"]


def _nested_messages(depth: int) -> bytes:
    raw = b"From: inner@example.org\nSubject: bottom\n\nthe end\n"
    for level in range(depth):
        raw = (f"From: level{level}@example.org\nSubject: level {level}\n"
               "Content-Type: message/rfc822\n\n").encode() + raw
    return raw


def test_a_nesting_bomb_of_attached_messages_is_read_for_its_headers_only():
    message = parsed(_nested_messages(5_000))
    assert message.sender.address == "level4999@example.org"
    assert message.extra["unparsed"] == "structure"
    assert message.attachments == ()


def test_a_few_levels_of_attached_messages_make_one_attachment():
    message = parsed(_nested_messages(20))
    attachment, = message.attachments
    assert (attachment.content_type, attachment.filename) == ("message/rfc822",
                                                              "attachment-1.eml")
    assert b"level 18" in attachment.data


def test_deep_multiparts_and_many_parts_stop_at_the_caps():
    deep = b"From: a@b.example\n"
    for level in range(40):
        deep += f"Content-Type: multipart/mixed; boundary=L{level}\n\n--L{level}\n".encode()
    deep += b"Content-Type: text/plain\n\ndeep down\n"
    assert parsed(deep).text == ""  # below MAX_DEPTH: not read, and nothing raised
    many = b"From: a@b.example\nContent-Type: multipart/mixed; boundary=P\n\n" + b"".join(
        b"--P\nContent-Type: application/octet-stream\n\n%d\n" % number for number in range(600))
    message = parsed(many)
    assert len(message.attachments) < mime.MAX_PARTS
    assert message.extra["truncated"] == "parts"
    flood = b"From: a@b.example\nContent-Type: multipart/mixed; boundary=P\n\n" + b"--P\n\n" * 9000
    assert parsed(flood).extra["unparsed"] == "structure"


def test_huge_and_repeated_headers_are_cut_not_choked_on():
    raw = (b"From: " + b"(" * 50_000 + b"a@b.example\n" + b"To: x@y.example\n" * 5_000
           + b"Subject: " + b"=?utf-8?q?a?= " * 20_000 + b"\n\nbody")
    message = parsed(raw)
    assert message.recipients == ("x@y.example",)
    assert len(message.subject) <= 998


def _check(message: Inbound) -> None:
    assert isinstance(message, Inbound)
    assert message.date is None or message.date.tzinfo is not None
    if message.text.strip():
        assert message.shown.strip()
    for text in (message.subject, message.sender.name or "", *message.recipients):
        assert "\n" not in text and "\r" not in text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4_000))
def test_arbitrary_bytes_never_make_parse_raise(raw):
    _check(parsed(raw))


_SOURCES = sorted(FIXTURES.glob("*.eml"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_SOURCES),
       st.lists(st.tuples(st.floats(0, 1), st.sampled_from(["replace", "insert", "delete"]),
                          st.binary(min_size=1, max_size=12)), min_size=1, max_size=8),
       st.floats(0.05, 1))
def test_mutated_real_messages_never_make_parse_raise(source, mutations, keep):
    raw = bytearray(source.read_bytes())
    for where, how, data in mutations:
        at = int(where * len(raw))
        if how == "replace":
            raw[at:at + len(data)] = data
        elif how == "insert":
            raw[at:at] = data + b"\n--" + data
        else:
            del raw[at:at + len(data) * 10]
    _check(parsed(bytes(raw[: max(1, int(len(raw) * keep))])))


def _broken(*args, **kwargs):
    raise ValueError("a bug")


def test_a_bug_in_one_reader_costs_only_its_value(monkeypatch):
    monkeypatch.setattr("contacts.inbound.reports.read_report", _broken)
    monkeypatch.setattr("contacts.inbound.quoting.shown", _broken)
    message = parsed(eml("dsn_postfix_failed"))
    assert (message.report_type, message.reports) == (None, ())
    assert message.shown == message.text and message.message_id is not None


def test_a_bug_anywhere_else_still_gives_the_router_a_message(monkeypatch):
    monkeypatch.setattr("contacts.inbound.mime.first_message_id", _broken)
    message = parsed(eml("reply_thunderbird_en"))
    assert message.extra == {"unparsed": "error"}
    assert message.sender.verified is False and "Hello" in message.text


def test_thunderbirds_flowed_lines_are_read_as_the_paragraphs_they_are():
    head = eml("reply_thunderbird_en").partition(b"\n\n")[0]
    body = (b"The service came back at 9:00 and the dashboards \nlook normal again.\n\n"
            b"On 04/02/2012 06:26 PM, Megan One wrote:\n> We restarted the \n> gateway.\n"
            b"\n-- \nBob")
    message = parsed(head + b"\n\n" + body)
    assert message.text.splitlines()[0] == (
        "The service came back at 9:00 and the dashboards look normal again.")
    assert "> We restarted the gateway." in message.text
    assert message.shown == "The service came back at 9:00 and the dashboards look normal again."

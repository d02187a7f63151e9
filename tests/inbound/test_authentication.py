"""Who vouches for the From address: only the receiving server's own Authentication-Results,
from a trusted authserv-id, for the one From domain; every forgery a sender can put in its
own headers reads as unverified."""

from __future__ import annotations

from contacts.inbound.parsing import parse
from tests.inbound.samples import eml, parsed, with_headers

# bob@xxx.mailgun.org, a Thunderbird reply; its organizational domain is mailgun.org.
REPLY = eml("reply_thunderbird_en")
OUR_HOP = ("Received: from mail.mailgun.org (mail.mailgun.org [192.0.2.10]) by "
           "mx.lifeline.test (Postfix) with ESMTPS id 4Q1; Mon, 02 Apr 2012 14:27:09 +0000")
THEIR_HOP = ("Received: from laptop (unknown [198.51.100.7]) by relay.mailgun.org (Postfix) "
             "with ESMTPSA id 77A; Mon, 02 Apr 2012 14:27:08 +0000")


def sender_of(*headers: str, raw: bytes = REPLY, trusted=("mx.lifeline.test",)):
    return parsed(with_headers(raw, *headers), trusted=trusted).sender


def verdict(*headers: str, **kwargs) -> tuple[bool, str | None]:
    sender = sender_of(*headers, **kwargs)
    return sender.verified, sender.how


def test_a_dmarc_pass_for_the_from_domain_from_our_server_verifies():
    assert verdict("Authentication-Results: mx.lifeline.test; spf=pass "
                   "smtp.mailfrom=mailgun.org; dmarc=pass (p=reject) header.from=xxx.mailgun.org",
                   OUR_HOP, THEIR_HOP) == (True, "dmarc")


def test_results_split_over_several_headers_of_our_server_count():
    assert verdict("Authentication-Results: mx.lifeline.test; spf=pass smtp.mailfrom=mailgun.org",
                   "Authentication-Results: mx.lifeline.test; dmarc=pass "
                   "header.from=xxx.mailgun.org", OUR_HOP, THEIR_HOP) == (True, "dmarc")


def test_an_aligned_dkim_pass_verifies_and_an_unaligned_one_does_not():
    aligned = ("Authentication-Results: mx.lifeline.test; dkim=pass header.d=mailgun.org "
               "header.s=k1; dmarc=none header.from=xxx.mailgun.org")
    assert verdict(aligned, OUR_HOP) == (True, "dkim")
    by_identity = "Authentication-Results: mx.lifeline.test; dkim=pass header.i=@mailgun.org"
    assert verdict(by_identity, OUR_HOP) == (True, "dkim")
    unaligned = "Authentication-Results: mx.lifeline.test; dkim=pass header.d=evil.example"
    assert verdict(unaligned, OUR_HOP) == (False, None)
    failed = "Authentication-Results: mx.lifeline.test; dkim=fail header.d=mailgun.org"
    assert verdict(failed, OUR_HOP) == (False, None)


def test_alignment_follows_the_public_suffix_list():
    raw = REPLY.replace(b"bob@xxx.mailgun.org>", b"bob@bank.co.uk>")
    suffix = "Authentication-Results: mx.lifeline.test; dkim=pass header.d=co.uk"
    assert verdict(suffix, OUR_HOP, raw=raw) == (False, None)
    raw = REPLY.replace(b"bob@xxx.mailgun.org>", b"bob@alice.github.io>")
    neighbour = "Authentication-Results: mx.lifeline.test; dkim=pass header.d=mallory.github.io"
    assert verdict(neighbour, OUR_HOP, raw=raw) == (False, None)


def test_a_dmarc_pass_for_another_domain_does_not_verify():
    assert verdict("Authentication-Results: mx.lifeline.test; dmarc=pass header.from=evil.example",
                   OUR_HOP) == (False, None)
    # The organizational domain is not enough for DMARC: the From domain itself passed.
    assert verdict("Authentication-Results: mx.lifeline.test; dmarc=pass header.from=mailgun.org",
                   OUR_HOP) == (False, None)


def test_a_forged_header_with_an_untrusted_authserv_id_does_not_verify():
    assert verdict("Authentication-Results: mx.evil.example; dmarc=pass "
                   "header.from=xxx.mailgun.org", OUR_HOP) == (False, None)
    assert verdict(OUR_HOP, "Authentication-Results: mx.lifeline.test; dmarc=pass "
                   "header.from=xxx.mailgun.org", trusted=()) == (False, None)


def test_a_trusted_id_below_the_hop_from_outside_does_not_verify():
    forged = "Authentication-Results: mx.lifeline.test; dmarc=pass header.from=xxx.mailgun.org"
    assert verdict(OUR_HOP, THEIR_HOP, forged) == (False, None)


def test_a_copy_placed_right_below_our_servers_own_result_does_not_verify():
    ours = ("Authentication-Results: mx.lifeline.test; dkim=none; "
            "dmarc=fail header.from=xxx.mailgun.org")
    forged = ("Authentication-Results: mx.lifeline.test; dkim=pass header.d=mailgun.org; "
              "dmarc=pass header.from=xxx.mailgun.org")
    assert verdict(OUR_HOP, ours, forged) == (False, None)
    assert verdict(ours, forged, OUR_HOP) == (False, None)


def test_a_server_stamping_above_its_own_trace_is_read_above_it_only():
    ours = "Authentication-Results: mx.lifeline.test; spf=pass smtp.mailfrom=mailgun.org"
    forged = "Authentication-Results: mx.lifeline.test; dmarc=pass header.from=xxx.mailgun.org"
    assert verdict(ours, OUR_HOP, forged, THEIR_HOP) == (False, None)
    assert verdict(forged, OUR_HOP, THEIR_HOP) == (True, "dmarc")


def test_no_trace_of_our_server_means_no_trusted_result():
    claimed = "Authentication-Results: mx.lifeline.test; dmarc=pass header.from=xxx.mailgun.org"
    assert verdict(claimed) == (False, None)
    assert verdict(claimed, THEIR_HOP) == (False, None)


def test_two_from_addresses_never_verify():
    raw = REPLY.replace(b"From: bob <bob@xxx.mailgun.org>",
                        b"From: bob <bob@xxx.mailgun.org>, ceo@bank.example")
    sender = sender_of("Authentication-Results: mx.lifeline.test; dmarc=pass "
                       "header.from=xxx.mailgun.org", OUR_HOP, raw=raw)
    assert (sender.verified, sender.address) == (False, "bob@xxx.mailgun.org")
    twice = with_headers(REPLY, "From: ceo@bank.example")
    assert verdict("Authentication-Results: mx.lifeline.test; dmarc=pass "
                   "header.from=bank.example", OUR_HOP, raw=twice) == (False, None)


def test_no_from_address_never_verifies():
    raw = REPLY.replace(b"From: bob <bob@xxx.mailgun.org>\n", b"")
    sender = sender_of("Authentication-Results: mx.lifeline.test; dmarc=pass "
                       "header.from=xxx.mailgun.org", OUR_HOP, raw=raw)
    assert (sender.verified, sender.address) == (False, None)


def test_an_address_in_an_encoded_word_is_not_the_sender():
    passing = "Authentication-Results: mx.lifeline.test; dmarc=pass header.from=xxx.mailgun.org"
    # The display name decodes to the verified address; the mailbox is the attacker's.
    name_trick = REPLY.replace(
        b"From: bob <bob@xxx.mailgun.org>",
        b"From: =?utf-8?q?bob=40xxx=2Emailgun=2Eorg?= <mallory@evil.example>")
    sender = sender_of(passing, OUR_HOP, raw=name_trick)
    assert (sender.address, sender.name) == ("mallory@evil.example", "bob@xxx.mailgun.org")
    assert sender.verified is False
    # Encoded words inside the address itself are not an address (RFC 2047 §5).
    for trick in (b"From: <=?utf-8?q?bob?=@xxx.mailgun.org>",
                  b"From: =?utf-8?q?bob=40xxx.mailgun.org?=",
                  b"From: <=?utf-8?q?bob=40xxx.mailgun.org?=@evil.example>"):
        sender = sender_of(passing, OUR_HOP,
                           raw=REPLY.replace(b"From: bob <bob@xxx.mailgun.org>", trick))
        assert (sender.address, sender.verified) == (None, False), trick


def test_gmail_receiving_for_us_is_read_below_its_own_received_only_when_configured():
    """Gmail stamps its verdict below its own Received line (and removes copies of its
    authserv-id that arrive with a message): read there only with results_below_received,
    since a server that does not remove them would let a sender write its own verdict."""
    raw = eml("bounce_gmail_plain")  # mx.google.com: dkim and dmarc pass for googlemail.com
    below = parse(raw, trusted_authserv_ids=("mx.google.com",),
                  attachment_max_bytes=10 * 1024 * 1024, results_below_received=True)
    assert below.sender.how == "dmarc"
    assert parsed(raw, trusted=("mx.google.com",)).sender.verified is False
    assert parsed(raw, trusted=("mx.lifeline.test",)).sender.verified is False


def test_unreadable_results_and_case_do_not_matter_but_never_raise():
    assert verdict("Authentication-Results: MX.Lifeline.Test; DMARC=PASS "
                   "header.from=XXX.Mailgun.ORG", OUR_HOP) == (True, "dmarc")
    assert verdict("Authentication-Results: mx.lifeline.test; dmarc=pass (unclosed header.from=",
                   "Authentication-Results: ;;;", "Authentication-Results: \x00",
                   OUR_HOP) == (False, None)

"""Signed links (contacts.core.links): tokens bound to what they open, sealed payloads with
an age, and the links already in customers' mailboxes still opening."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta

import pytest
from itsdangerous import URLSafeTimedSerializer

from contacts.core import links
from contacts.core.errors import Invalid

SECRET = "s" * 32


def test_a_link_token_is_the_digest_links_were_always_signed_with():
    """The request-status and account-status links emailed before one module signed every
    link: the same bytes, so they still open their page."""
    old = base64.urlsafe_b64encode(hmac.digest(
        SECRET.encode(), b"incident-account\x00inc_1\x00acc_2", hashlib.sha256)[:18]).decode()
    assert links.link_token(SECRET, "incident-account", "inc_1", "acc_2") == old
    assert links.token_matches(SECRET, "incident-account", old, "inc_1", "acc_2")


@pytest.mark.parametrize("token", [None, "", "x" * 24])
def test_a_missing_or_wrong_token_opens_nothing(token):
    assert not links.token_matches(SECRET, "request-status", token, "LL-AAAA-BBBB")


def test_a_token_opens_only_what_it_was_made_for():
    token = links.link_token(SECRET, "incident-account", "inc_1", "acc_2")
    assert not links.token_matches(SECRET, "incident-account", token, "inc_1", "acc_3")
    assert not links.token_matches(SECRET, "request-status", token, "inc_1", "acc_2")
    assert not links.token_matches("t" * 32, "incident-account", token, "inc_1", "acc_2")
    # The parts are separated: ("inc_1", "acc_2") is not ("inc_1\x00acc", "_2").
    assert not links.token_matches(SECRET, "incident-account", token, "inc_1\x00acc", "_2")


def test_a_sealed_payload_opens_with_its_purpose_and_reads_what_was_sealed():
    token = links.seal(SECRET, "contact-confirmation", {"contact": "ctc_1"})
    assert links.unseal(SECRET, "contact-confirmation", token, max_age=timedelta(days=1),
                        expired="old", invalid="bad") == {"contact": "ctc_1"}
    # A payload sealed before this module, by the serializer the areas built themselves.
    before = URLSafeTimedSerializer(SECRET, salt="contact-confirmation").dumps({"contact": "c"})
    assert links.unseal(SECRET, "contact-confirmation", before, max_age=None,
                        expired="old", invalid="bad") == {"contact": "c"}


@pytest.mark.parametrize("change", ["another purpose", "another key", "cut", "altered"])
def test_a_forged_sealed_token_is_refused_with_the_invalid_message(change):
    token = links.seal(SECRET, "status-subscription-stop", 7)
    purpose, key = "status-subscription-stop", SECRET
    if change == "another purpose":
        purpose = "status-subscription-confirm"
    elif change == "another key":
        key = "t" * 32
    elif change == "cut":
        token = token[:-3]
    else:
        # The signature's first character (its last may carry only padding bits).
        head, _, signature = token.rpartition(".")
        token = f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    with pytest.raises(Invalid) as refused:
        links.unseal(key, purpose, token, max_age=None, expired="old", invalid="bad")
    assert refused.value.message == "bad"


def test_a_sealed_token_past_its_age_is_refused_as_expired_and_never_without_an_age(
        monkeypatch):
    clock = {"now": 1_800_000_000.0}
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: clock["now"])
    token = links.seal(SECRET, "request-verification", {"r": "LL-AAAA-BBBB"})
    clock["now"] += 30 * 60 - 1
    assert links.unseal(SECRET, "request-verification", token, max_age=timedelta(minutes=30),
                        expired="old", invalid="bad")
    clock["now"] += 2
    with pytest.raises(Invalid) as refused:
        links.unseal(SECRET, "request-verification", token, max_age=timedelta(minutes=30),
                     expired="old", invalid="bad")
    assert refused.value.message == "old"
    clock["now"] += 10 * 365 * 86400
    assert links.unseal(SECRET, "request-verification", token, max_age=None,
                        expired="old", invalid="bad") == {"r": "LL-AAAA-BBBB"}

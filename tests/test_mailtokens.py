"""Reply addresses and VERP return paths: what we make reads back to its thread or message,
in any letter case; anything an attacker can send reads as nothing, and no input raises."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contacts.core import mailtokens
from contacts.core.errors import ConfigError
from contacts.core.ids import ALPHABET, new_id
from contacts.core.settings import load_settings

SECRET = "s" * 48
OTHER_SECRET = "o" * 48
SUPPORT = "support@example.com"
BOUNCES = "bounces@example.com"


@pytest.mark.parametrize("kind, prefix", [("request", "req"), ("item", "itm"),
                                          ("contact", "ctc")])
def test_a_reply_address_reads_back_to_its_thread_in_any_case(kind, prefix):
    thread = new_id(prefix)
    address = mailtokens.reply_address(SUPPORT, SECRET, kind, thread)
    local, _, domain = address.partition("@")
    assert domain == "example.com" and local.startswith("support+")
    assert address == address.lower() and len(local.encode()) <= 64
    assert thread.removeprefix(f"{prefix}_") in local  # the opaque ID, nothing else
    assert len(local) == len("support+") + mailtokens.REPLY_TOKEN_LENGTH
    for spelling in (address, address.upper(), address.title(), f"<{address}>",
                     f"  {address}\t"):
        assert mailtokens.read_reply_address(spelling, SUPPORT, SECRET) == (kind, thread)
    assert mailtokens.read_reply_address(address, "Support@EXAMPLE.com", SECRET) == (kind,
                                                                                  thread)


def test_a_return_path_reads_back_to_its_outbox_message_in_any_case():
    for outbox_id in (1, 42, 123_456_789, mailtokens.MAX_OUTBOX_ID):
        address = mailtokens.return_path(BOUNCES, SECRET, outbox_id)
        local = address.partition("@")[0]
        assert local.startswith(f"bounces+m{outbox_id}.") and len(local.encode()) <= 64
        assert mailtokens.read_return_path(address, BOUNCES, SECRET) == outbox_id
        assert mailtokens.read_return_path(address.upper(), BOUNCES, SECRET) == outbox_id
    with pytest.raises(ValueError):
        mailtokens.return_path(BOUNCES, SECRET, 0)


def _reply(kind="request", thread=None):
    thread = thread or new_id({"request": "req", "item": "itm", "contact": "ctc"}[kind])
    return mailtokens.reply_address(SUPPORT, SECRET, kind, thread), thread


def _swap_last(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


def test_forged_cut_and_borrowed_reply_tokens_read_as_nothing():
    address, thread = _reply()
    local, _, domain = address.partition("@")
    other, _ = _reply()
    read = mailtokens.read_reply_address
    forged = [
        _swap_last(local) + "@" + domain,  # one character of the signature changed
        local[:-1] + "@" + domain,  # the signature cut
        local[: local.index(".")] + "@" + domain,  # no signature at all
        # another thread's signature on this ID
        local[: local.index(".")] + other.partition("@")[0][other.index("."):] + "@" + domain,
        # the same ID and signature under another kind's letter
        local.replace("+r", "+i", 1) + "@" + domain,
        local.replace("+r", "+c", 1) + "@" + domain,
        mailtokens.reply_address(SUPPORT, OTHER_SECRET, "request", thread),  # another key
        address.replace("@example.com", "@example.org"),  # another domain
        address.replace("@example.com", "@mail.example.com"),
        address.replace("support+", "sales+"),  # another mailbox
        address.replace("support+", "support+x+"),  # extra plus parts
        address.replace("@", "+x@"),
        address.replace("support+", "support++"),
        local + "@" + domain + "@" + domain,
        local + "\n@" + domain,  # a line break in the local part
        "support+" + "r" * 60 + "@example.com",  # a local part past 64 octets
        "support+" + local.partition("+")[2] + "0" * 40 + "@example.com",
        address.replace("r", "ř", 1),  # non-ASCII
        "support+r" + thread[4:] + ".ÿ" + "a" * 15 + "@example.com",
        mailtokens.return_path(SUPPORT, SECRET, 7),  # a return path is no reply address
        SUPPORT, "", "@", "+", "support+@example.com", "support+r.@example.com",
    ]
    for candidate in forged:
        assert read(candidate, SUPPORT, SECRET) is None, candidate
    # The true one still reads.
    assert read(address, SUPPORT, SECRET) == ("request", thread)


def test_forged_cut_and_borrowed_return_paths_read_as_nothing():
    address = mailtokens.return_path(BOUNCES, SECRET, 1234)
    local, _, domain = address.partition("@")
    other = mailtokens.return_path(BOUNCES, SECRET, 1235)
    read = mailtokens.read_return_path
    forged = [
        _swap_last(local) + "@" + domain,
        local[:-1] + "@" + domain,
        local[: local.index(".")] + "@" + domain,
        "bounces+m1235" + local[local.index("."):] + "@" + domain,  # 1234's signature
        "bounces+m1234" + other[other.index("."):],  # 1235's signature on 1234
        "bounces+m01234" + local[local.index("."):] + "@" + domain,  # a leading zero
        mailtokens.return_path(BOUNCES, OTHER_SECRET, 1234),
        address.replace("@example.com", "@example.net"),
        address.replace("bounces+", "support+"),
        address.replace("bounces+", "bounces+m1+"),
        address.replace("@", "+x@"),
        "bounces+m" + "9" * 70 + "@example.com",
        "bounces+m" + "9" * 20 + local[local.index("."):] + "@example.com",  # past 2^63
        address.replace("m", "ḿ", 1),
        mailtokens.reply_address(BOUNCES, SECRET, "request", new_id("req")),
        BOUNCES, "", "bounces+m.@example.com", "bounces+m-1.aaaaaaaaaaaaaaaa@example.com",
    ]
    for candidate in forged:
        assert read(candidate, BOUNCES, SECRET) is None, candidate
    assert read(address, BOUNCES, SECRET) == 1234


def test_a_reply_address_is_made_for_its_own_kind_of_id_only():
    for kind, wrong in (("request", new_id("itm")), ("item", new_id("req")),
                        ("contact", "ctc_short"), ("request", "01jd8x3k2m9q7r5t4v6w8y0z1b")):
        with pytest.raises(ValueError):
            mailtokens.reply_address(SUPPORT, SECRET, kind, wrong)


addresses = st.one_of(
    st.text(max_size=120),
    st.text(alphabet="abcdefghjkmnpqrstvwxyz0123456789+.@<>-_ MRI", max_size=90),
    st.builds(lambda token, domain: f"support+{token}@{domain}",
              st.text(alphabet="rmic0123456789abcdefghjkmnpqrstvwxyz.", max_size=70),
              st.sampled_from(["example.com", "EXAMPLE.COM", "example.org", ""])),
)


@given(addresses)
def test_the_readers_never_raise(address):
    assert mailtokens.read_reply_address(address, SUPPORT, SECRET) is None
    assert mailtokens.read_return_path(address, BOUNCES, SECRET) is None


@pytest.mark.parametrize("setting, value, words", [
    ("mail_reply_to", "sup+port@example.com", "cannot take a +token"),
    ("mail_reply_to", "\"our desk\"@example.com", "cannot take a +token"),
    ("mail_reply_to", "a-very-long-support-mailbox@example.com", "too long"),
    ("mail_return_path", "bounces", "not a plain ASCII address"),
    ("mail_return_path", "rück@example.com", "not a plain ASCII address"),
    ("mail_return_path", "bounces@exa mple.com", "not a host name"),
])
def test_a_mailbox_that_cannot_take_a_token_is_refused_at_startup(setting, value, words,
                                                                 service_secrets):
    with pytest.raises(ConfigError) as refused:
        load_settings({setting: value, "secrets": service_secrets}, environ={})
    assert words in refused.value.message and "\n" not in refused.value.message


def test_the_mailboxes_default_to_the_senders_address(service_secrets):
    settings = load_settings({"mail_sender": "Lifeline <Status@Lifeline.Example>",
                              "secrets": service_secrets}, environ={})
    assert settings.mail_reply_to == settings.mail_return_path == "status@lifeline.example"
    given_ones = load_settings({"mail_reply_to": "Help@Example.com",
                                "mail_return_path": "bounces@example.com",
                                "secrets": service_secrets}, environ={})
    assert (given_ones.mail_reply_to, given_ones.mail_return_path) == (
        "help@example.com", "bounces@example.com")


@pytest.mark.parametrize("secret", ["k" * 32, "k" * 64, "k" * 65, "ключ" * 20])
def test_a_signature_is_80_bits_of_hmac_sha256_with_its_own_purpose(secret):
    """The fan-out's fast path (the key's pads hashed once) signs exactly as HMAC does."""
    thread = new_id("ctc")
    body = thread.removeprefix("ctc_")
    digest = hmac.digest(secret.encode(), f"{mailtokens.REPLY_PURPOSE}\0contact\0{body}".encode(),
                         hashlib.sha256)
    value = int.from_bytes(digest[:10])
    expected = "".join(ALPHABET[(value >> shift) & 31] for shift in range(75, -5, -5))
    address = mailtokens.reply_address(SUPPORT, secret, "contact", thread)
    assert address == f"support+c{body}.{expected}@example.com"
    returned = hmac.digest(secret.encode(), f"{mailtokens.RETURN_PURPOSE}\x0099".encode(),
                           hashlib.sha256)
    assert mailtokens.return_path(BOUNCES, secret, 99).split(".")[1].startswith(
        "".join(ALPHABET[(int.from_bytes(returned[:10]) >> shift) & 31]
                for shift in range(75, -5, -5)))

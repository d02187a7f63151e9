"""The intake's limits cannot be sidestepped by spelling an address another way, by using a
subdomain, or by switching between the form and the API; and neither the limiter's storage
nor any log line holds the address or the domain they count."""

from __future__ import annotations

import itertools
import logging
import uuid

import pytest

from contacts.core import ratelimit
from tests.helpers import csrf_token_from, require_redis

ADDRESSES = itertools.count(1)


def _app(make_app, **limits_given):
    settings = {"intake_rate_limit_per_ip": "1000 per minute",
                "intake_rate_limit_per_email": "1000 per hour",
                "intake_rate_limit_per_domain": "1000 per hour", **limits_given}
    return make_app(**settings)


def _ip() -> str:
    number = next(ADDRESSES)
    return f"10.9.{number // 256 % 256}.{number % 256}"


def _api(client, address: str, ip: str | None = None) -> int:
    return client.post("/api/v1/requests", json={"email": address, "message": "x"},
                       environ_base={"REMOTE_ADDR": ip or _ip()}).status_code


def _form(client, address: str, ip: str | None = None) -> int:
    environ = {"REMOTE_ADDR": ip or _ip()}
    page = client.get("/contact", environ_base=environ)
    return client.post("/contact", data={
        "csrf_token": csrf_token_from(page.get_data(as_text=True)), "email": address,
        "message": "x"}, environ_base=environ).status_code


@pytest.mark.parametrize("spellings", [
    ["same.person@acme.example", "Same.Person+x@ACME.example", "same.person+y+z@acme.example",
     "SAME.PERSON+@Acme.Example"],
    ["someone@gmail.com", "some.one@gmail.com", "S.o.m.e.o.n.e+list@GMAIL.com",
     "someone@googlemail.com"],
    ["anna@bücher.example", "Anna@BÜCHER.example", "anna+1@xn--bcher-kva.example",
     "ANNA@Bücher.Example"],
    ["jose\u0301@acme.example", "jos\u00e9@acme.example", "JOS\u00c9@ACME.example",
     "JOSE\u0301+x@acme.example"],
    ["\uff4a\uff4f\uff53\uff45@acme.example", "jose@acme.example",
     "\uff2a\uff2f\uff33\uff25@\uff41\uff43\uff4d\uff45.example", "JOSE+y@acme.example"],
])
def test_every_spelling_of_one_mailbox_shares_its_limit(make_app, spellings):
    client = _app(make_app, intake_rate_limit_per_email="3 per hour").test_client()
    assert [_api(client, address) for address in spellings] == [202, 202, 202, 429]


def test_dots_stay_significant_outside_gmail(make_app):
    client = _app(make_app, intake_rate_limit_per_email="1 per hour").test_client()
    assert [_api(client, address) for address in (
        "same.person@acme.example", "sameperson@acme.example",
        "same.person@acme.example")] == [202, 202, 429]


@pytest.mark.parametrize(("hosts", "others"), [
    (["bigcorp.example", "sub1.bigcorp.example", "sub2.bigcorp.example",
      "a.b.BigCorp.example"], ["bigcorp2.example", "otherbigcorp.example"]),
    (["bigcorp.co.uk", "mail.bigcorp.co.uk", "sub1.bigcorp.co.uk", "x.y.bigcorp.co.uk"],
     ["smallcorp.co.uk", "bigcorp.org.uk"]),
])
def test_the_subdomains_of_one_registrable_domain_share_its_limit(make_app, hosts, others):
    client = _app(make_app, intake_rate_limit_per_domain="3 per hour").test_client()
    assert [_api(client, f"user{n}@{host}") for n, host in enumerate(hosts)] == [
        202, 202, 202, 429]
    assert [_api(client, f"user@{host}") for host in others] == [202, 202]


def test_the_form_and_the_api_share_one_budget_per_mailbox(make_app):
    client = _app(make_app, intake_rate_limit_per_email="3 per hour").test_client()
    answers = [_api(client, "both@acme.example"), _form(client, "Both+web@acme.example"),
               _api(client, "both@acme.example")]
    assert answers == [202, 303, 202]
    assert _form(client, "both@acme.example") == 429
    assert _api(client, "BOTH@acme.example") == 429


def test_the_form_and_the_api_share_one_budget_per_domain(make_app):
    client = _app(make_app, intake_rate_limit_per_domain="2 per hour").test_client()
    assert [_form(client, "one@shared.example"), _api(client, "two@www.shared.example"),
            _form(client, "three@shared.example"),
            _api(client, "four@shared.example")] == [303, 202, 429, 429]


def test_the_form_and_the_api_share_one_budget_per_client_address(make_app):
    client = _app(make_app, intake_rate_limit_per_ip="3 per hour").test_client()
    ip = "10.8.0.1"
    assert [_api(client, "a@one.example", ip), _form(client, "b@two.example", ip),
            _api(client, "c@three.example", ip)] == [202, 303, 202]
    assert _form(client, "d@four.example", ip) == 429
    assert _api(client, "e@five.example", ip) == 429


@pytest.mark.parametrize(("typed", "folded"), [
    ("Same.Person+x@ACME.example.", "same.person@acme.example"),
    ("s.a.m.e+tag@GoogleMail.com", "same@gmail.com"),
    ("+only@acme.example", "+only@acme.example"),
    ("ANNA@BÜCHER.example", "anna@xn--bcher-kva.example"),
    ("jose\u0301@acme.example", "jos\u00e9@acme.example"),
    ("JOSE\u0301@acme.example", "jos\u00e9@acme.example"),
    ("JOS\u00c9+tag@acme.example", "jos\u00e9@acme.example"),
    ("\uff2a\uff4f\uff53\uff45@acme.example", "jose@acme.example"),
    ("Stra\u00dfe@acme.example", "strasse@acme.example"),
])
def test_a_mailbox_is_folded_to_one_spelling(typed, folded):
    from contacts.intake import limits

    assert limits.mailbox(typed) == folded


@pytest.mark.parametrize(("host", "registrable"), [
    ("sub1.bigcorp.example", "bigcorp.example"),
    ("a.b.bigcorp.co.uk", "bigcorp.co.uk"),
    ("BigCorp.CO.UK.", "bigcorp.co.uk"),
    ("shop.bücher.de", "xn--bcher-kva.de"),
    ("alice.github.io", "alice.github.io"),  # a private suffix: each name is its own owner
])
def test_the_registrable_domain_comes_from_the_public_suffix_list(host, registrable):
    from contacts.intake import limits

    assert limits.registrable_domain(host) == registrable


# -- what the limiter keeps and logs -------------------------------------------------------

CLEAR = ("same.person", "sameperson", "acme.example", "bigcorp", "acme")


def _hit_every_limit(client) -> None:
    for n in range(4):
        _api(client, f"Same.Person+{n}@Acme.example")
        _form(client, f"same.person+f{n}@acme.example")
        _api(client, f"user{n}@sub{n}.bigcorp.example")
        _form(client, f"staff{n}@bigcorp.example")
    for _ in range(4):
        _api(client, "someone@else.example", "10.7.0.1")


LIMITED = {"intake_rate_limit_per_ip": "3 per minute",
           "intake_rate_limit_per_email": "2 per hour",
           "intake_rate_limit_per_domain": "2 per hour"}


def _assert_no_clear_text(keys: list[str]) -> None:
    assert any(key.startswith("intake-email:") or "/intake-email:" in key for key in keys)
    assert any("intake-domain:" in key for key in keys)
    for needle in CLEAR:
        assert not [key for key in keys if needle in key.lower()], needle


def test_the_memory_storage_and_the_logs_hold_no_address_or_domain(make_app, caplog):
    app = make_app(**LIMITED)
    caplog.set_level(logging.DEBUG)
    _hit_every_limit(app.test_client())
    exceeded = [record.getMessage() for record in caplog.records
                if "exceeded" in record.getMessage()]
    assert any("intake-email:" in line for line in exceeded)  # the limits were hit...
    assert any("intake-domain:" in line for line in exceeded)
    for needle in CLEAR:  # ...and no line names what they count
        assert needle not in caplog.text.lower(), needle
    storage = ratelimit.limiter_of(app).storage
    keys = [str(key) for table in (storage.storage, storage.expirations, storage.events)
            for key in table]
    _assert_no_clear_text(keys)


def test_the_redis_storage_holds_no_address_or_domain(make_app, caplog):
    url = "redis://127.0.0.1:6379/15"
    store = require_redis(url)
    prefix = f"test-{uuid.uuid4().hex}"
    app = make_app(security_rate_limit_storage_uri=url, security_rate_limit_key_prefix=prefix,
                   **LIMITED)
    caplog.set_level(logging.DEBUG)
    try:
        _hit_every_limit(app.test_client())
        keys = [key.decode() for key in store.scan_iter(match=f"*{prefix}*", count=1000)]
    finally:
        for key in store.scan_iter(match=f"*{prefix}*", count=1000):
            store.delete(key)
    assert keys
    _assert_no_clear_text(keys)
    for needle in CLEAR:
        assert needle not in caplog.text.lower(), needle

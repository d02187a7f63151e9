"""Mail that passes bulk senders' rules, read as a mail client reads it (policy.default with
every defect an error) from what a real SMTP server received from the drain: one-click
unsubscribe (RFC 8058) that works when a mailbox provider posts to a real HTTP server,
Auto-Submitted (RFC 3834), an incident's updates in one thread, Message-IDs in
`[mail] domain`, a numeric UTC Date."""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from sqlmodel import select
from werkzeug.serving import make_server

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import outbox
from contacts.incidents import subscriptions
from contacts.incidents.models import SUBSCRIBER_EMAIL, Subscriber
from tests.conftest import read_strictly
from tests.incidents.conftest import complete_draft, publish_queued

DOMAIN = "status.lifeline.example"
ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def base_url():
    return f"http://127.0.0.1:{_free_port()}"


@pytest.fixture
def app(make_app, base_url):
    """The app its links point at (the links in emails lead to the live server below)."""
    return make_app(app_base_url=base_url, mail_domain=DOMAIN,
                    mail_sender="Lifeline status <status@lifeline.example>")


@pytest.fixture
def served(app, base_url):
    server = make_server("127.0.0.1", int(base_url.rsplit(":", 1)[1]), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base_url
    server.shutdown()
    thread.join(timeout=5)


def _post(url: str, body: bytes = ONE_CLICK) -> tuple[int, str]:
    """A POST as a mailbox provider makes it: the form body alone, no cookie, no token."""
    request = urllib.request.Request(url, data=body, headers=FORM,  # noqa: S310 - 127.0.0.1
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - 127.0.0.1
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - 127.0.0.1
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def _drain(app, port: int) -> None:
    mailer = dataclasses.replace(Mailer.from_settings(services(app).settings),
                                 host="127.0.0.1", port=port)
    assert mailer.domain == DOMAIN
    outbox.drain(engine=services(app).engine, cipher=services(app).crypto.cipher,
                 mailer=mailer, now=utcnow(), limit=1000)


def _subscriber(engine, desk, address: str) -> int:
    """A confirmed subscriber, through the service calls the public pages make."""
    with session_scope(engine) as session:
        subscriptions.subscribe(session=session, desk=desk, email=address, locale="en",
                                now=utcnow())
    with session_scope(engine) as session:
        (found,) = [row for row in session.exec(select(Subscriber))
                    if desk.crypto.cipher.decrypt(row.email_encrypted,
                                                  context=SUBSCRIBER_EMAIL) == address]
        token = subscriptions.subscription_link(desk, found.id, "confirm").rsplit("/", 1)[1]
        subscriptions.follow_subscription_link(session=session, desk=desk, action="confirm",
                                               token=token, now=utcnow())
        return found.id


def _unsubscribed_at(engine, subscriber_id: int):
    with session_scope(engine) as session:
        return session.get(Subscriber, subscriber_id).unsubscribed_at


def _publish(engine, desk, vault, incident: str) -> None:
    with session_scope(engine) as session:
        publish_queued(session=session, desk=desk, vault=vault,
                       actor=Actor.system("test"), incident_id=incident,
                       draft=complete_draft(), now=utcnow())


def _received(sink) -> dict[str, list]:
    """Every message received so far, read strictly, by recipient, in order."""
    by_recipient: dict[str, list] = {}
    for raw in sink.received:
        message = read_strictly(raw)
        by_recipient.setdefault(str(message["To"]).lower(), []).append((raw, message))
    return by_recipient


def test_a_subscriber_unsubscribes_in_one_click_and_updates_thread_per_incident(
        app, engine, desk, vault, incident, served, smtp_server):
    port, sink = smtp_server
    fan = _subscriber(engine, desk, "fan@example.org")
    _drain(app, port)  # the confirmation
    (confirmation,) = _received(sink)["fan@example.org"]
    assert confirmation[1]["Auto-Submitted"] == "auto-generated"
    assert confirmation[1]["List-Unsubscribe"] is None  # not subscribed when it was sent
    sink.received.clear()

    _publish(engine, desk, vault, incident)
    _drain(app, port)
    _publish(engine, desk, vault, incident)
    _drain(app, port)
    received = _received(sink)
    contacts = [address for address in received if address != "fan@example.org"]
    assert len(contacts) > 20
    for address in ("fan@example.org", *contacts):
        (raw_first, first), (raw_second, second) = received[address]
        for raw, message in ((raw_first, first), (raw_second, second)):
            assert message["Auto-Submitted"] == "auto-generated"
            assert re.search(rb"^Date: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} "
                             rb"\d{2}:\d{2}:\d{2} \+0000\r$", raw, re.MULTILINE), raw[:400]
            assert message["Date"].datetime.utcoffset() == timedelta(0)
            assert re.fullmatch(rf"<[0-9a-f]{{32}}@{re.escape(DOMAIN)}>",
                                str(message["Message-ID"]))
            assert message["List-Id"] == f"Lifeline incident {incident} " \
                                         f"<{incident}.incidents.lifeline>"
        # The second update answers the first: one thread per incident in the reader's client.
        assert first["References"] is None and first["In-Reply-To"] is None
        assert str(second["In-Reply-To"]) == str(first["Message-ID"])
        assert str(second["References"]) == str(first["Message-ID"])
        assert first["Message-ID"] != second["Message-ID"]
    # An account's contacts are its named people for incidents: no unsubscribe is offered
    # that would not be honoured.
    assert all(message["List-Unsubscribe"] is None for address in contacts
               for _, message in received[address])

    (_, update), (_, latest) = received["fan@example.org"]
    links = re.fullmatch(r"<([^<>]+)>", str(latest["List-Unsubscribe"]))
    assert links, latest["List-Unsubscribe"]  # one https link, no mailto
    link = links.group(1)
    assert link.startswith(f"{served}/status/unsubscribe/{fan}/")
    assert latest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert link in latest.get_body(("plain",)).get_content()
    assert f'href="{link}"' in latest.get_body(("html",)).get_content()

    # A link scanner's GET shows the button and unsubscribes nobody.
    status, page = _get(link)
    assert status == 200 and "Stop sending me updates" in page
    assert _unsubscribed_at(engine, fan) is None

    # The provider's POST, exactly as RFC 8058 has it, unsubscribes; again changes nothing.
    assert _post(link)[0] == 200
    stopped = _unsubscribed_at(engine, fan)
    assert stopped is not None
    status, page = _post(link)
    assert status == 200 and "Unsubscribed" in page
    assert _unsubscribed_at(engine, fan) == stopped

    sink.received.clear()
    _publish(engine, desk, vault, incident)
    _drain(app, port)
    received = _received(sink)
    assert "fan@example.org" not in received
    assert sorted(received) == sorted(contacts)  # the contacts are still told


@pytest.fixture
def two_fans(engine, desk):
    return _subscriber(engine, desk, "ann@example.org"), _subscriber(engine, desk,
                                                                     "bob@example.org")


def _link(desk, subscriber_id: int) -> str:
    return subscriptions.unsubscribe_link(desk, subscriber_id)


def test_a_forged_or_borrowed_token_unsubscribes_nobody(engine, desk, served, two_fans):
    ann, bob = two_fans
    good = _link(desk, ann)
    token = good.rsplit("/", 1)[1]
    # The signature's first character changed (its last may only carry padding bits that
    # decoding ignores, so changing it can leave the same bytes).
    head, _, signature = good.rpartition(".")
    forged = f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    confirm = subscriptions.subscription_link(desk, ann, "confirm").rsplit("/", 1)[1]
    other_key = dataclasses.replace(desk, secret_key="x" * 40)
    for url in (forged,
                f"{served}/status/unsubscribe/{bob}/{token}",  # Ann's token on Bob's link
                f"{served}/status/unsubscribe/{ann}/{confirm}",  # another link's purpose
                _link(other_key, ann),  # signed with another key
                f"{served}/status/unsubscribe/{ann}/"):
        assert 400 <= _post(url)[0] < 500, url
        assert 400 <= _get(url)[0] < 500, url
    status, page = _post(good, body=b"")  # not the one-click body
    assert status == 400 and "List-Unsubscribe=One-Click" in page
    assert 400 <= _post(f"{served}/status/unsubscribe/not-a-number/{token}")[0] < 500
    assert _unsubscribed_at(engine, ann) is None and _unsubscribed_at(engine, bob) is None
    assert _post(_link(desk, bob))[0] == 200
    assert _unsubscribed_at(engine, ann) is None and _unsubscribed_at(engine, bob) is not None


def test_an_expired_link_is_refused_and_says_so(engine, desk, served, two_fans, monkeypatch):
    ann, _ = two_fans
    clock = {"now": 1_800_000_000.0}
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: clock["now"])
    link = _link(desk, ann)
    clock["now"] += subscriptions.UNSUBSCRIBE_DAYS * 86400 + 1
    status, page = _post(link)
    assert status == 400 and "expired" in page
    assert _unsubscribed_at(engine, ann) is None


def test_only_the_one_click_route_goes_without_a_csrf_token(engine, desk, served, two_fans):
    ann, _ = two_fans
    stop = subscriptions.subscription_link(desk, ann, "stop")
    status, _ = _post(stop, body=b"")
    assert status == 400
    assert _unsubscribed_at(engine, ann) is None

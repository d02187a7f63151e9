"""Signed webhooks per account: a real HTTP server on 127.0.0.1 receives each update, checks
the signature, and sees the same idempotency key on a retry."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlmodel import select

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.errors import Invalid
from contacts.core.services import services
from contacts.delivery import outbox, quarantine
from contacts.delivery.models import OutboxMessage
from contacts.delivery.webhook import WebhookPolicy
from contacts.incidents import publishing
from contacts.incidents.models import AffectedSite
from tests.helpers import csrf_token_from
from tests.incidents.conftest import complete_draft, publish_queued

ACTOR = Actor.system("test")


@pytest.fixture
def receiver():
    """An HTTP endpoint on 127.0.0.1 that fails its first `fail` calls with 503 (the app
    below allows this one private address; webhooks reach public addresses only)."""
    state = {"fail": 0, "calls": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state["calls"].append((dict(self.headers), body))
            failing = state["fail"] > 0
            state["fail"] -= 1
            self.send_response(503 if failing else 204)
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/lifeline", state
    server.shutdown()


@pytest.fixture
def app(make_app, receiver):
    url, _state = receiver
    return make_app(webhooks_allow_private_hosts=[url.split("/")[2]])


def _drain(app, engine, now):
    return outbox.drain_webhooks(engine=engine, cipher=services(app).crypto.cipher,
                                 policy=WebhookPolicy.from_settings(
                                     services(app).settings), now=now)


def test_an_update_is_posted_signed_and_retried_with_the_same_key(
        app, engine, desk, vault, incident, receiver):
    url, state = receiver
    with session_scope(engine) as session:
        account_id = session.exec(select(AffectedSite.account_id)).first()
        secret = publishing.set_webhook(session=session, desk=desk, actor=ACTOR,
                                        account_id=account_id, url=url, now=utcnow())
    with session_scope(engine) as session:
        update = publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                                    incident_id=incident, draft=complete_draft(), now=utcnow())
    state["fail"] = 1
    now = utcnow()
    _drain(app, engine, now)  # the 503 is retried later...
    _drain(app, engine, now + timedelta(seconds=34))  # ...and then delivered
    assert len(state["calls"]) == 2
    (first_headers, first_body), (headers, body) = state["calls"]
    assert first_body == body
    assert first_headers["Idempotency-Key"] == headers["Idempotency-Key"]
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Lifeline-Signature"], expected)
    document = json.loads(body)
    assert document["update"]["id"] == update.id
    assert document["account"]["id"] == account_id
    for field in ("what_happened", "scope", "timeline", "next_update_at", "restore_percentage",
                  "data_loss", "confidence", "support"):
        assert document["update"][field] not in (None, ""), field


def test_a_webhook_url_that_is_not_http_is_refused(engine, desk, incident, auth, make_staff,
                                                   client):
    with session_scope(engine) as session:
        account_id = session.exec(select(AffectedSite.account_id)).first()
        for bad in ("ftp://example.com/x", "file:///etc/passwd", "javascript:alert(1)", "x"):
            with pytest.raises(Invalid, match="http:// or https://"):
                publishing.set_webhook(session=session, desk=desk, actor=ACTOR,
                                       account_id=account_id, url=bad, now=utcnow())
    auth.login(make_staff("comms"))
    page = client.get("/console/webhooks").get_data(as_text=True)
    answer = client.post("/console/webhooks", data={
        "csrf_token": csrf_token_from(page), "account_id": account_id,
        "url": "file:///etc/passwd"})
    assert answer.status_code == 400
    assert "must be an http:// or https:// address" in answer.get_data(as_text=True)
    with session_scope(engine) as session:
        assert publishing.webhooks(session=session) == []


def test_the_console_refuses_inside_endpoints_with_a_form_message(
        engine, desk, incident, auth, make_staff, client, monkeypatch):
    """Every refusal names its reason; a name resolving inside is not told apart from one
    that does not resolve, and what it resolved to is never shown."""
    real = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):  # an inside name and a missing one
        if host == "hooks.corp.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port))]
        if host == "missing.corp.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with session_scope(engine) as session:
        account_id = session.exec(select(AffectedSite.account_id)).first()
    auth.login(make_staff("comms"))
    resolved = "the webhook URL&#39;s host must resolve to public internet addresses only"
    for url, reason in (
            ("http://2130706433/hook", "address is loopback, not a public internet address"),
            ("http://[::ffff:127.0.0.1]/", "address is loopback (IPv4 inside IPv6)"),
            ("http://169.254.169.254/latest", "address is link-local"),
            ("http://100.64.0.7/", "address is shared (carrier-grade NAT)"),
            ("http://evil@127.0.0.1/", "must not carry a user name or password"),
            ("http://%31%32%37.0.0.1/", "host is not a valid host name or address"),
            ("http://localhost:8000/", resolved),
            ("http://hooks.corp.example/", resolved),
            ("http://missing.corp.example/", resolved)):
        page = client.get("/console/webhooks").get_data(as_text=True)
        answer = client.post("/console/webhooks", data={
            "csrf_token": csrf_token_from(page), "account_id": account_id, "url": url})
        text = answer.get_data(as_text=True)
        assert answer.status_code == 400, url
        assert reason in text, url
        assert "10.0.0.1" not in text
    with session_scope(engine) as session:
        assert publishing.webhooks(session=session) == []


def test_the_public_subscribes_with_double_opt_in_and_can_stop(app, client, engine, desk,
                                                               vault, incident):
    import re

    from contacts.delivery.models import OutboxMessage

    def mails(purpose):
        with session_scope(engine) as session:
            return [json.loads(services(app).crypto.cipher.decrypt(
                row.payload_encrypted, context="outbox_message.payload"))
                for row in session.exec(select(OutboxMessage).where(
                    OutboxMessage.purpose == purpose))]

    page = client.get("/status/subscribe").get_data(as_text=True)
    for _ in range(2):  # the same answer for a repeated address
        answer = client.post("/status/subscribe", data={"csrf_token": csrf_token_from(page),
                                                       "email": "Fan@Example.org"})
        assert "Check your inbox" in answer.get_data(as_text=True)
    with session_scope(engine) as session:
        publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                           incident_id=incident, draft=complete_draft(), now=utcnow())
    assert not any(m["to"] == "Fan@Example.org" for m in mails("incident_update"))  # not yet
    (confirmation,) = mails("subscription_confirm")
    link = re.search(r"(/status/subscription/confirm/\S+)", confirmation["text"]).group(1)
    shown = client.get(link).get_data(as_text=True)
    assert client.post(link, data={"csrf_token": csrf_token_from(shown)}).status_code == 200
    with session_scope(engine) as session:
        publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                           incident_id=incident, draft=complete_draft(), now=utcnow())
    (update,) = [m for m in mails("incident_update") if m["to"] == "Fan@Example.org"]
    assert "Expected data loss" in update["text"] and "Your account" not in update["text"]
    stop = re.search(r"(/status/unsubscribe/\S+)", update["text"]).group(1)
    assert "Stop sending me updates" in client.get(stop).get_data(as_text=True)  # a button
    assert client.post(stop, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    with session_scope(engine) as session:
        publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                           incident_id=incident, draft=complete_draft(), now=utcnow())
    assert len([m for m in mails("incident_update") if m["to"] == "Fan@Example.org"]) == 1


def test_comms_save_a_template_from_the_console_and_see_what_is_missing(client, auth,
                                                                         make_staff):
    auth.login(make_staff("comms"))
    page = client.get("/console/templates").get_data(as_text=True)
    assert "Expected data loss" in page  # the default in use is shown
    refused = client.post("/console/templates", data={
        "csrf_token": csrf_token_from(page), "kind": "subject", "locale": "fr",
        "body": "Incident {{ incident_title }}"})
    assert refused.status_code == 400
    assert "leaves out required fields: restore_percentage" in refused.get_data(as_text=True)
    unsafe = client.post("/console/templates", data={
        "csrf_token": csrf_token_from(page), "kind": "subject", "locale": "fr",
        "body": "{{ incident_title.__class__.__mro__ }} {{ restore_percentage }}"})
    assert unsafe.status_code == 400 and "sandbox forbids" in unsafe.get_data(as_text=True)
    saved = client.post("/console/templates", data={
        "csrf_token": csrf_token_from(page), "kind": "subject", "locale": "fr",
        "body": "[{{ incident_title }}] {{ restore_percentage }} restaurés"})
    assert saved.status_code == 303
    assert "restaurés" in client.get("/console/templates").get_data(as_text=True)


def test_a_webhook_that_keeps_failing_is_quarantined_until_saved_again(
        app, engine, desk, vault, incident, receiver):
    url, state = receiver
    with session_scope(engine) as session:
        account_id = session.exec(select(AffectedSite.account_id)).first()
        publishing.set_webhook(session=session, desk=desk, actor=ACTOR, account_id=account_id,
                               url=url, now=utcnow())
    with session_scope(engine) as session:
        publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                           incident_id=incident, draft=complete_draft(), now=utcnow())
    state["fail"] = 100
    now = utcnow()
    for _ in range(outbox.MAX_ATTEMPTS):  # every retry fails
        now += timedelta(hours=2)
        _drain(app, engine, now)
    with session_scope(engine) as session:
        assert quarantine.quarantine_failing_webhooks(session=session, now=now) == [account_id]
    with session_scope(engine) as session:
        publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                           incident_id=incident, draft=complete_draft(), now=now)
        webhook_rows = list(session.exec(select(OutboxMessage).where(
            OutboxMessage.channel == "webhook")))
    assert len(webhook_rows) == 1  # the quarantined endpoint got nothing new
    with session_scope(engine) as session:
        publishing.set_webhook(session=session, desk=desk, actor=ACTOR, account_id=account_id,
                               url=url, now=now)
        assert publishing.webhooks(session=session)[0].quarantined_at is None

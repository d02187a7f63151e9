"""Signed webhooks per account endpoint: a receiver built on the `standardwebhooks` package
(a real HTTP server on 127.0.0.1) verifies every delivery of an update, retries and a retry
after a secret rotation included, and sees the same webhook-id on each attempt."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.errors import Invalid
from contacts.core.services import services
from contacts.delivery import outbox, quarantine, webhook_lane
from contacts.delivery.models import OutboxMessage
from contacts.delivery.webhook import WebhookPolicy
from contacts.incidents import endpoints, progress
from contacts.incidents.events import IncidentUpdateEvent
from contacts.incidents.models import AffectedSite
from tests.delivery.receivers import StandardReceiver
from tests.helpers import csrf_token_from
from tests.incidents.conftest import complete_draft, publish_queued

ACTOR = Actor.system("test")


@pytest.fixture
def receiver():
    made = StandardReceiver()
    yield made
    made.close()


@pytest.fixture
def app(make_app, receiver):
    return make_app(webhooks_allow_private_hosts=[receiver.host_port])


def _drain(app, engine, now):
    return webhook_lane.drain_webhooks(engine=engine, cipher=services(app).crypto.cipher,
                                       policy=WebhookPolicy.from_settings(
                                           services(app).settings), now=now)


def _register(engine, desk, receiver, path="/hooks/lifeline"):
    with session_scope(engine) as session:
        account_id = session.exec(select(AffectedSite.account_id)).first()
        endpoint, secret = endpoints.register_endpoint(
            session=session, desk=desk, actor=ACTOR, account_id=account_id,
            url=receiver.url(path), now=utcnow())
        return account_id, endpoint.id, secret


def _publish(engine, desk, vault, incident, now=None):
    with session_scope(engine) as session:
        return publish_queued(session=session, desk=desk, vault=vault, actor=ACTOR,
                              incident_id=incident, draft=complete_draft(),
                              now=now or utcnow())


def test_an_update_is_posted_signed_and_retried_with_the_same_id(
        app, engine, desk, vault, incident, receiver):
    account_id, _, secret = _register(engine, desk, receiver)
    receiver.secret = secret
    with session_scope(engine) as session:
        site_ids = list(session.exec(select(AffectedSite.site_id).where(
            AffectedSite.account_id == account_id)))
        progress.set_stages(session=session, desk=desk, actor=ACTOR, incident_id=incident,
                            stages=[(site_ids[0], "validated_by_us")], now=utcnow())
    update = _publish(engine, desk, vault, incident)
    receiver.fail["/hooks/lifeline"] = 1
    now = utcnow()
    assert _drain(app, engine, now).retried == 1  # the 503 is retried later...
    assert _drain(app, engine, now + timedelta(seconds=34)).sent == 1  # ...then delivered
    first, retry = receiver.deliveries
    assert first.verified and retry.verified, (first.error, retry.error)
    assert first.body == retry.body
    assert first.headers["webhook-id"] == retry.headers["webhook-id"]
    assert first.headers["webhook-id"].startswith("msg_")
    assert "X-Lifeline-Signature" not in retry.headers  # a whsec_ secret: the standard only
    document = IncidentUpdateEvent.model_validate_json(retry.body)  # as the document says
    assert document.update.id == update.id and document.account.id == account_id
    assert "validated_by_us" in {site.stage for site in document.account.sites}  # keys
    assert {site.stage for site in document.account.sites} <= set(desk.stages)
    raw = json.loads(retry.body)
    for field in ("what_happened", "scope", "timeline", "next_update_at", "restore_percentage",
                  "data_loss", "confidence", "support"):
        assert raw["update"][field] not in (None, ""), field


def test_a_retry_after_a_rotation_is_signed_with_the_new_secret(
        app, engine, desk, vault, incident, receiver, client, make_token):
    """The acceptance point: the receiver, on `standardwebhooks`, verifies the first
    attempt with the old secret and the retry with the rotated one, which the old secret
    no longer verifies; the secret is rotated through the API."""
    account_id, endpoint_id, old = _register(engine, desk, receiver)
    receiver.secret = old
    _publish(engine, desk, vault, incident)
    receiver.fail["/hooks/lifeline"] = 1
    now = utcnow()
    _drain(app, engine, now)
    answer = client.post(f"/api/v1/accounts/{account_id}/webhooks/{endpoint_id}/rotate",
                         headers={"Authorization": f"Bearer {make_token('webhooks:write')}"})
    assert answer.status_code == 200, answer.get_json()
    new = answer.get_json()["secret"]
    assert new.startswith("whsec_") and new != old
    receiver.secret = new
    assert _drain(app, engine, now + timedelta(hours=1)).sent == 1
    first, retry = receiver.deliveries
    assert first.verified and retry.verified, (first.error, retry.error)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(retry.body, retry.headers)
    assert first.headers["webhook-id"] == retry.headers["webhook-id"]


def test_a_replayed_delivery_is_refused_after_five_minutes(
        app, engine, desk, vault, incident, receiver, monkeypatch):
    """Each attempt carries the time it was signed: a receiver refuses a copy replayed
    later, and an attacker cannot sign a fresh time without the secret."""
    _, _, secret = _register(engine, desk, receiver)
    receiver.secret = secret
    _publish(engine, desk, vault, incident)
    _drain(app, engine, utcnow())
    (delivery,) = receiver.deliveries
    assert delivery.verified
    import standardwebhooks.webhooks as library

    class Later(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz or UTC) + timedelta(minutes=6)

    monkeypatch.setattr(library, "datetime", Later)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(delivery.body, delivery.headers)
    forged = dict(delivery.headers, **{"webhook-timestamp": str(int(Later.now().timestamp()))})
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(delivery.body, forged)


def test_an_endpoint_saved_before_standard_webhooks_also_gets_the_old_header():
    """The migration window: a secret without `whsec_` (endpoints saved before) signs both
    ways until it is rotated; receivers of either kind verify."""
    import hashlib
    import hmac
    from base64 import b64encode

    legacy = "kXq3-old-urlsafe-secret"
    body = '{"type": "incident.update"}'
    headers = webhook_lane.signed_headers(secret=legacy, message_id="msg_1", body=body)
    expected = "sha256=" + hmac.new(legacy.encode(), body.encode(), hashlib.sha256).hexdigest()
    assert headers["X-Lifeline-Signature"] == expected
    Webhook("whsec_" + b64encode(legacy.encode()).decode()).verify(body, headers)
    fresh = webhook_lane.signed_headers(secret=webhook_lane.new_secret(), message_id="msg_1",
                                        body=body)
    assert "X-Lifeline-Signature" not in fresh and "Idempotency-Key" not in fresh


def test_a_webhook_url_that_is_not_http_is_refused(engine, desk, incident, auth, make_staff,
                                                   client):
    with session_scope(engine) as session:
        account_id = session.exec(select(AffectedSite.account_id)).first()
        for bad in ("ftp://example.com/x", "file:///etc/passwd", "javascript:alert(1)", "x"):
            with pytest.raises(Invalid, match="http:// or https://"):
                endpoints.register_endpoint(session=session, desk=desk, actor=ACTOR,
                                            account_id=account_id, url=bad, now=utcnow())
    auth.login(make_staff("comms"))
    page = client.get("/console/webhooks").get_data(as_text=True)
    answer = client.post("/console/webhooks", data={
        "csrf_token": csrf_token_from(page), "account_id": account_id,
        "url": "file:///etc/passwd"})
    assert answer.status_code == 400
    assert "must be an http:// or https:// address" in answer.get_data(as_text=True)
    with session_scope(engine) as session:
        assert endpoints.endpoints(session=session) == []


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
        assert endpoints.endpoints(session=session) == []


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
    account_id, _, secret = _register(engine, desk, receiver)
    receiver.secret = secret
    _publish(engine, desk, vault, incident)
    receiver.fail["/hooks/lifeline"] = 100
    now = utcnow()
    for _ in range(outbox.MAX_ATTEMPTS):  # every retry fails
        now += timedelta(hours=2)
        _drain(app, engine, now)
    with session_scope(engine) as session:
        assert quarantine.quarantine_failing_webhooks(session=session, now=now) == [account_id]
    _publish(engine, desk, vault, incident, now=now)
    with session_scope(engine) as session:
        webhook_rows = list(session.exec(select(OutboxMessage).where(
            OutboxMessage.channel == "webhook")))
    assert len(webhook_rows) == 1  # the quarantined endpoint got nothing new
    _register(engine, desk, receiver)  # saved again
    with session_scope(engine) as session:
        (saved,) = endpoints.endpoints(session=session)
        assert saved.quarantined_at is None

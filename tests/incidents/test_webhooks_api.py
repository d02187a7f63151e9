"""Webhook endpoints through the API (`webhooks:write`): register, list, ping, rotate; each
refusal in the one error shape; another account's endpoint reads as one that does not exist.
Pings reach a real receiver on 127.0.0.1 that verifies them with `standardwebhooks`."""

from __future__ import annotations

import pytest
from sqlmodel import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from contacts.core.db import session_scope
from contacts.core.ids import new_id
from contacts.incidents.events import PingEvent
from contacts.vault.models import Account
from tests.delivery.receivers import StandardReceiver


@pytest.fixture
def receiver():
    made = StandardReceiver()
    yield made
    made.close()


@pytest.fixture
def app(make_app, receiver):
    return make_app(webhooks_allow_private_hosts=[receiver.host_port])


@pytest.fixture
def accounts(engine, sync_document):
    from tests.vault.fixtures import make_document

    sync_document(make_document(accounts=2, contacts_per_account=1))
    with session_scope(engine) as session:
        return list(session.exec(select(Account.id).order_by(Account.id)))


@pytest.fixture
def bearer(make_token):
    return {"Authorization": f"Bearer {make_token('webhooks:write')}"}


def _register(client, bearer, account_id, url):
    return client.post(f"/api/v1/accounts/{account_id}/webhooks", headers=bearer,
                       json={"url": url})


def _error(answer) -> dict:
    body = answer.get_json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return body["error"]


def test_an_endpoint_is_registered_listed_and_its_secret_shown_once(client, bearer, accounts,
                                                                    receiver):
    answer = _register(client, bearer, accounts[0], receiver.url("/a"))
    assert answer.status_code == 201, answer.get_json()
    made = answer.get_json()
    assert made["secret"].startswith("whsec_")
    assert made["endpoint"]["id"].startswith("whk_")
    assert made["endpoint"]["account_id"] == accounts[0]
    second = _register(client, bearer, accounts[0], receiver.url("/b")).get_json()
    listed = client.get(f"/api/v1/accounts/{accounts[0]}/webhooks", headers=bearer)
    assert listed.status_code == 200
    assert [e["id"] for e in listed.get_json()["endpoints"]] == [made["endpoint"]["id"],
                                                                 second["endpoint"]["id"]]
    assert made["secret"] not in listed.get_data(as_text=True)
    other = client.get(f"/api/v1/accounts/{accounts[1]}/webhooks", headers=bearer)
    assert other.get_json() == {"endpoints": []}


def test_a_ping_is_signed_and_verified_by_the_receiver(client, bearer, accounts, receiver):
    made = _register(client, bearer, accounts[0], receiver.url("/a")).get_json()
    receiver.secret = made["secret"]
    path = f"/api/v1/accounts/{accounts[0]}/webhooks/{made['endpoint']['id']}/ping"
    answer = client.post(path, headers=bearer)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"delivered": True, "error": None}
    (delivery,) = receiver.deliveries
    assert delivery.verified, delivery.error
    event = PingEvent.model_validate_json(delivery.body)
    assert event.type == "webhook.ping" and event.endpoint.id == made["endpoint"]["id"]
    receiver.fail["/a"] = 1
    failed = client.post(path, headers=bearer)
    assert failed.get_json() == {"delivered": False, "error": "the endpoint answered 503"}


def test_a_rotated_secret_signs_the_next_ping_and_the_old_one_no_longer_verifies(
        client, bearer, accounts, receiver):
    made = _register(client, bearer, accounts[0], receiver.url("/a")).get_json()
    base = f"/api/v1/accounts/{accounts[0]}/webhooks/{made['endpoint']['id']}"
    rotated = client.post(base + "/rotate", headers=bearer)
    assert rotated.status_code == 200
    secret = rotated.get_json()["secret"]
    assert secret.startswith("whsec_") and secret != made["secret"]
    assert rotated.get_json()["endpoint"]["rotated_at"] is not None
    receiver.secret = secret
    assert client.post(base + "/ping", headers=bearer).get_json()["delivered"] is True
    (delivery,) = receiver.deliveries
    assert delivery.verified
    with pytest.raises(WebhookVerificationError):
        Webhook(made["secret"]).verify(delivery.body, delivery.headers)


def test_a_token_without_the_scope_is_refused(client, make_token, accounts, receiver):
    read_only = {"Authorization": f"Bearer {make_token('read', 'incidents:write')}"}
    for answer in (_register(client, read_only, accounts[0], receiver.url()),
                   client.get(f"/api/v1/accounts/{accounts[0]}/webhooks", headers=read_only)):
        assert answer.status_code == 403
        assert "webhooks:write" in _error(answer)["message"]
    anonymous = client.get(f"/api/v1/accounts/{accounts[0]}/webhooks")
    assert anonymous.status_code == 401 and _error(anonymous)
    assert receiver.deliveries == []


def test_another_accounts_endpoint_reads_as_one_that_does_not_exist(client, bearer, accounts,
                                                                    receiver):
    made = _register(client, bearer, accounts[0], receiver.url("/a")).get_json()
    endpoint_id = made["endpoint"]["id"]
    for action in ("ping", "rotate"):
        for account_id in (accounts[1], new_id("acc")):
            answer = client.post(f"/api/v1/accounts/{account_id}/webhooks/{endpoint_id}/"
                                 f"{action}", headers=bearer)
            assert answer.status_code == 404, (action, answer.get_json())
            assert _error(answer)["code"] == "not_found"
        unknown = client.post(f"/api/v1/accounts/{accounts[0]}/webhooks/{new_id('whk')}/"
                              f"{action}", headers=bearer)
        assert unknown.status_code == 404
    assert receiver.deliveries == []  # nothing was pinged, and the secret is unchanged
    base = f"/api/v1/accounts/{accounts[0]}/webhooks/{endpoint_id}"
    receiver.secret = made["secret"]
    client.post(base + "/ping", headers=bearer)
    assert receiver.deliveries[0].verified
    assert _register(client, bearer, new_id("acc"), receiver.url()).status_code == 404


@pytest.mark.parametrize(("url", "words"), [
    ("ftp://example.com/x", "must be an http:// or https:// address"),
    ("http://127.0.0.1:9/hook", "address is loopback"),
    ("http://[::ffff:169.254.169.254]/", "link-local (IPv4 inside IPv6)"),
    ("http://evil@8.8.8.8/", "must not carry a user name or password"),
    ("http://%31%32%37.0.0.1/", "host is not a valid host name or address"),
])
def test_a_bad_url_is_refused_with_the_error_shape(client, bearer, accounts, url, words):
    answer = _register(client, bearer, accounts[0], url)
    assert answer.status_code == 400, answer.get_json()
    error = _error(answer)
    assert error["code"] == "invalid" and words in error["message"]
    assert client.get(f"/api/v1/accounts/{accounts[0]}/webhooks",
                      headers=bearer).get_json() == {"endpoints": []}


def test_a_malformed_body_is_refused_naming_the_field(client, bearer, accounts):
    for body in ({"url": 5}, {}, {"url": "https://8.8.8.8/", "secret": "mine"}):
        answer = client.post(f"/api/v1/accounts/{accounts[0]}/webhooks", headers=bearer,
                             json=body)
        assert answer.status_code == 422, body
        assert _error(answer)["code"] == "validation_failed"


def test_the_document_describes_the_events_endpoints_receive(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert set(document["webhooks"]) == {"incident.update", "webhook.ping"}
    update = document["webhooks"]["incident.update"]["post"]
    headers = {parameter["name"] for parameter in update["parameters"]}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    schema = update["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert schema == "#/components/schemas/IncidentUpdateEvent"
    stage = document["components"]["schemas"]["EventSite"]["properties"]["stage"]
    assert "validated_by_us" in stage["description"]

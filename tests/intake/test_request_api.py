"""Staff scripts read a support request by its reference over JSON: its states, the account
matched and the candidates, as IDs, never what the requester typed."""

from __future__ import annotations

import pytest
from sqlmodel import select

from contacts.core.db import session_scope
from contacts.vault.models import Contact
from tests.helpers import csrf_token_from


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def read_headers(make_token):
    return bearer(make_token("read"))


def verify_over_http(desk, client, reference: str, address: str) -> None:
    """Prove the address the way the requester does: the emailed code, typed in the page."""
    desk.deliver()
    page = client.get(f"/requests/{reference}/verify")
    answer = client.post(f"/requests/{reference}/verify", data={
        "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        "code": desk.code_for(address)})
    assert answer.status_code == 303, answer.get_data(as_text=True)


def test_the_read_follows_a_request_from_unverified_to_matched_to_verified(
        desk, desk_client, acme, read_headers):
    typed = {"email": "newcomer@acme.example", "message": "Our shop is down 4471",
             "site": "shop.acme.example", "name": "Nora Newcomer", "phone": "+1 415 555 4471",
             "severity": "high"}
    reference = desk.submit(desk_client, **typed).get_json()["reference"]
    url = f"/api/v1/requests/{reference}"

    received = desk_client.get(url, headers=read_headers)
    assert received.status_code == 200
    body = received.get_json()
    assert body["reference"] == reference and body["id"].startswith("req_")
    assert (body["status"], body["severity"], body["verification"]) == ("open", "high",
                                                                       "unverified")
    assert (body["trust_rank"], body["priority"]) == (2, 2)
    assert body["account_id"] is body["account_source"] is body["contact_id"] is None
    assert body["processed_at"] is None and body["verified_at"] is None
    assert body["candidates"] == []
    assert body["received_at"] and body["stored_at"]

    assert desk.process() == 1  # the matching job
    matched = desk_client.get(url, headers=read_headers).get_json()
    assert matched["processed_at"] is not None
    assert matched["account_id"] == acme["A-ACME"] and matched["account_source"] == "match"
    assert matched["verification"] == "unverified" and matched["contact_id"] is None
    top = matched["candidates"][0]
    assert top["account_id"] == acme["A-ACME"] and top["score"] >= 0.8
    assert "site hostname shop.acme.example" in top["reasons"]
    assert "email domain is a contact's domain" in top["reasons"]

    verify_over_http(desk, desk_client, reference, "newcomer@acme.example")
    verified = desk_client.get(url, headers=read_headers).get_json()
    # A verified address that is no contact of the account proves the address, not the right.
    assert verified["verification"] == "email_verified" and verified["trust_rank"] == 1
    assert verified["verified_at"] is not None and verified["contact_id"] is None
    assert verified["account_id"] == acme["A-ACME"]

    text = desk_client.get(url, headers=read_headers).get_data(as_text=True)
    # Nothing the requester typed (the site's hostname is in a reason as the vault knows it).
    for field in ("email", "message", "name", "phone"):
        assert typed[field] not in text, field


def test_a_verified_contact_of_the_matched_account_reads_as_authorized(
        desk, desk_client, acme, engine, read_headers):
    reference = desk.submit(desk_client, email="ada@acme.example", message="Everything is gone",
                            severity="normal").get_json()["reference"]
    desk.process()
    before = desk_client.get(f"/api/v1/requests/{reference}", headers=read_headers).get_json()
    assert before["account_id"] == acme["A-ACME"] and before["verification"] == "unverified"
    assert before["contact_id"] is None and before["priority"] == 3

    verify_over_http(desk, desk_client, reference, "ada@acme.example")
    after = desk_client.get(f"/api/v1/requests/{reference}", headers=read_headers).get_json()
    with session_scope(engine) as session:
        ada = session.exec(select(Contact.id).where(Contact.external_id == "C-ADA")).one()
    assert after["verification"] == "authorized" and after["trust_rank"] == 0
    assert after["contact_id"] == ada
    assert after["priority"] == 2  # a site admin's request moves up one


def test_a_reference_is_read_however_it_is_typed(desk, desk_client, read_headers):
    reference = desk.submit(desk_client, email="g@example.org", message="x").get_json()[
        "reference"]
    typed = reference.lower().replace("-", "")  # ll7kq29xhd
    response = desk_client.get(f"/api/v1/requests/{typed}", headers=read_headers)
    assert response.status_code == 200 and response.get_json()["reference"] == reference


def test_an_unknown_reference_is_404_and_a_malformed_one_400(desk_client, read_headers):
    unknown = desk_client.get("/api/v1/requests/LL-7KQ2-9XHD", headers=read_headers)
    assert unknown.status_code == 404
    assert unknown.get_json()["error"]["code"] == "not_found"
    for malformed in ("nope", "LL-7KQ2", "LL-7KQ2-9XHD-22", "req_123"):
        response = desk_client.get(f"/api/v1/requests/{malformed}", headers=read_headers)
        assert response.status_code == 400, malformed
        assert response.get_json()["error"]["code"] == "invalid"


def test_the_read_needs_a_token_with_the_read_scope(desk, desk_client, make_token):
    reference = desk.submit(desk_client, email="h@example.org", message="x").get_json()[
        "reference"]
    url = f"/api/v1/requests/{reference}"
    assert desk_client.get(url).status_code == 401
    wrong = desk_client.get(url, headers=bearer(make_token("contacts:write", "backups:write")))
    assert wrong.status_code == 403
    assert "'read'" in wrong.get_json()["error"]["message"]

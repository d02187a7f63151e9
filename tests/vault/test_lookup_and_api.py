"""Lookups by blind index, typed IDs refused by name, and the vault's API."""

import pytest
from sqlmodel import select

from contacts.core.audit import AuditEntry
from contacts.core.db import session_scope
from contacts.core.ids import new_id
from contacts.vault import service
from contacts.vault.models import Account


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def synced(sync_document, small_document):
    sync_document(small_document)
    return small_document["accounts"][0]["contacts"][0]


def test_lookup_by_email_ignores_case_and_spaces(engine, vault, synced):
    shouted = f"  {synced['email'].upper()}  "
    with session_scope(engine) as session:
        found = service.find_contacts(session=session, vault=vault, email=shouted)
    assert [row.external_id for row in found] == [synced["external_id"]]


def test_lookup_by_phone_accepts_any_formatting(engine, vault, synced):
    digits = "".join(ch for ch in synced["phone"] if ch.isdigit())  # 33 6 ...
    formatted = [synced["phone"], "+" + digits, f"+{digits[:2]} ({digits[2]}) {digits[3:]}",
                 "0" + digits[2:]]
    with session_scope(engine) as session:
        for typed in formatted:
            found = service.find_contacts(session=session, vault=service.Vault(
                vault.crypto, default_phone_region="FR"), phone=typed)
            assert [row.external_id for row in found] == [synced["external_id"]], typed


def test_lookup_by_domain_finds_every_contact_of_the_domain(engine, vault, synced):
    domain = synced["email"].split("@")[1].upper()
    with session_scope(engine) as session:
        found = service.find_contacts(session=session, vault=vault, domain=f"@{domain}")
    assert len(found) == 2


def test_the_lookup_api_answers_ids_only(client, make_token, synced):
    response = client.get(f"/api/v1/contacts/lookup?email={synced['email'].upper()}",
                          headers=bearer(make_token("read")))
    assert response.status_code == 200
    matches = response.get_json()["matches"]
    assert len(matches) == 1 and matches[0]["id"].startswith("ctc_")
    assert synced["email"] not in response.get_data(as_text=True)


def test_the_lookup_api_wants_exactly_one_key(client, make_token):
    response = client.get("/api/v1/contacts/lookup?email=a@b.c&phone=1",
                          headers=bearer(make_token("read")))
    assert response.status_code == 422
    assert "exactly one of email, phone or domain" in response.get_json()["error"]["message"]


def test_an_id_of_the_wrong_kind_is_refused_naming_both_kinds(client, make_token, app, synced):
    site_id = new_id("site")
    response = client.get(f"/api/v1/accounts/{site_id}/contacts",
                          headers=bearer(make_token("read")))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "wrong_kind"
    assert error["message"] == "expected an account ID (acc_...), got a site ID (site_...)"
    result = app.test_cli_runner().invoke(args=["contacts", "list", site_id])
    assert result.exit_code == 2
    assert result.output.strip() == ("Error: expected an account ID (acc_...), "
                                     "got a site ID (site_...)")


def test_the_contacts_api_decrypts_and_audits_each_read(client, make_token, engine, synced):
    with session_scope(engine) as session:
        account = session.exec(select(Account.id).where(Account.external_id == "A00000")).one()
    response = client.get(f"/api/v1/accounts/{account}/contacts",
                          headers=bearer(make_token("read")))
    assert response.status_code == 200
    body = response.get_json()
    assert body["contacts"][0]["email"] == synced["email"]
    assert body["contacts"][0]["sites"] == synced["sites"]
    with session_scope(engine) as session:
        read = session.exec(select(AuditEntry).where(AuditEntry.action == "contact.read")).one()
    assert read.target_id == account and read.detail["count"] == 2
    assert synced["email"] not in str(read.detail)


def test_the_sync_api_reports_and_needs_its_scope(client, make_token, small_document):
    read_only = client.post("/api/v1/sync", json=small_document,
                            headers=bearer(make_token("read")))
    assert read_only.status_code == 403
    response = client.post("/api/v1/sync", json=small_document,
                           headers=bearer(make_token("contacts:write")))
    assert response.status_code == 200
    assert response.get_json()["contacts"]["created"] == 6
    again = client.post("/api/v1/sync", json=small_document,
                        headers=bearer(make_token("contacts:write")))
    assert again.get_json()["contacts"]["unchanged"] == 6


def test_a_sync_body_of_the_wrong_shape_is_refused_with_each_problem(client, make_token):
    response = client.post("/api/v1/sync", json={"accounts": [{"name": "no id"}]},
                           headers=bearer(make_token("contacts:write")))
    assert response.status_code == 422
    fields = [problem["field"] for problem in response.get_json()["error"]["details"]]
    assert fields == ["accounts.0.external_id"]


def test_a_nul_character_in_a_synced_field_is_refused_naming_it(client, make_token, engine,
                                                                  small_document):
    """PostgreSQL cannot store NUL in text (it answered 500); every database refuses it."""
    small_document["accounts"][1]["sites"][0]["external_id"] += "\x00"
    response = client.post("/api/v1/sync", json=small_document,
                           headers=bearer(make_token("contacts:write")))
    assert response.status_code == 422
    problems = response.get_json()["error"]["details"]
    assert [(p["field"], p["message"]) for p in problems] == [
        ("accounts.1.sites.0.external_id", "Value error, must not contain a NUL character")]
    with session_scope(engine) as session:
        assert session.exec(select(Account)).first() is None

"""The vault's console pages: search, masked account pages, audited reveals, import."""

import io
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import event, update
from sqlmodel import select

from contacts.core.audit import AuditEntry
from contacts.core.db import session_scope, utcnow
from contacts.vault.models import Account, Contact
from tests.helpers import Auth, csrf_token_from
from tests.vault.fixtures import as_csv, make_document


@pytest.fixture
def document(sync_document):
    document = make_document(accounts=6, contacts_per_account=2)
    sync_document(document)
    return document


@pytest.fixture
def signed_in(client, make_staff):
    def sign_in(role="support"):
        Auth(client).login(make_staff(role))
        return client
    return sign_in


def account_id(engine, external_id):
    with session_scope(engine) as session:
        return session.exec(select(Account.id).where(Account.external_id == external_id)).one()


@pytest.mark.parametrize("typed", ["EMAIL", "PHONE", "@DOMAIN", "Acme 3 site 0", "acme 3 ltd",
                                   "https://acme00003-1.example.net/login"])
def test_support_finds_an_account_however_they_remember_it(signed_in, document, typed):
    contact = document["accounts"][3]["contacts"][1]
    query = {"EMAIL": contact["email"].upper(), "PHONE": contact["phone"].replace(" ", ""),
             "@DOMAIN": "@" + contact["email"].split("@")[1]}.get(typed, typed)
    page = signed_in().get("/console/accounts", query_string={"q": query})
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "Acme 3 Ltd" in body and "Acme 4 Ltd" not in body


def test_a_search_that_matches_nothing_says_so(signed_in, document):
    body = signed_in().get("/console/accounts?q=nobody@nowhere.example").get_data(as_text=True)
    assert "No account matches" in body


def test_the_account_list_runs_the_same_queries_for_6_accounts_or_60(signed_in, engine,
                                                                       sync_document, document):
    client = signed_in()

    def statements_for_listing():
        seen = []
        listener = lambda *args: seen.append(args[2])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            assert client.get("/console/accounts").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return len(seen)

    few = statements_for_listing()
    sync_document(make_document(accounts=60, contacts_per_account=1, seed=3))
    assert statements_for_listing() == few


def test_the_account_page_masks_contacts_and_a_reveal_needs_a_reason(signed_in, engine,
                                                                     document):
    client = signed_in("support")
    account = account_id(engine, "A00002")
    contact = document["accounts"][2]["contacts"][0]
    page = client.get(f"/console/accounts/{account}").get_data(as_text=True)
    assert contact["email"] not in page and contact["name"] not in page
    assert contact["email"][0] + "***@acme00002.example.net" in page
    contact_id = page.split('action="/console/contacts/')[1].split("/")[0]
    token = csrf_token_from(page)
    refused = client.post(f"/console/contacts/{contact_id}/reveal",
                          data={"reason": "", "csrf_token": token})
    assert refused.status_code == 400
    assert contact["email"] not in refused.get_data(as_text=True)
    shown = client.post(f"/console/contacts/{contact_id}/reveal",
                        data={"reason": "customer called about site 0", "csrf_token": token})
    assert shown.status_code == 200
    body = shown.get_data(as_text=True)
    assert contact["email"] in body and "this reading is in the audit log" in body
    with session_scope(engine) as session:
        entry = session.exec(select(AuditEntry).where(
            AuditEntry.action == "contact.revealed")).one()
    assert entry.target_id == contact_id
    assert entry.detail["reason"] == "customer called about site 0"
    assert entry.actor_kind == "staff"


def test_an_admin_imports_a_file_through_the_console(signed_in, engine):
    client = signed_in("admin")
    token = csrf_token_from(client.get("/console/import").get_data(as_text=True))
    csv_text = as_csv(make_document(accounts=3, contacts_per_account=2))
    lines = csv_text.splitlines()
    lines[2] = lines[2].replace("@", " at ", 1)
    response = client.post("/console/import", content_type="multipart/form-data", data={
        "file": (io.BytesIO("\n".join(lines).encode()), "contacts.csv"), "csrf_token": token})
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "<th scope=\"row\">contacts</th><td>5</td>" in body
    assert "line 3" in body and "email is not a valid address" in body
    wrong = client.post("/console/import", content_type="multipart/form-data", data={
        "file": (io.BytesIO(b"hello"), "notes.txt"), "csrf_token": token})
    assert wrong.status_code == 400 and "Upload a .csv or a .json file." in wrong.get_data(
        as_text=True)
    broken = client.post("/console/import", content_type="multipart/form-data", data={
        "file": (io.BytesIO(b'{"accounts": ['), "c.json"), "csrf_token": token})
    assert broken.status_code == 400 and "is not valid JSON" in broken.get_data(as_text=True)


def test_the_strict_console_import_stores_nothing_when_a_row_is_bad(signed_in, engine):
    client = signed_in("admin")
    token = csrf_token_from(client.get("/console/import").get_data(as_text=True))
    document = make_document(accounts=2, contacts_per_account=1)
    document["accounts"][1]["contacts"][0]["timezone"] = "Nowhere/Land"
    response = client.post("/console/import", content_type="multipart/form-data", data={
        "file": (io.BytesIO(json.dumps(document).encode()), "c.json"), "strict": "y",
        "csrf_token": token})
    assert response.status_code == 400
    assert "nothing imported (strict)" in response.get_data(as_text=True)
    with session_scope(engine) as session:
        assert session.exec(select(Account)).all() == []


def test_stale_accounts_are_listed(signed_in, engine, document):
    client = signed_in()

    def listed() -> set[str]:
        body = client.get("/console/stale-accounts").get_data(as_text=True)
        return set(re.findall(r"Acme \d+ Ltd", body))

    admins = {account["name"] for account in document["accounts"]
              if any(contact["role"] == "site_admin" for contact in account["contacts"])}
    everyone = {account["name"] for account in document["accounts"]}
    assert admins and listed() == everyone - admins  # synced admins count as confirmed
    with session_scope(engine) as session:  # half a year later, nobody confirmed since
        session.execute(update(Contact).values(
            last_confirmed_at=utcnow() - timedelta(days=200)))
    assert listed() == everyone

"""Deletions arriving by sync (the API, the CLI import, the console upload) go through the
bulk-delete guard: per kind, up to vault.bulk_delete_cap they are applied with an undo
record; above it they are held as a dry run (count, sample, a token bound to that set) and
only an admin's confirmation with the token and a reason applies them. The rest of the
document is stored either way."""

import copy
import io
import json

import pytest
from sqlmodel import select

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.services import services
from contacts.vault import deletions, service
from contacts.vault import sync as vault_sync
from contacts.vault.models import Account, BulkDeletion, Contact, Site
from contacts.vault.schemas import SyncDocument
from tests.helpers import Auth, csrf_token_from
from tests.vault.fixtures import make_document

CAP = 5


@pytest.fixture
def capped(make_app):
    return make_app(vault_bulk_delete_cap=CAP)


@pytest.fixture
def base(capped):
    """16 accounts, 24 sites, 32 contacts, synced."""
    document = make_document(accounts=16, contacts_per_account=2)
    sync(capped, document)
    return document


def sync(app, document):
    vault = service.Vault.from_settings(services(app).settings,
                                        services(app).crypto)
    entries = [vault_sync.AccountEntry.from_document(account, index) for index, account
               in enumerate(SyncDocument.model_validate(document).accounts)]
    with session_scope(services(app).engine) as session:
        return vault_sync.sync(session=session, vault=vault, actor=Actor.system("t"),
                               entries=entries, source="sync")


def deleting(base: dict, kind: str, count: int) -> tuple[dict, list[str]]:
    """A document deleting `count` sites or contacts, renaming account 0 and adding a
    contact to the last account: what else the same sync stores. Returns it and the
    external IDs it deletes."""
    document = copy.deepcopy(base)
    doomed = []
    for account in document["accounts"]:
        items = account["sites"] if kind == "site" else account["contacts"]
        for item in items:
            if len(doomed) < count:
                item["deleted"] = True
                doomed.append(item["external_id"])
        if kind == "site":  # contacts naming a deleted site would be refused: leave them out
            account["contacts"] = [contact for contact in account["contacts"]
                                   if not set(contact["sites"]) & set(doomed)]
    document["accounts"][0]["name"] = "Renamed Ltd"
    document["accounts"][-1]["contacts"].append({
        "external_id": "NEW-1", "name": "New Person", "email": "new.person@acme.example.net",
        "phone": "+33 6 11 22 33 44", "role": "billing", "locale": "fr-FR",
        "timezone": "Europe/Paris", "sites": []})
    assert len(doomed) == count
    return document, doomed


MODELS = {"site": Site, "contact": Contact}


def live(engine, kind: str, external_ids: list[str]) -> int:
    model = MODELS[kind]
    with session_scope(engine) as session:
        return len(session.exec(select(model.id).where(model.external_id.in_(external_ids),
                                                       model.deleted_at.is_(None))).all())


def other_data_stored(engine) -> bool:
    with session_scope(engine) as session:
        renamed = session.exec(select(Account).where(Account.name == "Renamed Ltd")).all()
        new = session.exec(select(Contact).where(Contact.external_id == "NEW-1")).all()
    return len(renamed) == 1 and len(new) == 1


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("kind", ["site", "contact"])
def test_deletions_at_the_cap_are_applied_with_an_undo_record(capped, make_token, base, kind):
    engine = services(capped).engine
    client = capped.test_client()
    document, doomed = deleting(base, kind, CAP)
    answer = client.post("/api/v1/sync", json=document,
                         headers=bearer(make_token("contacts:write")))
    assert answer.status_code == 200, answer.get_json()
    report = answer.get_json()
    assert report[kind + "s"]["deleted"] == CAP and report[kind + "s"]["held"] == 0
    [deletion] = report["deletions"]
    assert (deletion["kind"], deletion["state"], deletion["count"]) == (kind, "applied", CAP)
    assert deletion["token"] is None and deletion["restorable_until"]
    assert deletion["deletion_id"].startswith("del_")
    assert live(engine, kind, doomed) == 0 and other_data_stored(engine)

    restored = capped.test_cli_runner().invoke(args=["contacts", "undelete",
                                                     deletion["deletion_id"]])
    assert restored.exit_code == 0, restored.output
    assert f"restored {CAP} object(s)" in restored.output
    assert live(engine, kind, doomed) == CAP


@pytest.mark.parametrize("kind", ["site", "contact"])
def test_one_over_the_cap_is_held_and_the_rest_of_the_sync_is_stored(capped, make_token, base,
                                                                    kind):
    engine = services(capped).engine
    document, doomed = deleting(base, kind, CAP + 1)
    answer = capped.test_client().post("/api/v1/sync", json=document,
                                       headers=bearer(make_token("contacts:write")))
    assert answer.status_code == 200
    report = answer.get_json()
    assert report[kind + "s"]["deleted"] == 0 and report[kind + "s"]["held"] == CAP + 1
    [held] = report["deletions"]
    assert (held["kind"], held["state"], held["count"]) == (kind, "held", CAP + 1)
    assert len(held["sample"]) == 5 and held["token"] and held["expires_at"]
    assert {item["external_id"] for item in held["sample"]} <= set(doomed)
    if kind == "contact":
        assert all(item["label"] is None for item in held["sample"])  # no personal data
    assert len(held["ids"]) == CAP + 1
    assert live(engine, kind, doomed) == CAP + 1  # nothing deleted
    assert other_data_stored(engine)


def test_a_held_set_is_applied_only_by_an_admin_with_its_token_and_a_reason(capped, make_token,
                                                                           base):
    engine = services(capped).engine
    client, runner = capped.test_client(), capped.test_cli_runner()
    headers = bearer(make_token("contacts:write"))
    sites_doc, doomed_sites = deleting(base, "site", 4 * CAP)
    held = client.post("/api/v1/sync", json=sites_doc, headers=headers).get_json()
    [sites] = held["deletions"]
    assert sites["state"] == "held" and sites["count"] == 4 * CAP
    contacts_doc, doomed_contacts = deleting(base, "contact", CAP + 2)
    [contacts] = client.post("/api/v1/sync", json=contacts_doc,
                             headers=headers).get_json()["deletions"]
    assert contacts["state"] == "held"

    def confirm(deletion, token, ids=None, reason="decommissioning the test region"):
        return client.post("/api/v1/deletions/confirm", headers=headers, json={
            "kind": deletion["kind"], "ids": ids or deletion["ids"], "token": token,
            "reason": reason})

    # A token is not an admin, even with the right token and a reason.
    refused = confirm(sites, sites["token"])
    assert refused.status_code == 403
    assert "only an admin giving a reason" in refused.get_json()["error"]["message"]
    # Another set's token, and a subset with the right token.
    assert confirm(sites, contacts["token"]).status_code == 403
    assert confirm(sites, sites["token"], ids=sites["ids"][:-1]).status_code == 403
    other = runner.invoke(args=["contacts", "confirm-deletion", sites["deletion_id"],
                                "--token", contacts["token"], "--reason", "cleanup"])
    assert other.exit_code == 2
    assert other.output.strip().startswith("Error: this token was not given for this bulk")
    # An admin without a reason.
    no_reason = runner.invoke(args=["contacts", "confirm-deletion", sites["deletion_id"],
                                    "--token", sites["token"]])
    assert no_reason.exit_code == 2 and len(no_reason.output.strip().splitlines()) == 1
    assert "only an admin giving a reason may confirm it" in no_reason.output
    assert live(engine, "site", doomed_sites) == 4 * CAP

    done = runner.invoke(args=["contacts", "confirm-deletion", sites["deletion_id"],
                               "--token", sites["token"], "--reason", "region closed"])
    assert done.exit_code == 0, done.output
    assert f"deleted {4 * CAP} site(s)" in done.output
    assert live(engine, "site", doomed_sites) == 0
    assert live(engine, "contact", doomed_contacts) == CAP + 2  # the other set still waits
    again = runner.invoke(args=["contacts", "confirm-deletion", sites["deletion_id"],
                                "--token", sites["token"], "--reason", "region closed"])
    assert again.exit_code == 2 and "already confirmed" in again.output
    with session_scope(engine) as session:
        record = session.get(BulkDeletion, sites["deletion_id"])
        assert record.reason == "region closed" and record.confirmed_at is not None

    undone = client.post(f"/api/v1/deletions/{sites['deletion_id']}/undo", headers=headers)
    assert undone.status_code == 200 and undone.get_json()["restored"] == 4 * CAP
    assert live(engine, "site", doomed_sites) == 4 * CAP


def test_sites_and_contacts_of_one_sync_are_guarded_each(capped, base):
    engine = services(capped).engine
    document, doomed_sites = deleting(base, "site", CAP)
    contacts = [contact for account in document["accounts"]
                for contact in account["contacts"]][:CAP + 1]
    for contact in contacts:
        contact["deleted"] = True
    report = sync(capped, document)
    states = {(item.kind, item.state, item.count) for item in report.deletions}
    assert states == {("site", "applied", CAP), ("contact", "held", CAP + 1)}
    assert live(engine, "site", doomed_sites) == 0
    assert live(engine, "contact", [contact["external_id"] for contact in contacts]) == CAP + 1


def test_the_cli_import_reports_held_and_applied_deletions(capped, base, tmp_path):
    engine = services(capped).engine
    document, doomed = deleting(base, "contact", 3 * CAP)
    (tmp_path / "delete.json").write_text(json.dumps(document))
    result = capped.test_cli_runner().invoke(args=["contacts", "import",
                                                   str(tmp_path / "delete.json")])
    assert result.exit_code == 0, result.output
    assert f"held {3 * CAP} contact deletion(s): over the cap of {CAP}, nothing deleted" in \
        result.output
    assert "flask --app app contacts confirm-deletion del_" in result.output
    assert live(engine, "contact", doomed) == 3 * CAP and other_data_stored(engine)
    with session_scope(engine) as session:
        planned = session.exec(select(BulkDeletion)).all()
    assert [(row.kind, len(row.target_ids), row.confirmed_at) for row in planned] == [
        ("contact", 3 * CAP, None)]


def test_the_console_upload_shows_held_deletions_and_deletes_nothing(capped, make_staff, base):
    engine = services(capped).engine
    client = capped.test_client()
    Auth(client).login(make_staff("admin"))
    token = csrf_token_from(client.get("/console/import").get_data(as_text=True))
    document, doomed = deleting(base, "site", CAP + 1)
    response = client.post("/console/import", content_type="multipart/form-data", data={
        "file": (io.BytesIO(json.dumps(document).encode()), "delete.json"),
        "csrf_token": token})
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert f"{CAP + 1} site deletion(s) held" in body
    assert "contacts confirm-deletion del_" in body
    assert live(engine, "site", doomed) == CAP + 1 and other_data_stored(engine)


def test_a_sync_deletion_below_the_cap_is_undone_like_a_bulk_delete(capped, base):
    """The applied deletion's record is a confirmed bulk deletion: undo restores it once."""
    engine = services(capped).engine
    document, doomed = deleting(base, "contact", 2)
    [applied] = sync(capped, document).deletions
    vault = service.Vault.from_settings(services(capped).settings,
                                        services(capped).crypto)
    with session_scope(engine) as session:
        assert deletions.undo(session=session, vault=vault, actor=Actor.system("t"),
                              deletion_id=applied.deletion_id) == 2
    assert live(engine, "contact", doomed) == 2


def _held_by_sync(client, make_token, base, kind: str, count: int):
    document, doomed = deleting(base, kind, count)
    [held] = client.post("/api/v1/sync", json=document,
                         headers=bearer(make_token("contacts:write"))).get_json()["deletions"]
    assert held["state"] == "held"
    return held, doomed


def _console_confirm(client, deletion_id: str, **fields):
    token = csrf_token_from(client.get("/console/import").get_data(as_text=True))
    return client.post(f"/console/deletions/{deletion_id}/confirm",
                       data={"csrf_token": token, **fields})


def test_an_admin_confirms_a_held_sync_deletion_on_the_console(capped, make_token, make_staff,
                                                               base):
    from contacts.core.audit import AuditEntry

    engine = services(capped).engine
    client = capped.test_client()
    held, doomed = _held_by_sync(client, make_token, base, "site", 2 * CAP)
    Auth(client).login(make_staff("admin"))
    page = client.get("/console/import")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and "Held deletions" in body
    assert held["deletion_id"] in body and f"{2 * CAP} site(s)" in body
    assert sum(target in body for target in held["ids"]) == 5  # a sample of five
    assert held["token"] not in body

    refusals = [  # a wrong token, a changed one, no reason, no CSRF token
        _console_confirm(client, held["deletion_id"], token="x" * 30, reason="closing"),
        _console_confirm(client, held["deletion_id"], token=held["token"] + "x",
                         reason="closing"),
        _console_confirm(client, held["deletion_id"], token=held["token"], reason=" "),
        client.post(f"/console/deletions/{held['deletion_id']}/confirm",
                    data={"token": held["token"], "reason": "closing"})]
    assert [answer.status_code for answer in refusals] == [403, 403, 400, 400]
    assert "this token was not given for this bulk delete" in refusals[0].get_data(
        as_text=True)
    assert live(engine, "site", doomed) == 2 * CAP

    done = _console_confirm(client, held["deletion_id"], token=held["token"],
                            reason="region closed")
    assert done.status_code == 303
    assert live(engine, "site", doomed) == 0
    assert "Held deletions" not in client.get("/console/import").get_data(as_text=True)
    with session_scope(engine) as session:
        record = session.get(BulkDeletion, held["deletion_id"])
        assert record.reason == "region closed" and record.confirmed_by
        [entry] = session.exec(select(AuditEntry).where(
            AuditEntry.action == "bulk_delete.confirmed",
            AuditEntry.target_id == held["deletion_id"])).all()
        assert entry.actor_kind == "staff"
    again = _console_confirm(client, held["deletion_id"], token=held["token"],
                             reason="region closed")
    assert again.status_code == 409


def test_support_staff_cannot_see_or_confirm_held_deletions(capped, make_token, make_staff,
                                                           base):
    engine = services(capped).engine
    client = capped.test_client()
    held, doomed = _held_by_sync(client, make_token, base, "contact", CAP + 1)
    Auth(client).login(make_staff("support"))
    assert client.get("/console/import").status_code == 403
    token = csrf_token_from(client.get("/console/accounts").get_data(as_text=True))
    for action in ("confirm", "dismiss"):
        answer = client.post(f"/console/deletions/{held['deletion_id']}/{action}", data={
            "csrf_token": token, "token": held["token"], "reason": "closing"})
        assert answer.status_code == 403
    assert live(engine, "contact", doomed) == CAP + 1


def test_an_expired_or_dismissed_held_deletion_cannot_be_confirmed(capped, make_token,
                                                                   make_staff, base):
    from datetime import timedelta

    engine = services(capped).engine
    client = capped.test_client()
    first, doomed_sites = _held_by_sync(client, make_token, base, "site", CAP + 1)
    second, doomed_contacts = _held_by_sync(client, make_token, base, "contact", CAP + 3)
    Auth(client).login(make_staff("admin"))
    with session_scope(engine) as session:
        record = session.get(BulkDeletion, first["deletion_id"])
        record.expires_at = utcnow() - timedelta(minutes=1)
        session.add(record)
    body = client.get("/console/import").get_data(as_text=True)
    assert first["deletion_id"] not in body and second["deletion_id"] in body
    expired = _console_confirm(client, first["deletion_id"], token=first["token"],
                               reason="late")
    assert expired.status_code == 403 and "expired" in expired.get_data(as_text=True)

    csrf = csrf_token_from(body)
    dismissed = client.post(f"/console/deletions/{second['deletion_id']}/dismiss",
                            data={"csrf_token": csrf})
    assert dismissed.status_code == 303
    assert "Held deletions" not in client.get("/console/import").get_data(as_text=True)
    late = _console_confirm(client, second["deletion_id"], token=second["token"],
                            reason="after all")
    assert late.status_code == 403
    unknown = client.post("/console/deletions/del_nothing/dismiss", data={"csrf_token": csrf})
    assert unknown.status_code in (400, 404)
    assert live(engine, "site", doomed_sites) == CAP + 1
    assert live(engine, "contact", doomed_contacts) == CAP + 3

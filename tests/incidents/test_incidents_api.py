"""The incidents API runs an incident end to end without the console: open it, add sites,
publish updates (queued in the outbox exactly as the console's are), read it back."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from contacts.core.audit import AuditEntry
from contacts.core.db import session_scope, utcnow
from contacts.core.ids import new_id
from contacts.core.services import services
from contacts.delivery.models import OUTBOX_PAYLOAD, OutboxMessage
from contacts.incidents import progress, publishing, records
from contacts.vault import service as vault_service
from tests.incidents.conftest import run_fanout
from tests.vault.fixtures import make_document

COMPLETE = {"state": "identified",
            "what_happened": "A maintenance script deleted sites instead of apps.",
            "timeline": "Restores run in waves; all sites back within 4 days.",
            "data_loss": "Changes made after 07:33 UTC, at most 5 minutes.",
            "confidence_timeline": "medium", "confidence_restore": "high",
            "confidence_data_loss": "high"}


def _call(client, method, url, token, body=None):
    return client.open(url, method=method, json=body,
                       headers={"Authorization": f"Bearer {token}"})


def _promise(hours: float = 4) -> datetime:
    return utcnow().replace(microsecond=0) + timedelta(hours=hours)


def _open(client, token, title="Sites deleted by a maintenance script") -> str:
    answer = _call(client, "POST", "/api/v1/incidents", token,
                   {"title": title, "severity": "critical"})
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()["id"]


def _outbox(engine) -> list[OutboxMessage]:
    with session_scope(engine) as session:
        return list(session.exec(select(OutboxMessage)))


def test_a_drill_runs_an_incident_end_to_end(app, client, engine, make_token, sync_document):
    document = make_document(accounts=5, contacts_per_account=3)
    sync_document(document)
    writer, reader = make_token("incidents:write"), make_token("read")
    product = make_token("progress:write")
    with session_scope(engine) as session:
        first = vault_service.live_sites(session=session, refs=["S00000-0"])["S00000-0"]

    opened = _call(client, "POST", "/api/v1/incidents", writer,
                   {"title": "Sites deleted by a maintenance script", "severity": "critical"})
    assert opened.status_code == 201, opened.get_json()
    incident = opened.get_json()
    assert incident["id"].startswith("inc_") and incident["state"] == "investigating"
    assert incident["severity"] == "critical" and incident["late"] is False
    assert incident["next_update_due"] is None and incident["cadence_hours"] is None
    incident_id = incident["id"]

    # The sites of the first three accounts: one by its site ID, the others by external ID.
    added = _call(client, "POST", f"/api/v1/incidents/{incident_id}/sites", writer,
                  {"sites": [first.id, "S00001-0", "S00001-1", "S00002-0", "S00001-0"]})
    assert added.status_code == 200, added.get_json()
    assert added.get_json() == {"added": 4, "already_there": 0, "sites": 4, "accounts": 3}
    again = _call(client, "POST", f"/api/v1/incidents/{incident_id}/sites", writer,
                  {"sites": ["S00000-0"]})  # the same site as first.id
    assert again.get_json() == {"added": 0, "already_there": 1, "sites": 4, "accounts": 3}

    progress = _call(client, "POST", f"/api/v1/incidents/{incident_id}/progress", product,
                     {"sites": [{"site": "S00000-0", "stage": "validated_by_us"},
                                {"site": "S00001-0", "stage": "validated_by_us"}]})
    assert progress.status_code == 200 and progress.get_json()["restore_percentage"] == 50.0

    promised = _promise()
    published = _call(client, "POST", f"/api/v1/incidents/{incident_id}/updates", writer,
                      {**COMPLETE, "next_update_at": promised.isoformat(),
                       "cadence_hours": 0.5})
    assert published.status_code == 201, published.get_json()
    update = published.get_json()
    assert update["id"].startswith("upd_") and update["number"] == 1
    assert datetime.fromisoformat(update["next_update_at"]) == promised
    assert (update["accounts_affected"], update["sites_affected"]) == (3, 4)
    assert update["scope"].startswith("4 sites of 3 customer accounts")
    assert update["restore_percentage"] == 50.0 and update["restore_note"] is None
    assert update["confidence"] == {"timeline": "medium", "restore": "high",
                                    "data_loss": "high"}
    # Publishing answers at once; a job queues the audience after it.
    assert (update["recipients"], update["audience_queued"]) == (0, False)
    assert update["cadence_hours"] == 0.5 and update["late"] is False
    assert run_fanout(app) == 9  # 3 accounts x 3 contacts
    assert run_fanout(app) == 0  # nothing twice

    shown = _call(client, "GET", f"/api/v1/incidents/{incident_id}", reader)
    assert shown.status_code == 200, shown.get_json()
    detail = shown.get_json()
    assert detail["state"] == "identified" and detail["late"] is False
    assert datetime.fromisoformat(detail["next_update_due"]) == promised
    assert detail["cadence_hours"] == 0.5
    assert (detail["restore_percentage"], detail["sites"], detail["restored"],
            detail["accounts"]) == (50.0, 4, 2, 3)
    assert detail["by_stage"] == {"queued": 2, "data_restored": 0, "identity_restored": 0,
                                  "validated_by_us": 2, "validated_by_customer": 0}
    assert [(u["number"], u["id"], u["messages"], u["late"], u["recipients"],
             u["audience_queued"]) for u in detail["updates"]] == [
        (1, update["id"], {"queued": 9, "sent": 0, "failed": 0}, False, 9, True)]

    # One email per contact of the three accounts, and none to anyone else.
    cipher = services(app).crypto.cipher
    queued = _outbox(engine)
    assert {row.channel for row in queued} == {"email"}
    addresses = [json.loads(cipher.decrypt(row.payload_encrypted, context=OUTBOX_PAYLOAD))["to"]
                 for row in queued]
    assert sorted(addresses) == sorted(contact["email"] for account in document["accounts"][:3]
                                       for contact in account["contacts"])
    assert all(row.key.startswith(f"update:{update['id']}:") for row in queued)

    # The services recorded each step, under the token that made it.
    with session_scope(engine) as session:
        entries = list(session.exec(select(AuditEntry).where(
            AuditEntry.target_id == incident_id).order_by(AuditEntry.id)))
    assert [entry.action for entry in entries] == [
        "incident.created", "incident.sites_added", "incident.sites_added",
        "incident.update_published", "incident.cadence_set", "incident.update_queued"]
    assert {(entry.actor_kind, entry.actor_id[:4]) for entry in entries[:5]} == {
        ("token", "tok_")}
    assert len({entry.actor_id for entry in entries[:5]}) == 1
    assert entries[3].detail == {"update": update["id"]}
    assert (entries[5].actor_kind, entries[5].actor_id) == ("system", "fanout")
    assert entries[5].detail == {"update": update["id"], "recipients": 9}


def test_an_incomplete_update_is_refused_422_naming_every_missing_field(
        client, engine, make_token, incident):
    writer = make_token("incidents:write")
    answer = _call(client, "POST", f"/api/v1/incidents/{incident}/updates", writer,
                   {"state": "identified", "what_happened": "x"})
    assert answer.status_code == 422
    error = answer.get_json()["error"]
    assert error["code"] == "validation_failed"
    missing = ["timeline", "data_loss", "next_update_at", "confidence_timeline",
               "confidence_restore", "confidence_data_loss"]
    assert [problem["field"] for problem in error["details"]] == missing
    for name in missing:
        assert name in error["message"]
    assert "what_happened" not in error["message"]

    overridden = _call(client, "POST", f"/api/v1/incidents/{incident}/updates", writer,
                       {**COMPLETE, "next_update_at": _promise().isoformat(),
                        "restore_percentage": 80})
    assert overridden.status_code == 422
    assert [p["field"] for p in overridden.get_json()["error"]["details"]] == ["restore_note"]

    nothing = _call(client, "POST", f"/api/v1/incidents/{incident}/updates", writer, {})
    assert nothing.status_code == 422
    assert [p["field"] for p in nothing.get_json()["error"]["details"]] == [
        "what_happened", "timeline", "data_loss", "state", "next_update_at",
        "confidence_timeline", "confidence_restore", "confidence_data_loss"]

    detail = _call(client, "GET", f"/api/v1/incidents/{incident}", make_token("read"))
    assert detail.get_json()["updates"] == [] and detail.get_json()["state"] == "investigating"
    assert _outbox(engine) == []


def test_a_field_the_api_does_not_know_is_refused_not_ignored(client, make_token, incident):
    answer = _call(client, "POST", f"/api/v1/incidents/{incident}/updates",
                   make_token("incidents:write"),
                   {**COMPLETE, "next_update_at": _promise().isoformat(),
                    "expected_data_loss": "none"})
    assert answer.status_code == 422
    assert "expected_data_loss" in answer.get_json()["error"]["message"]


def test_a_site_of_another_kind_or_unknown_is_refused_naming_it_and_nothing_is_added(
        client, engine, make_token, sync_document):
    sync_document(make_document(accounts=4, contacts_per_account=1))
    writer, reader = make_token("incidents:write"), make_token("read")
    incident_id = _open(client, writer)
    with session_scope(engine) as session:
        account_id = vault_service.live_sites(session=session,
                                              refs=["S00001-0"])["S00001-0"].account_id

    other_kind = _call(client, "POST", f"/api/v1/incidents/{incident_id}/sites", writer,
                       {"sites": ["S00000-0", account_id]})
    assert other_kind.status_code == 400
    error = other_kind.get_json()["error"]
    assert error["code"] == "wrong_kind" and error["details"] == {"wrong_kind": [account_id]}
    assert f"{account_id}: expected a site ID (site_...), got an account ID" in error["message"]

    unknown = _call(client, "POST", f"/api/v1/incidents/{incident_id}/sites", writer,
                    {"sites": ["S00000-0", "S99999-9", "A00003"]})  # A00003: an account's
    assert unknown.status_code == 400
    error = unknown.get_json()["error"]
    assert error["details"] == {"unknown": ["S99999-9", "A00003"]}
    assert "S99999-9" in error["message"] and "A00003" in error["message"]

    detail = _call(client, "GET", f"/api/v1/incidents/{incident_id}", reader).get_json()
    assert (detail["sites"], detail["accounts"]) == (0, 0)
    with session_scope(engine) as session:
        assert progress.affected_sites(session=session, incident_id=incident_id) == []
    no_sites = _call(client, "POST", f"/api/v1/incidents/{incident_id}/updates", writer,
                     {**COMPLETE, "next_update_at": _promise().isoformat()})
    assert no_sites.status_code == 409
    assert "add the affected sites" in no_sites.get_json()["error"]["message"]


def test_each_operation_needs_its_scope(client, engine, make_token, incident):
    read, progress = make_token("read"), make_token("progress:write")
    writer = make_token("incidents:write")
    refused = [
        _call(client, "POST", "/api/v1/incidents", read,
              {"title": "Not opened", "severity": "minor"}),
        _call(client, "POST", f"/api/v1/incidents/{incident}/sites", progress,
              {"sites": ["S00000-0"]}),
        _call(client, "POST", f"/api/v1/incidents/{incident}/updates", read,
              {**COMPLETE, "next_update_at": _promise().isoformat()}),
    ]
    for answer in refused:
        assert answer.status_code == 403
        assert "'incidents:write' scope" in answer.get_json()["error"]["message"]
    reading = _call(client, "GET", f"/api/v1/incidents/{incident}", writer)
    assert reading.status_code == 403 and "'read' scope" in reading.get_json()["error"]["message"]
    with session_scope(engine) as session:
        assert [found.id for found in records.list_incidents(session=session)] == [incident]
        assert publishing.updates_of(session=session, incident_id=incident) == []


def test_an_incident_is_opened_with_its_start_time_and_checked_fields(client, make_token):
    writer = make_token("incidents:write")
    started = "2025-03-02T07:33:00+01:00"
    answer = _call(client, "POST", "/api/v1/incidents", writer,
                   {"title": "  Sites deleted  ", "severity": "major", "started_at": started})
    assert answer.status_code == 201
    assert answer.get_json()["title"] == "Sites deleted"
    assert datetime.fromisoformat(answer.get_json()["started_at"]) == datetime.fromisoformat(
        started)
    for body, named in [({"title": "x", "severity": "apocalyptic"}, "severity"),
                        ({"title": "x", "severity": "minor", "state": "identified"}, "state"),
                        ({"title": "x", "severity": "minor",
                          "started_at": "2025-03-02T07:33:00"}, "started_at"),
                        ({"severity": "minor"}, "title")]:
        refused = _call(client, "POST", "/api/v1/incidents", writer, body)
        assert refused.status_code == 422, body
        assert named in refused.get_json()["error"]["message"], body


def test_a_missed_promise_shows_late_until_resolved(app, client, make_token, incident):
    writer, reader = make_token("incidents:write"), make_token("read")
    missed = utcnow().replace(microsecond=0) - timedelta(minutes=1)
    first = _call(client, "POST", f"/api/v1/incidents/{incident}/updates", writer,
                  {**COMPLETE, "next_update_at": missed.isoformat(), "cadence_hours": 2})
    assert first.status_code == 201 and first.get_json()["late"] is True
    detail = _call(client, "GET", f"/api/v1/incidents/{incident}", reader).get_json()
    assert detail["late"] is True and detail["updates"][0]["late"] is True
    assert detail["cadence_hours"] == 2

    resolved = _call(client, "POST", f"/api/v1/incidents/{incident}/updates", writer,
                     {**COMPLETE, "state": "resolved", "timeline": "Every site is restored.",
                      "confidence_timeline": "high", "cadence_hours": None})
    assert resolved.status_code == 201, resolved.get_json()
    assert resolved.get_json()["number"] == 2 and resolved.get_json()["next_update_at"] is None
    assert resolved.get_json()["cadence_hours"] is None
    assert run_fanout(app) == 2 * 75
    detail = _call(client, "GET", f"/api/v1/incidents/{incident}", reader).get_json()
    assert detail["state"] == "resolved" and detail["next_update_due"] is None
    assert detail["late"] is False and detail["cadence_hours"] is None
    assert [(u["number"], u["late"], u["recipients"]) for u in detail["updates"]] == [
        (2, False, 75), (1, True, 75)]  # the second came after the first's promise


@pytest.mark.parametrize("method, path, body", [
    ("GET", "", None), ("POST", "/sites", {"sites": ["S00000-0"]}),
    ("POST", "/updates", {**COMPLETE, "state": "resolved"})])
def test_an_unknown_incident_is_404(client, make_token, method, path, body):
    token = make_token("read", "incidents:write")
    answer = _call(client, method, f"/api/v1/incidents/{new_id('inc')}{path}", token, body)
    assert answer.status_code == 404
    assert answer.get_json()["error"]["code"] == "not_found"
    other = _call(client, method, f"/api/v1/incidents/{new_id('acc')}{path}", token, body)
    assert other.status_code == 400 and other.get_json()["error"]["code"] == "wrong_kind"


def test_a_nul_character_is_refused_before_it_reaches_the_database(client, make_token,
                                                                   incident):
    writer = make_token("incidents:write")
    for url, body, field in [
            ("/api/v1/incidents", {"title": "a\x00b", "severity": "minor"}, "title"),
            (f"/api/v1/incidents/{incident}/sites", {"sites": ["S00000-0\x00"]}, "sites.0"),
            (f"/api/v1/incidents/{incident}/updates",
             {**COMPLETE, "next_update_at": _promise().isoformat(), "timeline": "\x00"},
             "timeline"),
            (f"/api/v1/incidents/{incident}/progress",
             {"sites": [{"site": "S00000-0\x00", "stage": "queued"}]}, "sites.0.site")]:
        token = make_token("progress:write") if url.endswith("/progress") else writer
        answer = _call(client, "POST", url, token, body)
        assert answer.status_code == 422, (url, answer.get_json())
        assert f"{field}: Value error, must not contain a NUL" in answer.get_json()["error"][
            "message"], url

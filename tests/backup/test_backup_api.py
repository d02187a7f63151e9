"""Snapshots and restore drills over HTTP, for drill scripts: the same files and checks as
`flask backup create` and `flask backup drill`, names that never reach outside the backup
folder, and results that /healthz reports."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from contacts.backup.models import BackupDrill
from contacts.backup.sealed import verify_snapshot
from contacts.backup.snapshot import SUFFIX
from contacts.core.audit import AuditEntry
from contacts.core.db import session_scope
from contacts.core.services import services
from tests.vault.fixtures import make_document


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def document(sync_document):
    document = make_document(accounts=20, contacts_per_account=3)
    sync_document(document)
    return document


@pytest.fixture
def backup_dir(app) -> Path:
    return Path(services(app).settings.backup_dir)


@pytest.fixture
def headers(make_token):
    return bearer(make_token("backups:write"))


def drills(engine) -> list[BackupDrill]:
    with session_scope(engine) as session:
        found = list(session.exec(select(BackupDrill)))
        session.expunge_all()
        return found


def test_the_api_writes_a_snapshot_whose_manifest_verifies(app, client, engine, document,
                                                           backup_dir, headers):
    response = client.post("/api/v1/backups", headers=headers)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert set(body) == {"name", "rows", "tables", "created_at", "seconds"}
    assert body["name"].startswith("lifeline-") and body["name"].endswith(SUFFIX)
    assert "/" not in body["name"] and str(backup_dir) not in response.get_data(as_text=True)
    (snapshot,) = backup_dir.glob(f"*{SUFFIX}")
    assert snapshot.name == body["name"]
    key = services(app).settings.secrets.backup_key  # the CLI's key
    manifest = verify_snapshot(snapshot, key)
    assert body["rows"] == manifest.rows and body["tables"] == len(manifest.tables)
    assert manifest.tables["contact"]["rows"] == 60 and manifest.tables["account"]["rows"] == 20
    assert body["created_at"].startswith(manifest.created_at[:19])
    assert body["seconds"] >= 0
    with session_scope(engine) as session:
        (entry,) = session.exec(select(AuditEntry)
                                .where(AuditEntry.action == "backup.created")).all()
    assert entry.actor_kind == "token" and entry.detail["snapshot"] == body["name"]


def test_the_drill_restores_the_latest_snapshot_and_healthz_reports_it(
        client, engine, document, headers):
    before = client.get("/healthz").get_json()["backups"]
    assert before["ok"] is False and before["last_good_drill"] is None
    taken = client.post("/api/v1/backups", headers=headers).get_json()

    response = client.post("/api/v1/backups/drill", headers=headers)  # no body: the latest
    assert response.status_code == 200, response.get_json()
    drill = response.get_json()
    assert drill["snapshot"] == taken["name"] and drill["ok"] is True
    assert drill["rows"] == taken["rows"]
    assert drill["fields"] >= 60 * 3  # each contact's name, email and phone decrypt
    assert f"{taken['rows']} rows" in drill["detail"] and drill["seconds"] > 0

    health = client.get("/healthz").get_json()["backups"]
    assert health["ok"] is True and health["snapshot"] == taken["name"]
    assert health["age_hours"] < 0.1
    (recorded,) = drills(engine)
    assert recorded.ok and recorded.rows == taken["rows"]
    with session_scope(engine) as session:
        (entry,) = session.exec(select(AuditEntry)
                                .where(AuditEntry.action == "backup.drilled")).all()
    assert entry.actor_kind == "token" and entry.detail["ok"] is True


def test_a_snapshot_named_in_the_body_is_the_one_drilled(client, document, headers):
    first = client.post("/api/v1/backups", headers=headers).get_json()
    client.post("/api/v1/backups", headers=headers)
    response = client.post("/api/v1/backups/drill", headers=headers,
                           json={"snapshot": first["name"]})
    assert response.status_code == 200
    assert response.get_json()["snapshot"] == first["name"]
    assert response.get_json()["ok"] is True


@pytest.mark.parametrize("name", [
    "../outside.llbackup", "../backups/../outside.llbackup", "/etc/passwd", "..", ".",
    "sub/lifeline-20260101T000000-abcdef.llbackup", "lifeline-x.llbackup/../../outside.llbackup",
    "..\\outside.llbackup", ".partial-abcdef", "lifeline-20260101T000000-abcdef.llbackup\x00",
    "outside.llbackup", ""])
def test_a_name_that_is_not_a_snapshots_file_name_is_refused(client, engine, document,
                                                             backup_dir, tmp_path, headers,
                                                             name):
    taken = client.post("/api/v1/backups", headers=headers).get_json()
    # A real snapshot just outside the folder, for a traversal to find.
    (tmp_path / "outside.llbackup").write_bytes((backup_dir / taken["name"]).read_bytes())
    response = client.post("/api/v1/backups/drill", headers=headers, json={"snapshot": name})
    assert response.status_code == 400, (name, response.get_json())
    assert response.get_json()["error"]["code"] == "invalid"
    assert str(tmp_path) not in response.get_data(as_text=True)
    assert drills(engine) == []


def test_an_unknown_snapshot_is_404(client, engine, backup_dir, headers):
    nothing_yet = client.post("/api/v1/backups/drill", headers=headers, json={})
    assert nothing_yet.status_code == 404
    assert str(backup_dir) not in nothing_yet.get_data(as_text=True)
    client.post("/api/v1/backups", headers=headers)
    unknown = client.post("/api/v1/backups/drill", headers=headers,
                          json={"snapshot": "lifeline-20990101T000000-abcdef.llbackup"})
    assert unknown.status_code == 404
    assert unknown.get_json()["error"]["code"] == "not_found"
    assert drills(engine) == []


def test_a_damaged_snapshot_drills_as_failed_and_healthz_says_so(client, document, backup_dir,
                                                                 headers):
    taken = client.post("/api/v1/backups", headers=headers).get_json()
    snapshot = backup_dir / taken["name"]
    data = bytearray(snapshot.read_bytes())
    data[-10] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    response = client.post("/api/v1/backups/drill", headers=headers,
                           json={"snapshot": taken["name"]})
    assert response.status_code == 200
    drill = response.get_json()
    assert drill["ok"] is False and drill["rows"] == 0
    assert drill["detail"].startswith("the snapshot failed authentication")
    assert client.get("/healthz").get_json()["backups"]["ok"] is False


def test_a_drill_body_with_unknown_fields_is_refused(client, headers):
    response = client.post("/api/v1/backups/drill", headers=headers,
                           json={"snapshot": None, "database_url": "sqlite:////tmp/x.db"})
    assert response.status_code == 422


def test_backups_need_a_token_with_the_backups_scope(client, make_token, backup_dir):
    others = bearer(make_token("read", "contacts:write", "audit:read"))
    for url in ("/api/v1/backups", "/api/v1/backups/drill"):
        assert client.post(url).status_code == 401
        refused = client.post(url, headers=others)
        assert refused.status_code == 403
        assert "'backups:write'" in refused.get_json()["error"]["message"]
    assert not list(backup_dir.glob(f"*{SUFFIX}"))

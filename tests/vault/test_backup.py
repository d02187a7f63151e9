"""Snapshots outside the database: create, restore into an empty PostgreSQL database with
equal checksums, refuse a tampered file, and drills whose result /healthz shows."""

import json
from pathlib import Path

import pytest

from contacts.db import make_engine
from contacts.vault import backup
from tests.vault.fixtures import make_document, personal_values


@pytest.fixture
def document(sync_document):
    document = make_document(accounts=40, contacts_per_account=3)
    sync_document(document)
    changed = json.loads(json.dumps(document))
    changed["accounts"][0]["contacts"][0]["name"] = "Renamed Before Backup"
    changed["accounts"][1]["contacts"][1]["deleted"] = True
    sync_document(changed)  # versions: created, updated, deleted
    return document


def create(app, directory: Path) -> Path:
    result = app.test_cli_runner().invoke(args=["backup", "create", "--to", str(directory)])
    assert result.exit_code == 0, result.output
    (snapshot,) = directory.glob("*.llbackup")
    return snapshot


def test_a_snapshot_restores_into_an_empty_postgresql_database_with_equal_checksums(
        app, engine, document, tmp_path, empty_postgresql_url):
    source = backup.database_checksums(engine)  # what the snapshot is taken of
    snapshot = create(app, tmp_path / "backups")
    assert source["contact"]["rows"] == 120 and source["contact_version"]["rows"] == 122
    result = app.test_cli_runner().invoke(
        args=["backup", "restore", str(snapshot), "--database-url", empty_postgresql_url])
    assert result.exit_code == 0, result.output
    assert "every table matches its checksum" in result.output
    restored = make_engine(empty_postgresql_url)
    try:
        assert backup.database_checksums(restored) == source
        again = app.test_cli_runner().invoke(
            args=["backup", "restore", str(snapshot), "--database-url", empty_postgresql_url])
        assert again.exit_code == 2
        assert "the target database is not empty" in again.output
    finally:
        restored.dispose()


def test_a_snapshot_holds_no_plaintext_personal_data(app, document, tmp_path):
    stored = create(app, tmp_path / "backups").read_bytes()
    assert b"acme00000" not in stored  # not even business data is readable
    assert [value for value in personal_values(document) if value.encode() in stored] == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "append"])
def test_a_damaged_snapshot_is_refused_with_a_clear_error(app, document, tmp_path, damage):
    snapshot = create(app, tmp_path / "backups")
    data = bytearray(snapshot.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        del data[-100:]
    else:
        data += b"x"
    snapshot.write_bytes(bytes(data))
    result = app.test_cli_runner().invoke(args=["backup", "verify", str(snapshot)])
    assert result.exit_code == 2
    said = {"flip": "Error: the snapshot failed authentication at chunk ",
            "truncate": "Error: the snapshot ",
            "append": "Error: the snapshot has bytes after its last chunk"}[damage]
    assert result.output.strip().startswith(said), result.output


def test_a_snapshot_made_with_another_backup_key_is_refused(app, make_app, document,
                                                             tmp_path):
    snapshot = create(app, tmp_path / "backups")
    with pytest.raises(backup.SnapshotRefused, match="made with another backup key"):
        backup.verify_snapshot(snapshot, b"\x00" * 32)


def test_a_drill_records_its_result_and_health_shows_it(app, client, document, tmp_path):
    create(app, tmp_path / "backups")
    result = app.test_cli_runner().invoke(args=["backup", "drill", "--from",
                                                str(tmp_path / "backups")])
    assert result.exit_code == 0, result.output
    assert " passed in " in result.output and "encrypted fields decrypt" in result.output
    report = client.get("/healthz").get_json()
    assert report["status"] == "ok"
    assert report["backups"]["ok"] is True and report["backups"]["age_hours"] < 0.1


def test_a_failed_drill_is_recorded_and_exits_2(app, client, document, tmp_path):
    snapshot = create(app, tmp_path / "backups")
    data = bytearray(snapshot.read_bytes())
    data[-10] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    result = app.test_cli_runner().invoke(args=["backup", "drill", "--from",
                                                str(tmp_path / "backups")])
    assert result.exit_code == 2
    assert "drill failed: the snapshot failed authentication" in result.output
    assert client.get("/healthz").get_json()["backups"]["ok"] is False

"""Snapshots outside the database: create, restore into an empty PostgreSQL database with
equal checksums, refuse a tampered file, and drills whose result /healthz shows."""

import contextlib
import json
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from contacts.backup import canonical
from contacts.backup.canonical import SnapshotRefused
from contacts.backup.restore import restore_snapshot
from contacts.backup.sealed import verify_snapshot
from contacts.backup.snapshot import (
    _consistent_read,
    backed_up_tables,
    count_rows,
    create_snapshot,
    database_checksums,
    latest_snapshot,
    prune_snapshots,
    snapshots_in,
)
from contacts.core.db import make_engine, utcnow
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
    source = database_checksums(engine)  # what the snapshot is taken of
    snapshot = create(app, tmp_path / "backups")
    assert source["contact"]["rows"] == 120 and source["contact_version"]["rows"] == 122
    result = app.test_cli_runner().invoke(
        args=["backup", "restore", str(snapshot), "--database-url", empty_postgresql_url])
    assert result.exit_code == 0, result.output
    assert "every table matches its checksum" in result.output
    restored = make_engine(empty_postgresql_url)
    try:
        assert database_checksums(restored) == source
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
    with pytest.raises(SnapshotRefused, match="made with another backup key"):
        verify_snapshot(snapshot, b"\x00" * 32)


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


# -- the canonical form, whichever backend reads or writes -----------------------------------

AWKWARD_TEXT = 'quote " backslash \\ tab \t newline \n cr \r ctl \x01 del \x7f é ü 日本 🙂 \u2028'


def awkward_rows(engine):
    """Rows whose values test every column kind's canonical form: times with and without
    microseconds (and at the ends of the range), booleans, JSON values, NULLs, odd text."""
    from datetime import UTC, datetime

    from sqlalchemy import insert
    from sqlmodel import SQLModel

    tables = SQLModel.metadata.tables
    whole = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(insert(tables["staff_user"]), [
            {"id": "stf_awkward_1", "email_encrypted": AWKWARD_TEXT, "email_index": "i1",
             "role": "admin", "password_hash": "h", "is_active": True, "session_version": 7,
             "created_at": whole, "last_login_at": None},
            {"id": "stf_awkward_2", "email_encrypted": "e", "email_index": "i2",
             "role": "viewer", "password_hash": "h", "is_active": False,
             "session_version": -2147483648,
             "created_at": datetime(1, 1, 1, tzinfo=UTC),
             "last_login_at": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)}])
        connection.execute(insert(tables["audit_log"]), [
            {"at": whole.replace(microsecond=1), "actor_kind": "system", "actor_id": None,
             "action": "awkward", "detail": {"z": 1, "a": [1, 2.5, None, True, False, "é\n"],
                                             "nested": {"b": {}, "a": []}, "text": AWKWARD_TEXT,
                                             "big": 2 ** 53 + 1}},
            {"at": whole.replace(microsecond=999999), "actor_kind": "system",
             "actor_id": "x", "action": "empty", "detail": {}}])
        connection.execute(insert(tables["api_token"]), [  # text and times only
            {"id": "tok_awkward", "name": AWKWARD_TEXT, "prefix": "p", "secret_hash": "s",
             "scopes": "", "created_by": "x", "created_at": whole,
             "expires_at": whole.replace(microsecond=123456), "last_used_at": None,
             "revoked_at": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)}])
        connection.execute(insert(tables["bulk_deletion"]), [
            {"id": "del_awkward", "kind": "contact", "target_ids": ["ctc_1", "ctc_2"],
             "targets_digest": "d", "token_hash": "t", "reason": AWKWARD_TEXT,
             "planned_by": "x", "planned_at": whole.replace(microsecond=500000),
             "expires_at": whole.replace(microsecond=10), "confirmed_at": None}])


def reference_checksums(engine) -> dict[str, dict]:
    """The checksum definition spelled out through SQLAlchemy's own result processing: each
    row a compact JSON list, times as UTC ISO 8601, JSON columns as their JSON value."""
    import hashlib
    from datetime import UTC, datetime

    from sqlalchemy import select

    figures = {}
    with engine.connect() as connection:
        for table in backed_up_tables():
            digest, rows = hashlib.sha256(), 0
            query = select(*table.columns).order_by(*table.primary_key.columns)
            for row in connection.execute(query):
                values = [value.astimezone(UTC).isoformat() if isinstance(value, datetime)
                          else value for value in row]
                digest.update(json.dumps(values, separators=(",", ":"),
                                         ensure_ascii=False).encode() + b"\n")
                rows += 1
            figures[table.name] = {"rows": rows, "sha256": digest.hexdigest()}
    return figures


def test_checksums_follow_the_canonical_form_across_backends(
        engine, document, tmp_path, empty_postgresql_url, monkeypatch):
    from contacts.core.schema import head_revision, upgrade_database

    awkward_rows(engine)
    with engine.connect() as connection:  # SQLite builds the lines itself
        assert canonical._lines_in_database(connection, ["text", "int", "time"]) == (
            engine.dialect.name == "sqlite")
    source = database_checksums(engine)
    assert source == reference_checksums(engine)
    with monkeypatch.context() as patched:  # and Python gives the very same lines
        patched.setattr(canonical, "_lines_in_database", lambda connection, kinds: False)
        assert database_checksums(engine) == source
    assert source["staff_user"]["rows"] == 2 and source["audit_log"]["rows"] >= 2
    key = b"\x07" * 32
    snapshot, manifest = create_snapshot(engine=engine, backup_key=key,
                                                directory=tmp_path / "backups",
                                                revision=head_revision())
    assert manifest.tables == source
    assert verify_snapshot(snapshot, key).tables == source
    for url in (f"sqlite:///{tmp_path / 'restored.db'}", empty_postgresql_url):
        target = make_engine(url)
        try:
            upgrade_database(target)
            restore_snapshot(path=snapshot, backup_key=key, engine=target,
                                    head_revision=head_revision())
            assert database_checksums(target) == source
            assert reference_checksums(target) == source
        finally:
            target.dispose()


def test_a_snapshot_reads_every_table_at_one_point_in_time(engine, document):
    from sqlalchemy import func, select

    from contacts.core.audit import Actor, record
    from contacts.core.db import session_scope

    audit_log = SQLModel.metadata.tables["audit_log"]
    with _consistent_read(engine) as connection:
        before = connection.execute(select(func.count()).select_from(audit_log)).scalar_one()
        with session_scope(engine) as session:
            record(session, Actor.system("t"), "written.meanwhile")
        after = connection.execute(select(func.count()).select_from(audit_log)).scalar_one()
    assert after == before


def schema_of(engine) -> dict:
    """Every table's indexes, unique constraints and foreign keys, as the database has them."""
    from sqlalchemy import inspect

    inspector = inspect(engine)
    described = {}
    for name in sorted(inspector.get_table_names()):
        described[name] = (
            sorted((index["name"], tuple(index["column_names"]), bool(index["unique"]))
                   for index in inspector.get_indexes(name)),
            sorted((unique["name"] or "", tuple(unique["column_names"]))
                   for unique in inspector.get_unique_constraints(name)),
            sorted((key["name"] or "", tuple(key["constrained_columns"]), key["referred_table"],
                    tuple(key["referred_columns"]))
                   for key in inspector.get_foreign_keys(name)))
    return described


@pytest.mark.parametrize("target", ["sqlite", "postgresql"])
def test_a_restore_leaves_the_schema_as_migrated_and_a_refused_one_leaves_it_empty(
        engine, document, tmp_path, empty_postgresql_url, target):
    from contacts.core.schema import head_revision, upgrade_database

    key = b"\x05" * 32
    snapshot, manifest = create_snapshot(engine=engine, backup_key=key,
                                                directory=tmp_path / "backups",
                                                revision=head_revision())
    url = f"sqlite:///{tmp_path / 'restored.db'}" if target == "sqlite" else empty_postgresql_url
    restored = make_engine(url)
    try:
        upgrade_database(restored)
        migrated = schema_of(restored)
        assert any(indexes for indexes, _, _ in migrated.values())
        with pytest.raises(SnapshotRefused, match="made at schema revision"):
            restore_snapshot(path=snapshot, backup_key=key, engine=restored,
                                    head_revision="not-this-one")
        assert count_rows(restored) == 0
        assert schema_of(restored) == migrated
        assert journal_mode(restored) in ("wal", None)  # as it was (no restore happened)
        restore_snapshot(path=snapshot, backup_key=key, engine=restored,
                                head_revision=head_revision())
        assert schema_of(restored) == migrated
        assert database_checksums(restored) == manifest.tables
        assert journal_mode(restored) in ("wal", None)  # and then goes back to its log
    finally:
        restored.dispose()


def test_a_restore_into_a_sqlite_file_another_connection_holds_still_restores(
        engine, document, tmp_path):
    """SQLite cannot leave its write-ahead log while another connection has the file open:
    the restore then loads through the log, as before it used a rollback journal."""
    import sqlite3

    from contacts.core.schema import head_revision, upgrade_database

    key = b"\x06" * 32
    snapshot, manifest = create_snapshot(engine=engine, backup_key=key,
                                                directory=tmp_path / "backups",
                                                revision=head_revision())
    restored = make_engine(f"sqlite:///{tmp_path / 'restored.db'}")
    try:
        upgrade_database(restored)
        with contextlib.closing(sqlite3.connect(tmp_path / "restored.db")) as shell:
            assert shell.execute("SELECT count(*) FROM account").fetchone() == (0,)
            restore_snapshot(path=snapshot, backup_key=key, engine=restored,
                                    head_revision=head_revision())
        assert database_checksums(restored) == manifest.tables
        assert journal_mode(restored) == "wal"
    finally:
        restored.dispose()


def journal_mode(engine) -> str | None:
    if engine.dialect.name != "sqlite":
        return None
    with engine.connect() as connection:
        return connection.exec_driver_sql("PRAGMA journal_mode").scalar()


def test_times_in_other_stored_shapes_read_and_write_in_the_canonical_form(engine):
    from sqlalchemy import text

    assert canonical._time_to_sqlite("2026-01-02T05:04:05.123+02:00") == \
        "2026-01-02 03:04:05.123000"
    assert canonical._time_to_sqlite("2026-01-02T03:04:05+00:00") == "2026-01-02 03:04:05.000000"
    with pytest.raises(ValueError, match="naive"):
        canonical._time_to_sqlite("2026-01-02T03:04:05")
    assert canonical._time_from_sqlite("2026-01-02 03:04:05") == "2026-01-02T03:04:05+00:00"
    with engine.begin() as connection:  # a time stored without microseconds, as raw SQL may
        connection.execute(text(
            "INSERT INTO api_token (id, name, prefix, secret_hash, scopes, created_by, "
            "created_at) VALUES ('tok_raw', 'raw', 'p', 's', 'read', 'x', "
            "'2026-01-02 03:04:05')"))
    assert database_checksums(engine)["api_token"] == \
        reference_checksums(engine)["api_token"]


def test_reading_ahead_in_a_thread_passes_on_errors_and_stops_when_abandoned():
    closed = []

    def numbers():
        try:
            yield from range(1000)
        finally:
            closed.append(True)

    ahead = canonical._in_background(numbers())
    assert [next(ahead), next(ahead)] == [0, 1]
    ahead.close()
    assert closed == [True]

    def failing():
        yield 1
        raise SnapshotRefused("went wrong while reading")

    with pytest.raises(SnapshotRefused, match="went wrong while reading"):
        list(canonical._in_background(failing()))


def test_a_restore_that_fails_halfway_leaves_an_empty_database_and_a_database_error(
        tmp_path, empty_postgresql_url):
    from sqlalchemy import text
    from sqlalchemy.exc import DataError

    from contacts.core.schema import head_revision, upgrade_database

    source = make_engine(f"sqlite:///{tmp_path / 'source.db'}")
    target = make_engine(empty_postgresql_url)
    try:
        upgrade_database(source)
        with source.begin() as connection:  # SQLite keeps a value PostgreSQL refuses
            connection.execute(text(
                "INSERT INTO account (id, external_id, name, created_at, updated_at) "
                "VALUES ('acc_1', 'A1', 'Acme', '2026-01-02 03:04:05.000000', "
                "'2026-01-02 03:04:05.000000')"))
            connection.execute(text(
                "INSERT INTO api_token (id, name, prefix, secret_hash, scopes, created_by, "
                "created_at) VALUES ('tok_1', 'n', :prefix, 's', '', 'x', "
                "'2026-01-02 03:04:05.000000')"), {"prefix": "p" * 17})
        key = b"\x09" * 32
        snapshot, _ = create_snapshot(engine=source, backup_key=key,
                                             directory=tmp_path / "backups",
                                             revision=head_revision())
        upgrade_database(target)
        migrated = schema_of(target)
        with pytest.raises(DataError, match="value too long"):
            restore_snapshot(path=snapshot, backup_key=key, engine=target,
                                    head_revision=head_revision())
        assert count_rows(target) == 0
        assert schema_of(target) == migrated
    finally:
        source.dispose()
        target.dispose()


def test_snapshots_taken_within_one_second_prune_oldest_first(engine, tmp_path, monkeypatch):
    second = utcnow().replace(microsecond=0)
    moments = iter(second.replace(microsecond=step) for step in (900, 10_000, 500_000, 999_999))
    monkeypatch.setattr("contacts.backup.snapshot.utcnow", lambda: next(moments))
    directory = tmp_path / "backups"
    taken = [create_snapshot(engine=engine, backup_key=bytes(32), directory=directory,
                                    revision=None)[0].name for _ in range(4)]
    assert [path.name for path in snapshots_in(directory)] == taken
    assert latest_snapshot(directory).name == taken[-1]
    assert [path.name for path in prune_snapshots(directory, keep=1)] == taken[:-1]
    assert [path.name for path in snapshots_in(directory)] == [taken[-1]]

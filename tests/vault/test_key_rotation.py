"""`keys rotate` re-encrypts every field under a new key while lookups keep answering; the
old key can then be retired and everything still decrypts."""

import re
import threading
from pathlib import Path

import pytest
from sqlmodel import select

from contacts.backup.snapshot import prune_snapshots, snapshot_field_keys, snapshot_named
from contacts.core import keyring
from contacts.core.audit import Actor
from contacts.core.db import session_scope
from contacts.core.services import services
from contacts.vault import service
from contacts.vault import sync as vault_sync
from contacts.vault.models import Account
from contacts.vault.schemas import SyncDocument
from tests.vault.fixtures import make_document


@pytest.fixture
def keyed_app(make_app, tmp_path):
    """An app whose keys live in a keys folder, as in production (not handed over)."""
    return make_app(secrets=None, secrets_keys_dir=str(tmp_path / "keys"))


def vault_of(app):
    return service.Vault.from_settings(services(app).settings,
                                       services(app).crypto)


def sync(app, document):
    entries = [vault_sync.AccountEntry.from_document(account, index) for index, account
               in enumerate(SyncDocument.model_validate(document).accounts)]
    with session_scope(services(app).engine) as session:
        vault_sync.sync(session=session, vault=vault_of(app), actor=Actor.system("t"),
                        entries=entries, source="sync")


def all_contacts(app):
    with session_scope(services(app).engine) as session:
        accounts = session.exec(select(Account.id)).all()
        return [contact for account in accounts for contact in
                service.list_contacts(session=session, vault=vault_of(app), account_id=account)]


def test_rotation_reencrypts_everything_while_lookups_keep_answering(keyed_app, make_app,
                                                                     tmp_path):
    document = make_document(accounts=100, contacts_per_account=5)
    sync(keyed_app, document)
    before = all_contacts(keyed_app)
    engine = services(keyed_app).engine
    target = document["accounts"][42]["contacts"][3]
    answers, failures, stop = [], [], threading.Event()

    def look_up_repeatedly():
        while not stop.is_set():
            try:
                with session_scope(engine) as session:
                    found = service.find_contacts(session=session, vault=vault_of(keyed_app),
                                                  email=target["email"])
                    answers.append(service.contact_view(session=session,
                                                        vault=vault_of(keyed_app),
                                                        contact=found[0]).email)
            except Exception as exc:  # noqa: BLE001 (any failure fails the test below)
                failures.append(exc)

    reader = threading.Thread(target=look_up_repeatedly)
    reader.start()
    try:
        rotator = make_app(secrets=None, secrets_keys_dir=str(tmp_path / "keys"))
        result = rotator.test_cli_runner().invoke(args=["keys", "rotate", "--batch-size", "50"])
    finally:
        stop.set()
        reader.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert "added key k2" in result.output
    assert "left under older keys" in result.output and "; 0 left" in result.output
    assert failures == [] and len(answers) > 0 and set(answers) == {target["email"]}
    assert keyring.count_fields(engine, not_key_id="k2") == 0
    assert keyring.count_fields(engine, key_id="k2") == 500 * 4  # name, email, phone, version
    # The serving app had only k1 in memory: it reloads the keyring and reads k2 fields.
    assert all_contacts(keyed_app) == before

    retired = rotator.test_cli_runner().invoke(args=["keys", "retire", "k1"])
    assert retired.exit_code == 0, retired.output
    assert (tmp_path / "keys" / "field_keys").read_text().startswith("k2:")
    fresh = make_app(secrets=None, secrets_keys_dir=str(tmp_path / "keys"))
    assert services(fresh).crypto.cipher.key_ids == ("k2",)
    assert all_contacts(fresh) == before


def test_a_key_in_use_or_active_cannot_be_retired(keyed_app):
    sync(keyed_app, make_document(accounts=1, contacts_per_account=1))
    runner = keyed_app.test_cli_runner()
    active = runner.invoke(args=["keys", "retire", "k1"])
    assert active.exit_code == 2
    assert active.output.strip() == "Error: k1 is the active key; rotate to a new key first"
    keys_file = services(keyed_app).settings.secrets_keys_dir + "/field_keys"
    keyring.add_key(Path(keys_file))
    in_use = runner.invoke(args=["keys", "retire", "k1"])
    assert in_use.exit_code == 2
    assert "fields are still encrypted with k1" in in_use.output
    unknown = runner.invoke(args=["keys", "retire", "k9"])
    assert unknown.output.strip() == "Error: no key 'k9' in the keyring (k1, k2)"


def test_rotation_refuses_to_edit_keys_given_in_the_environment(keyed_app, monkeypatch):
    monkeypatch.setenv("LIFELINE_FIELD_KEYS", "k1:" + "A" * 43 + "=")
    result = keyed_app.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code == 2
    assert result.output.strip().startswith(
        "Error: field_keys comes from LIFELINE_FIELD_KEYS: add the new key there")


def snapshot(app) -> str:
    result = app.test_cli_runner().invoke(args=["backup", "create"])
    assert result.exit_code == 0, result.output
    return re.search(r"wrote \S*/(lifeline-\S+\.llbackup)", result.output).group(1)


def test_a_key_a_retained_snapshot_needs_is_kept_until_the_snapshot_is_gone(keyed_app):
    sync(keyed_app, make_document(accounts=2, contacts_per_account=2))
    runner = keyed_app.test_cli_runner()
    before_rotation = snapshot(keyed_app)  # its fields are under k1
    rotated = runner.invoke(args=["keys", "rotate"])
    assert rotated.exit_code == 0 and "; 0 left" in rotated.output, rotated.output

    refused = runner.invoke(args=["keys", "retire", "k1"])
    assert refused.exit_code == 2
    assert refused.output.strip() == (f"Error: k1 is still needed to restore 1 snapshot(s): "
                                      f"{before_rotation}; keep it until they are pruned or "
                                      "removed")
    keys_file = Path(services(keyed_app).settings.secrets_keys_dir) / "field_keys"
    assert keys_file.read_text().startswith("k1:")
    assert snapshot_field_keys(
        snapshot_named(backup_dir(keyed_app), before_rotation),
        services(keyed_app).settings.secrets.backup_key) == {"k1"}

    after_rotation = snapshot(keyed_app)  # under k2 only: needs nothing from k1
    pruned = prune_snapshots(backup_dir(keyed_app), keep=1)
    assert [path.name for path in pruned] == [before_rotation]
    retired = runner.invoke(args=["keys", "retire", "k1"])
    assert retired.exit_code == 0, retired.output
    assert not keys_file.read_text().startswith("k1:")
    drilled = runner.invoke(args=["backup", "drill"])
    assert drilled.exit_code == 0 and f"drill of {after_rotation} passed" in drilled.output


def test_a_snapshot_whose_header_names_no_keys_is_read_whole(keyed_app, monkeypatch):
    """Snapshots made before headers named their keys: retire reads them to tell."""
    sync(keyed_app, make_document(accounts=1, contacts_per_account=2))
    monkeypatch.setattr("contacts.backup.snapshot._field_key_ids", lambda connection: None)
    older = snapshot(keyed_app)
    monkeypatch.undo()
    runner = keyed_app.test_cli_runner()
    assert runner.invoke(args=["keys", "rotate"]).exit_code == 0
    refused = runner.invoke(args=["keys", "retire", "k1"])
    assert refused.exit_code == 2 and older in refused.output, refused.output


def test_a_drill_with_the_key_gone_from_disk_fails_even_while_this_process_holds_it(
        keyed_app, make_token):
    sync(keyed_app, make_document(accounts=2, contacts_per_account=2))
    older = snapshot(keyed_app)
    runner = keyed_app.test_cli_runner()
    assert runner.invoke(args=["keys", "rotate"]).exit_code == 0
    # k1 leaves the key file behind the guard's back (an edit, another tool, a lost file)...
    keys_file = Path(services(keyed_app).settings.secrets_keys_dir) / "field_keys"
    keyring._write_atomically(keys_file, "".join(
        line + "\n" for line in keys_file.read_text().splitlines() if not line.startswith("k1:")))
    # ...while the running server still holds it in memory.
    assert "k1" in services(keyed_app).crypto.cipher.key_ids
    client = keyed_app.test_client()
    headers = {"Authorization": f"Bearer {make_token('backups:write')}"}
    answer = client.post("/api/v1/backups/drill", json={"snapshot": older}, headers=headers)
    assert answer.status_code == 200
    outcome = answer.get_json()
    assert outcome["ok"] is False
    assert outcome["detail"] == "field encrypted with unknown key id 'k1'"
    assert client.get("/healthz").get_json()["backups"]["ok"] is False
    cli = runner.invoke(args=["backup", "drill"])
    assert cli.exit_code == 2 and "unknown key id 'k1'" in cli.output


def backup_dir(app) -> Path:
    return Path(services(app).settings.backup_dir)

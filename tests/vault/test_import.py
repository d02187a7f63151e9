"""`flask --app app contacts import`: CSV and JSON files, reports, --strict, no plaintext."""

import json
import logging

from sqlmodel import func, select

from contacts.core.db import session_scope
from contacts.vault.models import Contact
from tests.helpers import stored_bytes
from tests.vault.fixtures import as_csv, make_document, personal_values


def run_import(app, path, *args):
    return app.test_cli_runner().invoke(args=["contacts", "import", str(path), *args])


def contact_count(engine) -> int:
    with session_scope(engine) as session:
        return session.exec(select(func.count()).select_from(Contact)).one()


def test_csv_and_json_imports_are_idempotent(app, engine, tmp_path):
    document = make_document(accounts=4, contacts_per_account=3)
    (tmp_path / "c.csv").write_text(as_csv(document))
    (tmp_path / "c.json").write_text(json.dumps(document))
    first = run_import(app, tmp_path / "c.csv")
    assert first.exit_code == 0, first.output
    assert "contacts  created      12" in first.output
    second = run_import(app, tmp_path / "c.json")
    assert second.exit_code == 0, second.output
    assert "contacts  created       0  updated       0  unchanged      12" in second.output
    assert contact_count(engine) == 12


def test_bad_rows_are_reported_with_line_and_reason_and_do_not_stop_the_rest(app, engine,
                                                                             tmp_path):
    lines = as_csv(make_document(accounts=2, contacts_per_account=2)).splitlines()
    header, rows = lines[0], lines[1:]
    rows[1] = rows[1].replace("@", " at ", 1)           # line 3: email
    rows[2] = rows[2].replace("site_admin", "overlord").replace("billing", "overlord") \
        .replace("technical", "overlord").replace(",other,", ",overlord,")  # line 4: role
    (tmp_path / "bad.csv").write_text("\n".join([header, *rows]) + "\n")
    result = run_import(app, tmp_path / "bad.csv")
    assert result.exit_code == 0
    assert "contacts  created       2" in result.output
    assert "rejected line 3: contact C0000002: email is not a valid address" in result.output
    assert "rejected line 4: contact C0000003: role must be one of" in result.output
    assert contact_count(engine) == 2


def test_strict_import_aborts_on_the_first_bad_row_and_stores_nothing(app, engine, tmp_path):
    lines = as_csv(make_document(accounts=2, contacts_per_account=2)).splitlines()
    lines[2] = lines[2].replace("+33", "++not")
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    result = run_import(app, tmp_path / "bad.csv", "--strict")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: 1 rejected entries, nothing imported (--strict); first: line 3 contact "
        "C0000002: phone is not a phone number")
    assert contact_count(engine) == 0


def test_unreadable_files_exit_2_with_one_line(app, tmp_path):
    (tmp_path / "broken.json").write_text('{"accounts": [')
    (tmp_path / "headless.csv").write_text("name,email\nA,a@b.c\n")
    (tmp_path / "notes.txt").write_text("hello")
    cases = [(tmp_path / "missing.csv", "Error: no such file"),
             (tmp_path / "broken.json", "Error: broken.json is not valid JSON: Expecting value"),
             (tmp_path / "headless.csv", "Error: the CSV header lacks the columns "
                                         "account_external_id, account_name"),
             (tmp_path / "notes.txt", "Error: cannot tell the format of notes.txt")]
    for path, said in cases:
        result = run_import(app, path)
        assert result.exit_code == 2, result.output
        assert result.output.strip().startswith(said), result.output


def test_json_entries_with_the_wrong_shape_are_rejected_one_by_one(app, engine, tmp_path):
    document = make_document(accounts=2, contacts_per_account=2)
    document["accounts"][0]["contacts"][1].pop("email")
    document["accounts"][1]["contacts"][0]["sites"] = "S00001-0"
    (tmp_path / "c.json").write_text(json.dumps(document))
    result = run_import(app, tmp_path / "c.json")
    assert result.exit_code == 0
    assert "rejected accounts[0].contacts[1]: contact C0000002: email: Field required" \
        in result.output
    assert "rejected accounts[1].contacts[0]: contact C0000003: sites: Input should be a valid " \
        "list" in result.output
    assert contact_count(engine) == 2


def test_a_nul_character_is_rejected_with_its_entry_and_the_rest_is_imported(app, engine,
                                                                            tmp_path):
    document = make_document(accounts=2, contacts_per_account=2)
    document["accounts"][0]["contacts"][0]["sites"] = ["S00000-0\x00"]
    (tmp_path / "c.json").write_text(json.dumps(document))
    result = run_import(app, tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    assert "rejected accounts[0].contacts[0]: contact C0000001: sites.0: Value error, must " \
        "not contain a NUL character" in result.output
    assert contact_count(engine) == 3


def test_a_thousand_imported_contacts_leave_no_plaintext_in_database_backup_or_logs(
        app, engine, tmp_path, caplog):
    document = make_document(accounts=250, contacts_per_account=4)
    (tmp_path / "vault.csv").write_text(as_csv(document))
    caplog.set_level(logging.DEBUG)
    result = run_import(app, tmp_path / "vault.csv")
    assert result.exit_code == 0 and "contacts  created    1000" in result.output
    stored = stored_bytes(engine)
    assert b"acme00000-0.example.net" in stored  # the scan does see the data it should
    values = personal_values(document)
    assert len(values) == 4000
    leaked = [value for value in values if value.encode() in stored]
    assert leaked == []
    snapshot_dir = tmp_path / "backups"
    made = app.test_cli_runner().invoke(args=["backup", "create", "--to", str(snapshot_dir)])
    assert made.exit_code == 0, made.output
    (snapshot,) = snapshot_dir.glob("*.llbackup")
    sealed = snapshot.read_bytes()
    assert [value for value in values if value.encode() in sealed] == []
    logs = caplog.text + result.output + made.output
    assert [value for value in values if value in logs] == []

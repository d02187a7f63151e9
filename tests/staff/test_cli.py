"""The staff and tokens commands: passwords from stdin, one-line errors with exit code 2."""

import os
import subprocess
import sys
from pathlib import Path

import argon2
from sqlalchemy import text

from contacts.core.db import make_engine
from contacts.core.settings import PROJECT_ROOT
from tests.helpers import PASSWORD


def test_staff_create_reads_the_password_from_stdin_and_can_sign_in(app, auth):
    result = app.test_cli_runner().invoke(args=["staff", "create", "ops@example.com",
                                                "--role", "admin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "created staff account stf_" in result.output
    from tests.helpers import StaffAccount

    assert auth.login(StaffAccount("?", "ops@example.com", "admin")).status_code == 302


def test_bad_input_exits_2_with_one_line(app):
    runner = app.test_cli_runner()
    cases = [
        (["staff", "create", "ops@example.com", "--role", "boss"], PASSWORD,
         "Error: unknown role 'boss': choose one of support, comms, admin"),
        (["staff", "create", "not-an-address", "--role", "admin"], PASSWORD,
         "Error: not a valid email address"),
        (["staff", "create", "ops@example.com", "--role", "admin"], "short",
         "Error: the password must be at least 12 characters long"),
        (["tokens", "create", "sync", "--scope", "everything"], "",
         "Error: unknown scope 'everything'"),
        (["tokens", "create", "sync", "--scope", "read", "--expires", "soon"], "",
         "Error: --expires must be a date as YYYY-MM-DD"),
        (["tokens", "revoke", "site_01m8bq70k0y2nthpm9ammtm0jp"], "",
         "Error: expected an API token ID (tok_...), got a site ID (site_...)"),
    ]
    for args, stdin, said in cases:
        result = runner.invoke(args=args, input=stdin + "\n")
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(said), (args, result.output)


def test_a_duplicate_staff_account_is_refused(app, make_staff):
    account = make_staff()
    result = app.test_cli_runner().invoke(
        args=["staff", "create", account.email.upper(), "--role", "support"], input=PASSWORD)
    assert result.exit_code == 2
    assert "already exists" in result.output


def test_tokens_create_prints_a_working_secret_once(app, client):
    result = app.test_cli_runner().invoke(
        args=["tokens", "create", "product", "--scope", "read", "--scope", "progress:write"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    assert secret.startswith("llt_")
    answer = client.get("/api/v1/token", headers={"Authorization": f"Bearer {secret}"})
    assert answer.get_json()["scopes"] == ["progress:write", "read"]
    listing = app.test_cli_runner().invoke(args=["tokens", "list"]).output
    assert "product" in listing and secret not in listing


def test_the_first_admin_is_bootstrapped_from_the_environment(database_url, tmp_path):
    environ = {key: value for key, value in os.environ.items() if not key.startswith("LIFELINE_")}
    environ.update(LIFELINE_DATABASE_URL=database_url, LIFELINE_SECRETS_KEYS_DIR=str(tmp_path),
                   LIFELINE_ADMIN_EMAIL="first@example.com", LIFELINE_ADMIN_PASSWORD=PASSWORD)
    flask = str(Path(sys.executable).parent / "flask")
    for _ in range(2):  # a second start must not create a second admin
        listed = subprocess.run([flask, "--app", "app", "staff", "list"], cwd=PROJECT_ROOT,
                                env=environ, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert len(lines) == 1 and "admin" in lines[0] and "first@example.com" in lines[0]
    # Hashed by Lifeline as shipped (the tests' own process hashes cheaply): Argon2id, 3
    # passes over 64 MiB in 4 lanes.
    engine = make_engine(database_url)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT password_hash FROM staff_user")).scalar_one()
    engine.dispose()
    used = argon2.extract_parameters(stored)
    assert (used.type, used.time_cost, used.memory_cost, used.parallelism) == (
        argon2.Type.ID, 3, 65536, 4)

"""Configuration and secrets: TOML defaults, LIFELINE_* overrides, keys from env or files."""

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contacts.core.errors import ConfigError
from contacts.core.settings import PROJECT_ROOT, SECRET_NAMES, load_settings, parse_keyring

KEY = base64.b64encode(b"k" * 32).decode()


def full_secret_env() -> dict[str, str]:
    return {
        "LIFELINE_SECRET_KEY": "s" * 40,
        "LIFELINE_FIELD_KEYS": f"k1:{KEY}",
        "LIFELINE_BLIND_INDEX_KEY": KEY,
        "LIFELINE_BACKUP_KEY": KEY,
    }


def test_defaults_come_from_the_commented_toml(tmp_path):
    settings = load_settings({"secrets_keys_dir": str(tmp_path)}, environ={})
    assert settings.server_port == 8000
    assert settings.database_url == "sqlite:///var/lifeline.db"
    assert settings.app_env == "development"


def test_every_setting_in_default_toml_is_commented():
    lines = (PROJECT_ROOT / "config" / "default.toml").read_text().splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            above = lines[number - 1].lstrip()
            assert above.startswith("#"), f"setting on line {number + 1} has no comment above it"


def test_environment_overrides_and_aliases_are_typed(tmp_path):
    environ = {"LIFELINE_SERVER_PORT": "9001", "LIFELINE_SCHEDULER_ENABLED": "false",
               "DATABASE_URL": "postgresql://x@127.0.0.1/db", "LIFELINE_UNRELATED": "1"}
    settings = load_settings({"secrets_keys_dir": str(tmp_path)}, environ=environ)
    assert settings.server_port == 9001
    assert settings.scheduler_enabled is False
    assert settings.database_url == "postgresql://x@127.0.0.1/db"
    assert load_settings({"secrets_keys_dir": str(tmp_path)},
                         environ={"PORT": "8123"}).server_port == 8123


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("LIFELINE_SERVER_PORT", "eighty", "LIFELINE_SERVER_PORT must be a whole number"),
    ("LIFELINE_SCHEDULER_ENABLED", "maybe", "must be true or false"),
    ("LIFELINE_ENV", "staging", "must be 'development' or 'production'"),
])
def test_a_malformed_override_is_named(tmp_path, variable, value, said):
    with pytest.raises(ConfigError, match=said):
        load_settings({"secrets_keys_dir": str(tmp_path)}, environ={variable: value})


def test_restore_stages_are_a_list_and_the_restored_one_must_be_among_them(tmp_path):
    settings = load_settings({"secrets_keys_dir": str(tmp_path)}, environ={
        "LIFELINE_INCIDENTS_STAGES": "queued, restored ,validated",
        "LIFELINE_INCIDENTS_RESTORED_STAGE": "restored"})
    assert settings.incidents_stages == ["queued", "restored", "validated"]
    with pytest.raises(ConfigError, match="restored_stage 'done' is not one of"):
        load_settings({"secrets_keys_dir": str(tmp_path)},
                      environ={"LIFELINE_INCIDENTS_RESTORED_STAGE": "done"})


def test_the_message_id_domain_is_given_or_derived_and_must_be_a_host_name(tmp_path):
    def domain(**values) -> str:
        return load_settings({"secrets_keys_dir": str(tmp_path), **values},
                             environ={}).mail_domain

    assert domain() == "localhost"  # the shipped sender's
    assert domain(mail_sender="Ops <ops@Status.Example.COM>") == "status.example.com"
    assert domain(mail_sender="", app_base_url="https://Lifeline.example:8443/x") == \
        "lifeline.example"
    assert domain(mail_domain="Mail.Example.org.") == "mail.example.org"
    assert domain(mail_domain="état.example") == "xn--tat-9la.example"
    for bad in ("a..b", "two words.example", "-dash.example", "x" * 64 + ".example",
                "<x>@y", "a.example>\r\nBcc: b"):
        with pytest.raises(ConfigError, match="not a host name for Message-IDs"):
            domain(mail_domain=bad)
    with pytest.raises(ConfigError, match="the domain of mail sender"):
        domain(mail_sender="Ops <ops@bad_host>")


def test_an_unknown_override_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting 'server_prot'"):
        load_settings({"secrets_keys_dir": str(tmp_path), "server_prot": 1}, environ={})


def test_development_generates_missing_keys_once(tmp_path):
    keys = tmp_path / "keys"
    first = load_settings({"secrets_keys_dir": str(keys)}, environ={})
    assert sorted(path.name for path in keys.iterdir()) == sorted(SECRET_NAMES)
    assert all((keys / name).stat().st_mode & 0o077 == 0 for name in SECRET_NAMES)
    second = load_settings({"secrets_keys_dir": str(keys)}, environ={})
    assert first.secrets == second.secrets


def test_production_without_keys_refuses_naming_each_missing_secret(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings({"secrets_keys_dir": str(tmp_path)}, environ={"LIFELINE_ENV": "production"})
    message = caught.value.message
    assert "missing secrets: secret_key, field_keys, blind_index_key, backup_key" in message
    assert not any(tmp_path.iterdir()), "production must never generate keys"


def test_production_reads_secrets_from_environment_and_files(tmp_path):
    environ = full_secret_env() | {"LIFELINE_ENV": "production",
                                   "LIFELINE_SERVER_SESSION_COOKIE_SECURE": "true"}
    backup = tmp_path / "backup.key"
    backup.write_text(KEY)
    del environ["LIFELINE_BACKUP_KEY"]
    environ["LIFELINE_BACKUP_KEY_FILE"] = str(backup)
    settings = load_settings({"secrets_keys_dir": str(tmp_path / "none")}, environ=environ)
    assert settings.is_production
    assert settings.secrets.backup_key == b"k" * 32
    assert settings.secrets.field_keys == (("k1", b"k" * 32),)


def test_production_refuses_a_session_cookie_sent_over_plain_http(tmp_path):
    environ = full_secret_env() | {"LIFELINE_ENV": "production"}
    with pytest.raises(ConfigError, match="set LIFELINE_SERVER_SESSION_COOKIE_SECURE=true"):
        load_settings({"secrets_keys_dir": str(tmp_path)}, environ=environ)


@pytest.mark.parametrize(("value", "said"), [
    ("", "holds no key"),
    ("k1", "entry 1 is not 'key_id:base64key'"),
    (f"k1:{KEY},k1:{KEY}", "names key id 'k1' twice"),
    ("k1:bm90MzI=", "must decode to 32 bytes"),
])
def test_a_malformed_keyring_is_refused(value, said):
    with pytest.raises(ConfigError, match=said):
        parse_keyring(value)


def test_keyring_keeps_order_and_the_last_key_is_newest():
    other = base64.b64encode(b"o" * 32).decode()
    assert [key_id for key_id, _ in parse_keyring(f"k1:{KEY}\nk2:{other}\n")] == ["k1", "k2"]


def test_the_service_refuses_to_start_in_production_without_keys(tmp_path):
    """Acceptance 6: one line naming what is missing, and a non-zero exit."""
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith("LIFELINE_")}
    environ.update(LIFELINE_ENV="production", LIFELINE_SECRETS_KEYS_DIR=str(tmp_path),
                   LIFELINE_DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    flask = Path(sys.executable).parent / "flask"
    result = subprocess.run([str(flask), "--app", "app", "run", "--port", "0"], cwd=PROJECT_ROOT,
                            env=environ, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lifeline: missing secrets: secret_key, field_keys")


def test_the_webhook_lanes_concurrency_is_a_bounded_whole_number(tmp_path):
    assert load_settings({"secrets_keys_dir": str(tmp_path)},
                         environ={}).delivery_webhook_concurrency == 50
    settings = load_settings({"secrets_keys_dir": str(tmp_path)},
                             environ={"LIFELINE_DELIVERY_WEBHOOK_CONCURRENCY": "120"})
    assert settings.delivery_webhook_concurrency == 120
    for bad in (0, -3, 1001):
        with pytest.raises(ConfigError, match="delivery webhook_concurrency must be a whole"):
            load_settings({"secrets_keys_dir": str(tmp_path),
                           "delivery_webhook_concurrency": bad}, environ={})
    for environ in ({"LIFELINE_DELIVERY_WEBHOOK_CONCURRENCY": "many"},
                    {"LIFELINE_DELIVERY_WEBHOOK_CONCURRENCY": "2.5"}):
        with pytest.raises(ConfigError, match="DELIVERY_WEBHOOK_CONCURRENCY"):
            load_settings({"secrets_keys_dir": str(tmp_path)}, environ=environ)

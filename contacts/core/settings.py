"""One loader for configuration and secrets.

Settings come from config/default.toml, then the TOML file named by LIFELINE_CONFIG, then
LIFELINE_<SECTION>_<KEY> environment variables, then the overrides passed to create_app().
Secrets come only from the environment or key files, never from the TOML files.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import re
import secrets as random_source
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from contacts.core import mailtokens
from contacts.core.errors import ConfigError
from contacts.core.mail import message_domain
from contacts.core.mailboxes import check_inbound

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "default.toml"

# Well-known environment names accepted beside LIFELINE_<SECTION>_<KEY>.
ALIASES = {"LIFELINE_ENV": "app_env", "DATABASE_URL": "database_url", "PORT": "server_port"}

SECRET_NAMES = ("secret_key", "field_keys", "blind_index_key", "backup_key")
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
KEY_BYTES = 32


@dataclass(frozen=True)
class Secrets:
    secret_key: str
    # Ordered oldest to newest; the last one encrypts, all of them decrypt.
    field_keys: tuple[tuple[str, bytes], ...]
    blind_index_key: bytes
    backup_key: bytes
    mail_password: str | None = None  # optional: only when the SMTP server asks for one
    mail_fallback_password: str | None = None  # the same, for [mail] fallback_host


class Settings:
    """Flat, read-only settings: `settings.server_port` is `[server] port`."""

    def __init__(self, values: Mapping[str, Any], secrets: Secrets, secrets_given: bool = False):
        self._values = dict(values)
        self.secrets = secrets
        # True when create_app() was handed the secrets (tests): there is nothing to reload.
        self.secrets_given = secrets_given

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no setting named {name!r}") from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    @property
    def is_production(self) -> bool:
        return self._values["app_env"] == "production"


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    values = _flatten(_read_toml(DEFAULT_CONFIG))
    defaults = dict(values)
    extra = environ.get("LIFELINE_CONFIG")
    if extra:
        values.update(_known_only(_flatten(_read_toml(Path(extra))), defaults, f"{extra}"))
    values.update(_environment_overrides(environ, defaults))
    secrets_given = overrides.pop("secrets", None)
    values.update(_known_only(overrides, defaults, "create_app overrides"))
    if values["incidents_restored_stage"] not in values["incidents_stages"]:
        raise ConfigError(f"incidents restored_stage {values['incidents_restored_stage']!r} "
                          "is not one of incidents stages")
    if values["app_env"] not in ("development", "production"):
        raise ConfigError(
            f"app env must be 'development' or 'production', got {values['app_env']!r}")
    keys_dir = _resolve(values["secrets_keys_dir"])
    values["secrets_keys_dir"] = str(keys_dir)
    values["backup_dir"] = str(_resolve(values["backup_dir"]))
    values["intake_spool_dir"] = str(_resolve(values["intake_spool_dir"]))
    secrets = secrets_given or load_secrets(
        keys_dir, environ, generate=values["app_env"] != "production"
    )
    _check_webhooks(values)
    # [inbound] mailboxes become core.mailboxes.Mailbox values, each with its password.
    values["inbound_mailboxes"] = check_inbound(
        values, lambda name: _read_secret(name, keys_dir, environ))
    if values["delivery_retention_days"] < 1:
        raise ConfigError("delivery retention_days must be at least 1, got "
                          f"{values['delivery_retention_days']!r}")
    values["mail_domain"] = _mail_domain(values)
    values["mail_reply_to"] = _token_base(values, "reply_to", mailtokens.REPLY_TOKEN_LENGTH)
    values["mail_return_path"] = _token_base(values, "return_path",
                                             mailtokens.RETURN_TOKEN_LENGTH)
    _check_delivery(values)
    if values["app_env"] == "production" and not values["server_session_cookie_secure"]:
        raise ConfigError("production serves staff over HTTPS only: set "
                          "LIFELINE_SERVER_SESSION_COOKIE_SECURE=true")
    return Settings(values, secrets, secrets_given=secrets_given is not None)


def _check_webhooks(values: dict[str, Any]) -> None:
    """The allowance of private webhook endpoints is for tests: exact pairs, never in
    production."""
    allowed = [_host_port(entry) for entry in values["webhooks_allow_private_hosts"]]
    if allowed and values["app_env"] == "production":
        raise ConfigError("production refuses webhooks allow_private_hosts (webhooks reach "
                          "public addresses only): unset LIFELINE_WEBHOOKS_ALLOW_PRIVATE_HOSTS")
    values["webhooks_allow_private_hosts"] = allowed
    deadline = values["webhooks_deadline_seconds"]
    if not deadline > 0:
        raise ConfigError(f"webhooks deadline_seconds must be above 0, got {deadline!r}")
    concurrency = values["delivery_webhook_concurrency"]
    if type(concurrency) is not int or not 1 <= concurrency <= 1000:
        raise ConfigError("delivery webhook_concurrency must be a whole number from 1 to 1000, "
                          f"got {concurrency!r}")


def _mail_domain(values: dict[str, Any]) -> str:
    """`[mail] domain`, else the sender address's domain, else the host of the base URL."""
    given = values["mail_domain"].strip()
    sender = parseaddr(values["mail_sender"])[1].rpartition("@")[2]
    domain = given or sender or urlsplit(values["app_base_url"]).hostname or ""
    try:
        return message_domain(domain)
    except ValueError:
        origin = "mail domain" if given else "the domain of mail sender (or app base_url)"
        raise ConfigError(f"{origin} {domain!r} is not a host name for Message-IDs: set "
                          "[mail] domain (LIFELINE_MAIL_DOMAIN), such as "
                          "status.example.com") from None


def _token_base(values: dict[str, Any], name: str, token_length: int) -> str:
    """`[mail] reply_to` or `return_path` (else the sender's address, else lifeline@ the
    Message-ID domain), lower-cased, once it is known to take a +token."""
    given = values[f"mail_{name}"].strip()
    address = given or parseaddr(values["mail_sender"])[1] or f"lifeline@{values['mail_domain']}"
    try:
        local, domain = mailtokens.check_base(address, token_length)
    except ValueError as exc:
        origin = f"mail {name}" if given else f"mail sender (taken as mail {name})"
        raise ConfigError(f"{origin}: {exc}") from None
    return f"{local}@{domain}"


SECURITIES = ("none", "starttls", "tls")


def _check_delivery(values: dict[str, Any]) -> None:
    """The SMTP pool's sizes and the relays' settings, refused when they cannot work."""
    connections = values["delivery_smtp_connections"]
    if not 1 <= connections <= 500:
        raise ConfigError(f"delivery smtp_connections must be 1 to 500, got {connections!r}")
    per_connection = values["delivery_smtp_messages_per_connection"]
    if per_connection < 1:
        raise ConfigError("delivery smtp_messages_per_connection must be 1 or more, got "
                          f"{per_connection!r}")
    rate = values["delivery_smtp_rate_per_second"]
    if not rate >= 0 or rate == float("inf"):
        raise ConfigError(f"delivery smtp_rate_per_second must be 0 (no cap) or a positive "
                          f"number, got {rate!r}")
    for prefix in ("mail_", "mail_fallback_"):
        if values[f"{prefix}security"] not in SECURITIES:
            raise ConfigError(f"mail {prefix.removeprefix('mail_')}security must be one of "
                              f"{', '.join(SECURITIES)}, got {values[f'{prefix}security']!r}")
        if not 0 < values[f"{prefix}port"] < 65536:
            raise ConfigError(f"mail {prefix.removeprefix('mail_')}port must be 1 to 65535, "
                              f"got {values[f'{prefix}port']!r}")
    host = values["mail_fallback_host"].strip()
    if host and any(mark in host for mark in " /\r\n"):
        raise ConfigError(f"mail fallback_host must be a host name or address, got {host!r}")
    if host and (host, values["mail_fallback_port"]) == (values["mail_host"],
                                                         values["mail_port"]):
        raise ConfigError("mail fallback_host and fallback_port name the first relay again")
    values["mail_fallback_host"] = host


def _host_port(entry: Any) -> str:
    """"127.0.0.1:9123" or "[::1]:9123", in the one spelling the webhook transport compares."""
    host, _, port = str(entry).strip().rpartition(":")
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
        number = int(port)
        if not 0 < number < 65536 or (address.version == 6) != host.startswith("["):
            raise ValueError(entry)
    except ValueError:
        raise ConfigError(f"webhooks allow_private_hosts entry {entry!r} must be an IP "
                          "address and a port, such as 127.0.0.1:9123 or [::1]:9123") from None
    return f"[{address}]:{number}" if address.version == 6 else f"{address}:{number}"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None


def _flatten(document: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"configuration key {section!r} must sit inside a [section]")
        for key, value in table.items():
            flat[f"{section}_{key}"] = value
    return flat


def _known_only(values: Mapping[str, Any], defaults: Mapping[str, Any], origin: str) -> dict:
    for name, value in values.items():
        if name not in defaults:
            raise ConfigError(f"unknown setting {name!r} in {origin}")
        _check_type(name, value, defaults[name], origin)
    return dict(values)


def _check_type(name: str, value: Any, default: Any, origin: str) -> None:
    expected = type(default)
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ConfigError(
            f"setting {name!r} in {origin} must be {expected.__name__}, got {value!r}")


def _environment_overrides(environ: Mapping[str, str], defaults: Mapping[str, Any]) -> dict:
    found: dict[str, Any] = {}
    for variable, raw in environ.items():
        if variable in ALIASES:
            name = ALIASES[variable]
        elif variable.startswith("LIFELINE_"):
            name = variable.removeprefix("LIFELINE_").lower()
            if name not in defaults:
                continue  # secrets and other LIFELINE_ variables are not settings
        else:
            continue
        found[name] = _coerce(variable, raw, defaults[name])
    return found


def _coerce(variable: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{variable} must be true or false, got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{variable} must be a whole number, got {raw!r}") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{variable} must be a number, got {raw!r}") from None
    if isinstance(default, list):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _resolve(path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else PROJECT_ROOT / candidate


# -- secrets ------------------------------------------------------------------------------


def field_keys_loader(settings: Settings, environ: Mapping[str, str] | None = None, *,
                      strict: bool = False):
    """Reads the field keyring again from where it came from (for live key rotation). With
    `strict` (backup drills), keys handed to create_app are all there is, and a key file
    gone is an error instead of a reason to go on with the keys held in memory."""
    environ = os.environ if environ is None else environ
    keys_dir = Path(settings.secrets_keys_dir)

    def load() -> tuple[tuple[str, bytes], ...]:
        if strict and settings.secrets_given:
            return settings.secrets.field_keys
        raw = _read_secret("field_keys", keys_dir, environ)
        if raw:
            return parse_keyring(raw)
        if strict:
            raise ConfigError(f"no field keys to read: {keys_dir / 'field_keys'} is missing "
                              "and LIFELINE_FIELD_KEYS is not set")
        return settings.secrets.field_keys

    return load


def load_secrets(keys_dir: Path, environ: Mapping[str, str], *, generate: bool) -> Secrets:
    raw: dict[str, str] = {}
    missing: list[str] = []
    for name in SECRET_NAMES:
        value = _read_secret(name, keys_dir, environ)
        if value is None:
            missing.append(name)
        else:
            raw[name] = value
    if missing and generate:
        written = generate_missing_keys(keys_dir, missing)
        for name in written:
            raw[name] = (keys_dir / name).read_text()
        log.warning("development keys generated in %s: %s (never use them in production)",
                    keys_dir, ", ".join(written))
        missing = []
    if missing:
        hints = ", ".join(f"LIFELINE_{name.upper()}" for name in missing)
        raise ConfigError(
            f"missing secret{'s' if len(missing) > 1 else ''}: {', '.join(missing)} "
            f"(set {hints}, a *_FILE path, or key files in {keys_dir})"
        )
    mail_password = _read_secret("mail_password", keys_dir, environ)
    fallback_password = _read_secret("mail_fallback_password", keys_dir, environ)
    return Secrets(
        mail_password=mail_password.strip() if mail_password else None,
        mail_fallback_password=fallback_password.strip() if fallback_password else None,
        secret_key=_parse_secret_key(raw["secret_key"]),
        field_keys=parse_keyring(raw["field_keys"]),
        blind_index_key=_parse_key("blind_index_key", raw["blind_index_key"]),
        backup_key=_parse_key("backup_key", raw["backup_key"]),
    )


def _read_secret(name: str, keys_dir: Path, environ: Mapping[str, str]) -> str | None:
    variable = f"LIFELINE_{name.upper()}"
    if environ.get(variable):
        return environ[variable]
    path_given = environ.get(f"{variable}_FILE")
    if path_given:
        try:
            return Path(path_given).read_text()
        except OSError as exc:
            raise ConfigError(
                f"{variable}_FILE: cannot read {path_given}: {exc.strerror}") from None
    key_file = keys_dir / name
    if key_file.is_file():
        return key_file.read_text()
    return None


def generate_missing_keys(keys_dir: Path, names: list[str]) -> list[str]:
    """Write fresh random keys for `names` into keys_dir (mode 0600); never overwrites."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = []
    for name in names:
        path = keys_dir / name
        if path.exists():
            continue
        if name == "secret_key":
            content = random_source.token_urlsafe(48)
        elif name == "field_keys":
            content = f"k1:{new_key_text()}\n"
        else:
            content = new_key_text()
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content)
        written.append(name)
    return written


def new_key_text() -> str:
    return base64.b64encode(random_source.token_bytes(KEY_BYTES)).decode()


def _parse_secret_key(value: str) -> str:
    value = value.strip()
    if len(value) < 32:
        raise ConfigError("secret_key must be at least 32 characters")
    return value


def _parse_key(name: str, value: str) -> bytes:
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        raise ConfigError(f"{name} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{name} must decode to {KEY_BYTES} bytes, got {len(key)}")
    return key


def parse_keyring(value: str) -> tuple[tuple[str, bytes], ...]:
    entries = [item.strip() for item in re.split(r"[,\n]", value) if item.strip()]
    if not entries:
        raise ConfigError("field_keys holds no key")
    keyring: list[tuple[str, bytes]] = []
    for position, entry in enumerate(entries, start=1):
        key_id, _, encoded = entry.partition(":")
        if not KEY_ID.match(key_id) or not encoded:
            raise ConfigError(f"field_keys entry {position} is not 'key_id:base64key'")
        if any(key_id == known for known, _ in keyring):
            raise ConfigError(f"field_keys names key id {key_id!r} twice")
        keyring.append((key_id, _parse_key(f"field_keys entry {position}", encoded)))
    return tuple(keyring)

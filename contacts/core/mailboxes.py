"""`[inbound]` checked: the IMAP mailboxes Lifeline reads (each entry, with its password
found among the secrets) and the reader's folders, sizes and times."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contacts.core.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9_]{1,32}$")
SECURITIES = ("none", "starttls", "tls")
KEYS = ("name", "host", "port", "security", "username", "folder")


@dataclass(frozen=True)
class Mailbox:
    """One mailbox to read. Its password is a secret (never in TOML, never in a repr)."""

    name: str
    host: str
    port: int
    security: str  # none, starttls or tls
    username: str
    folder: str = "INBOX"
    password: str = field(default="", repr=False)


def check_inbound(values: dict[str, Any],
                  read_secret: Callable[[str], str | None]) -> tuple[Mailbox, ...]:
    """The mailboxes of `[inbound] mailboxes`, each with its password
    (`read_secret("inbound_<name>_password")`); the other settings checked in place."""
    mailboxes: dict[str, Mailbox] = {}
    for position, entry in enumerate(values["inbound_mailboxes"], start=1):
        mailbox = _mailbox(entry, position, read_secret)
        if mailbox.name.lower() in mailboxes:
            raise ConfigError(f"inbound mailboxes name {mailbox.name!r} twice")
        mailboxes[mailbox.name.lower()] = mailbox
    done, failed = values["inbound_done_folder"].strip(), values["inbound_failed_folder"].strip()
    if not done or not failed or done == failed:
        raise ConfigError("inbound done_folder and failed_folder must be two different, "
                          f"non-empty folders, got {done!r} and {failed!r}")
    for mailbox in mailboxes.values():
        if mailbox.folder in (done, failed):
            raise ConfigError(f"inbound mailbox {mailbox.name!r} reads its folder "
                              f"{mailbox.folder!r}, which is done_folder or failed_folder")
    values["inbound_done_folder"], values["inbound_failed_folder"] = done, failed
    for name, lowest in (("poll_seconds", 1), ("timeout_seconds", 1),
                         ("max_message_bytes", 1024), ("attachment_max_bytes", 0)):
        value = values[f"inbound_{name}"]
        if value < lowest:
            raise ConfigError(f"inbound {name} must be at least {lowest}, got {value!r}")
    ids = values["inbound_trusted_authserv_ids"]
    if not all(isinstance(item, str) and item.strip() and " " not in item.strip()
               for item in ids):
        raise ConfigError(f"inbound trusted_authserv_ids must be host names, got {ids!r}")
    values["inbound_trusted_authserv_ids"] = [item.strip().lower() for item in ids]
    return tuple(mailboxes.values())


def _mailbox(entry: Any, position: int, read_secret: Callable[[str], str | None]) -> Mailbox:
    if not isinstance(entry, dict):
        raise ConfigError(f"inbound mailboxes entry {position} must be a table such as "
                          '{ name = "support", host = "imap.example.com", username = "..." } '
                          "(in the TOML file named by LIFELINE_CONFIG), got " + repr(entry))
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise ConfigError(f"inbound mailboxes entry {position} has unknown keys "
                          f"{', '.join(unknown)} (known: {', '.join(KEYS)})")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"inbound mailboxes entry {position} needs a name of letters, digits "
                          f"and _ (up to 32), got {name!r}")
    where = f"inbound mailbox {name!r}"
    security = entry.get("security", "tls")
    if security not in SECURITIES:
        raise ConfigError(f"{where}: security must be one of {', '.join(SECURITIES)}, "
                          f"got {security!r}")
    port = entry.get("port", 993 if security == "tls" else 143)
    if type(port) is not int or not 0 < port < 65536:
        raise ConfigError(f"{where}: port must be 1 to 65535, got {port!r}")
    texts = {}
    for key, default in (("host", None), ("username", None), ("folder", "INBOX")):
        value = entry.get(key, default)
        if not isinstance(value, str) or not value.strip() or any(c in value for c in "\r\n\0"):
            raise ConfigError(f"{where}: {key} must be a non-empty text, got {value!r}")
        texts[key] = value.strip()
    if any(mark in texts["host"] for mark in " /"):
        raise ConfigError(f"{where}: host must be a host name or address, got {texts['host']!r}")
    secret = f"inbound_{name.lower()}_password"
    password = (read_secret(secret) or "").strip()
    if not password:
        variable = f"LIFELINE_{secret.upper()}"
        raise ConfigError(f"{where} has no password: set {variable} or {variable}_FILE")
    return Mailbox(name=name, port=port, security=security, password=password, **texts)

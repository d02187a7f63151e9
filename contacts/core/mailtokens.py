"""The signed tokens outgoing mail carries so that what comes back can be tied to it: reply
addresses (`support+r<id>.<signature>@`: the thread a reply belongs to) and VERP return
paths (`bounces+m<outbox id>.<signature>@`: the message a bounce reports).

A token is lower-case Crockford base32 and digits only (relays may fold the case of a local
part), reveals nothing but an opaque ID, and keeps the local part within 64 octets
(RFC 5321 4.5.3.1.1). Its signature is 80 bits of HMAC-SHA256 under the app's secret key
with a purpose of its own: a forger gets one guess per message they send us, and 2^80
guesses are out of reach of any sender (a million forged messages a second for a century
is 2^52). Readers answer None for anything that is not a token we made, never raise.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from dataclasses import dataclass, field

from contacts.core.ids import ALPHABET, BODY_LENGTH

REPLY_PURPOSE = "mail-reply-address"
RETURN_PURPOSE = "mail-return-path"
# The kinds of thread a reply address names: its letter in the token, its ID's prefix.
REPLY_KINDS = {"request": ("r", "req"), "item": ("i", "itm"), "contact": ("c", "ctc")}
_KIND_BY_LETTER = {letter: (kind, prefix) for kind, (letter, prefix) in REPLY_KINDS.items()}
SIGNATURE_LENGTH = 16  # base32 characters (the IDs' Crockford alphabet): 80 bits
MAX_LOCAL_PART = 64
# The longest tokens: a letter, an ID body, a dot, the signature; a return path's ID is an
# outbox row's (a 64-bit integer: 19 digits at most).
REPLY_TOKEN_LENGTH = 1 + BODY_LENGTH + 1 + SIGNATURE_LENGTH
RETURN_TOKEN_LENGTH = 1 + 19 + 1 + SIGNATURE_LENGTH
MAX_OUTBOX_ID = 2 ** 63 - 1

_BODY = re.compile(f"[{ALPHABET}]{{{BODY_LENGTH}}}")  # a typed ID's (Crockford base32)
_SIGNED = f"[{ALPHABET}]{{{SIGNATURE_LENGTH}}}"
_REPLY_TOKEN = re.compile(rf"([{''.join(_KIND_BY_LETTER)}])([{ALPHABET}]{{{BODY_LENGTH}}})"
                          rf"\.({_SIGNED})")
_RETURN_TOKEN = re.compile(rf"m([1-9][0-9]{{0,18}})\.({_SIGNED})")
# What a base mailbox's local part may be: a dot-atom of the characters every relay passes
# unchanged, no `+` (the token's separator).
_BASE_LOCAL = re.compile(r"[a-z0-9!#$%&'*/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


# Every 10-bit group as two characters: a signature is 8 lookups (a fan-out signs a reply
# address per email).
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]


@functools.lru_cache(maxsize=4)
def _keyed(secret: str) -> tuple:
    """HMAC-SHA256's inner and outer hashes with the key absorbed (RFC 2104), copied per
    signature: half the cost of `hmac.digest`, the same digest."""
    key = secret.encode()
    key = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    return (hashlib.sha256(bytes(byte ^ 0x36 for byte in key)),
            hashlib.sha256(bytes(byte ^ 0x5C for byte in key)))


def _signature(secret: str, purpose: str, *parts: str) -> str:
    """80 bits of HMAC-SHA256 over the purpose and the parts: 16 lower-case characters."""
    inner, outer = _keyed(secret)
    inner, outer = inner.copy(), outer.copy()
    inner.update("\x00".join((purpose, *parts)).encode())
    outer.update(inner.digest())
    value = int.from_bytes(outer.digest()[:10])
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in (70, 60, 50, 40, 30, 20, 10, 0)])


@functools.lru_cache(maxsize=16)
def _mailbox(base: str) -> tuple[str, str]:
    """(local part, domain) of a base mailbox, lower-cased (checked by the settings)."""
    local, _, domain = base.strip().lower().rpartition("@")
    return local, domain.rstrip(".")


def check_base(address: str, token_length: int) -> tuple[str, str]:
    """(local part, domain) of a mailbox that can take a `+token` of `token_length`,
    lower-cased; ValueError saying why not."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at or not address.isascii():
        raise ValueError(f"{address!r} is not a plain ASCII address (name@domain)")
    if not _BASE_LOCAL.fullmatch(local) or "+" in local:
        raise ValueError(f"the local part of {address!r} cannot take a +token (no '+', "
                         "quotes or spaces)")
    if len(local) + 1 + token_length > MAX_LOCAL_PART:
        raise ValueError(f"the local part of {address!r} is too long for a +token: at most "
                         f"{MAX_LOCAL_PART - 1 - token_length} characters")
    domain = domain.rstrip(".")
    if len(domain) > 253 or not all(map(_LABEL.fullmatch, domain.split("."))):
        raise ValueError(f"the domain of {address!r} is not a host name")
    return local, domain


def _split(address: str, base: str) -> str | None:
    """The token of `address` when it is `base` plus one `+token`, else None."""
    if not isinstance(address, str) or not address.isascii():
        return None
    address = address.strip().removeprefix("<").removesuffix(">").lower()
    local, at, domain = address.rpartition("@")
    base_local, base_domain = _mailbox(base)
    if (not at or len(local.encode()) > MAX_LOCAL_PART or domain.rstrip(".") != base_domain
            or "@" in local or local.count("+") != 1):
        return None
    mailbox, _, token = local.partition("+")
    return token if mailbox == base_local else None


def reply_address(base: str, secret: str, kind: str, thread_id: str) -> str:
    """`base` with the signed token of a thread (`kind` request, item or contact, its
    typed ID): `support+r<id body>.<signature>@example.com`."""
    letter, prefix = REPLY_KINDS[kind]
    body = thread_id[len(prefix) + 1:]
    if not thread_id.startswith(prefix + "_") or not _BODY.fullmatch(body):
        raise ValueError(f"{kind} threads are named by {prefix}_ IDs")
    local, domain = _mailbox(base)
    return (f"{local}+{letter}{body}.{_signature(secret, REPLY_PURPOSE, kind, body)}"
            f"@{domain}")


def read_reply_address(address: str, base: str, secret: str) -> tuple[str, str] | None:
    """(kind, typed ID) of a reply address we made on `base`; None for anything else."""
    token = _split(address, base)
    match = _REPLY_TOKEN.fullmatch(token) if token else None
    if match is None:
        return None
    letter, body, signature = match.groups()
    kind, prefix = _KIND_BY_LETTER[letter]
    if not hmac.compare_digest(_signature(secret, REPLY_PURPOSE, kind, body), signature):
        return None
    return kind, f"{prefix}_{body}"


def return_path(base: str, secret: str, outbox_id: int) -> str:
    """The envelope sender of outbox message `outbox_id`: `bounces+m<id>.<signature>@...`."""
    if not 0 < outbox_id <= MAX_OUTBOX_ID:
        raise ValueError("an outbox message ID is a positive 64-bit integer")
    local, domain = _mailbox(base)
    return f"{local}+m{outbox_id}.{_signature(secret, RETURN_PURPOSE, str(outbox_id))}@{domain}"


def read_return_path(address: str, base: str, secret: str) -> int | None:
    """The outbox message ID of a return path we made on `base`; None for anything else."""
    token = _split(address, base)
    match = _RETURN_TOKEN.fullmatch(token) if token else None
    if match is None:
        return None
    number, signature = match.groups()
    if not hmac.compare_digest(_signature(secret, RETURN_PURPOSE, number), signature):
        return None
    outbox_id = int(number)
    return outbox_id if outbox_id <= MAX_OUTBOX_ID else None


@dataclass(frozen=True)
class MailTokens:
    """What an area needs to sign its emails' reply addresses and return paths: the secret
    key and the two base mailboxes (`[mail] reply_to`, `[mail] return_path`, resolved by
    the settings), built once by the app."""

    reply_to: str
    return_path: str
    secret: str = field(repr=False)

    @classmethod
    def from_settings(cls, settings) -> MailTokens:
        return cls(reply_to=settings.mail_reply_to, return_path=settings.mail_return_path,
                   secret=settings.secrets.secret_key)

    def reply_address(self, kind: str, thread_id: str) -> str:
        return reply_address(self.reply_to, self.secret, kind, thread_id)

    def read_reply_address(self, address: str) -> tuple[str, str] | None:
        return read_reply_address(address, self.reply_to, self.secret)

    def return_path_of(self, outbox_id: int) -> str:
        return return_path(self.return_path, self.secret, outbox_id)

    def read_return_path(self, address: str) -> int | None:
        return read_return_path(address, self.return_path, self.secret)

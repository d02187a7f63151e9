"""Keyring, field cipher and blind index: personal data is encrypted before it reaches a table.

A field is stored as `<key id>.<base64url(nonce | AES-256-GCM ciphertext and tag)>`. The
associated data binds a ciphertext to its column ("staff.email"), so one cannot be moved
into another column and still decrypt. Lookups use a keyed HMAC of the normalized value
(a blind index), so finding a row never needs decrypting the table.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Table

from contacts.core.errors import Invalid, LifelineError

NONCE_BYTES = 12


class DecryptionFailed(LifelineError):
    status = 500
    code = "decryption_failed"


Keyring = tuple[tuple[str, bytes], ...]


class FieldCipher:
    """Encrypts with the newest key of the keyring, decrypts with any of them.

    With a `reload` callable, the keyring is read again when a field names a key this
    process does not know, and every `reload_seconds` before encrypting, so a rotation
    started elsewhere reaches running processes without a restart.
    """

    def __init__(self, keyring: Keyring, *, reload: Callable[[], Keyring] | None = None,
                 reload_seconds: float = 10.0):
        self._reload = reload
        self._reload_seconds = reload_seconds
        self._install(keyring)

    def _install(self, keyring: Keyring) -> None:
        if not keyring:
            raise ValueError("a field cipher needs at least one key")
        self._keys = {key_id: AESGCM(key) for key_id, key in keyring}
        self.keyring = keyring
        self.active_key_id = keyring[-1][0]
        self.key_ids = tuple(key_id for key_id, _ in keyring)
        self._loaded_at = time.monotonic()

    def reload(self) -> None:
        if self._reload is not None:
            self._install(self._reload())

    def encrypt(self, plaintext: str, *, context: str) -> str:
        if self._reload and time.monotonic() - self._loaded_at > self._reload_seconds:
            self.reload()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.active_key_id].encrypt(
            nonce, plaintext.encode("utf-8"), context.encode("utf-8")
        )
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"{self.active_key_id}.{body}"

    def decrypt(self, stored: str, *, context: str) -> str:
        key_id, _, body = stored.partition(".")
        aead = self._keys.get(key_id)
        if aead is None and self._reload is not None:
            self.reload()
            aead = self._keys.get(key_id)
        if aead is None:
            raise DecryptionFailed(f"field encrypted with unknown key id {key_id!r}")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plaintext = aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except (InvalidTag, binascii.Error, ValueError):
            raise DecryptionFailed("field failed authentication") from None
        return plaintext.decode("utf-8")

    def needs_reencryption(self, stored: str) -> bool:
        return stored.partition(".")[0] != self.active_key_id


class BlindIndex:
    def __init__(self, key: bytes):
        self.key = key

    def digest(self, purpose: str, normalized: str) -> str:
        return hmac.digest(self.key, f"{purpose}\x00{normalized}".encode(), "sha256").hex()

    def email(self, address: str) -> str:
        return self.digest("email", normalize_email(address))


def normalize_email(address: str) -> str:
    """Lower-case the address and put its domain in IDNA (ASCII) form."""
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise Invalid("not an email address")
    try:
        ascii_domain = domain.strip(".").encode("idna").decode("ascii")
    except UnicodeError:
        raise Invalid("the email address has an invalid domain") from None
    return f"{local}@{ascii_domain}".lower()


class Crypto:
    """What services need to store and find personal data: the cipher and the blind index."""

    def __init__(self, field_keys: Keyring, blind_index_key: bytes,
                 reload_field_keys: Callable[[], Keyring] | None = None):
        self.cipher = FieldCipher(field_keys, reload=reload_field_keys)
        self.index = BlindIndex(blind_index_key)


@dataclass(frozen=True)
class EncryptedColumn:
    """A column holding FieldCipher values; key rotation re-encrypts every one listed."""

    table: Table
    column: str
    context: str


ENCRYPTED_COLUMNS: list[EncryptedColumn] = []


def encrypted_column(table: Table, column: str, context: str) -> str:
    """Register a column for key rotation; returns the context, for the model to use."""
    ENCRYPTED_COLUMNS.append(EncryptedColumn(table, column, context))
    return context

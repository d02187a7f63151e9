"""Field-key rotation: add a key to the keyring file, re-encrypt every registered column in
short batches while the service keeps serving, and retire a key no field uses any more.

Running processes pick the new key up by themselves (FieldCipher reloads its keyring when it
meets an unknown key id, and every few seconds before encrypting).
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Engine

from contacts.core.crypto import ENCRYPTED_COLUMNS, EncryptedColumn, FieldCipher
from contacts.core.errors import Conflict, Invalid
from contacts.core.settings import new_key_text, parse_keyring


def keyring_file(keys_dir: Path, environ: Mapping[str, str]) -> Path:
    """The file the field keys come from; refuses when they come from the environment."""
    if environ.get("LIFELINE_FIELD_KEYS"):
        raise Conflict("field_keys comes from LIFELINE_FIELD_KEYS: add the new key there on "
                       "every process, then run keys rotate --reencrypt-only")
    given = environ.get("LIFELINE_FIELD_KEYS_FILE")
    return Path(given) if given else keys_dir / "field_keys"


def add_key(path: Path) -> str:
    """Append a fresh key to the keyring file (atomically) and return its id."""
    keyring = parse_keyring(path.read_text())
    used = {key_id for key_id, _ in keyring}
    number = len(keyring) + 1
    while f"k{number}" in used:
        number += 1
    key_id = f"k{number}"
    lines = [f"{known}:{_encode(key)}" for known, key in keyring] + [f"{key_id}:{new_key_text()}"]
    _write_atomically(path, "\n".join(lines) + "\n")
    return key_id


def retire_key(path: Path, key_id: str, engine: Engine, *,
               needed_by: Callable[[str], list[str]] = lambda key_id: []) -> None:
    """Remove a key once no field and no retained snapshot (`needed_by`: the names of the
    snapshots holding fields under a key) needs it to decrypt."""
    keyring = parse_keyring(path.read_text())
    ids = [known for known, _ in keyring]
    if key_id not in ids:
        raise Invalid(f"no key {key_id!r} in the keyring ({', '.join(ids)})")
    if key_id == ids[-1]:
        raise Conflict(f"{key_id} is the active key; rotate to a new key first")
    in_use = count_fields(engine, key_id=key_id)
    if in_use:
        raise Conflict(f"{in_use} fields are still encrypted with {key_id}; "
                       "run keys rotate --reencrypt-only first")
    snapshots = needed_by(key_id)
    if snapshots:
        named = ", ".join(snapshots[:5]) + (f" and {len(snapshots) - 5} more"
                                            if len(snapshots) > 5 else "")
        raise Conflict(f"{key_id} is still needed to restore {len(snapshots)} snapshot(s): "
                       f"{named}; keep it until they are pruned or removed")
    _write_atomically(path, "\n".join(f"{known}:{_encode(key)}" for known, key in keyring
                                      if known != key_id) + "\n")


def _encode(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _write_atomically(path: Path, content: str) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".field_keys.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _prefix_is(column, key_id: str):
    prefix = f"{key_id}."
    return func.substr(column, 1, len(prefix)) == prefix


def count_fields(engine: Engine, *, key_id: str | None = None,
                 not_key_id: str | None = None) -> int:
    """Fields encrypted with `key_id`, or with any key but `not_key_id`."""
    total = 0
    with engine.connect() as connection:
        for registered in ENCRYPTED_COLUMNS:
            column = registered.table.c[registered.column]
            query = select(func.count()).select_from(registered.table).where(column.is_not(None))
            if key_id is not None:
                query = query.where(_prefix_is(column, key_id))
            if not_key_id is not None:
                query = query.where(~_prefix_is(column, not_key_id))
            total += connection.execute(query).scalar_one()
    return total


def reencrypt(engine: Engine, cipher: FieldCipher, *, batch_size: int = 500,
              progress: Callable[[int], None] | None = None) -> int:
    """Re-encrypt every field not under the cipher's active key; returns how many changed.

    Each batch is its own short transaction, and each UPDATE only applies if the field
    still holds the value read, so a concurrent write is never overwritten.
    """
    changed = 0
    for registered in ENCRYPTED_COLUMNS:
        changed += _reencrypt_column(engine, cipher, registered, batch_size, progress)
    return changed


def _reencrypt_column(engine: Engine, cipher: FieldCipher, registered: EncryptedColumn,
                      batch_size: int, progress: Callable[[int], None] | None) -> int:
    table = registered.table
    column = table.c[registered.column]
    (key,) = table.primary_key.columns
    active = cipher.active_key_id
    changed, last = 0, None
    statement = (update(table).where(key == bindparam("row_key"), column == bindparam("old"))
                 .values({registered.column: bindparam("new")}))
    while True:
        query = (select(key, column).where(column.is_not(None), ~_prefix_is(column, active))
                 .order_by(key).limit(batch_size))
        if last is not None:
            query = query.where(key > last)
        with engine.begin() as connection:
            rows = connection.execute(query).all()
            if not rows:
                return changed
            params = [{"row_key": row_key, "old": old,
                       "new": cipher.encrypt(cipher.decrypt(old, context=registered.context),
                                             context=registered.context)}
                      for row_key, old in rows]
            connection.execute(statement, params)
        changed += len(rows)
        last = rows[-1][0]
        if progress:
            progress(len(rows))

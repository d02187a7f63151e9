"""Where a request waits, encrypted and on disk, while the database cannot take it.

One file per request, named by its reference, written to a temporary name, fsynced, renamed
into place and the folder fsynced: once `put` returns, the request survives a crash. The
replay stores each file's request (once per reference, whatever happens in between) and
only then removes the file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from contacts.crypto import DecryptionFailed, FieldCipher

log = logging.getLogger(__name__)

CONTEXT = "intake.spool"
SUFFIX = ".req"


class Spool:
    def __init__(self, directory: Path, cipher: FieldCipher):
        self.directory = directory
        self.cipher = cipher

    def put(self, reference: str, record: dict) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        sealed = self.cipher.encrypt(json.dumps(record), context=CONTEXT).encode("ascii")
        final = self.directory / f"{reference}{SUFFIX}"
        temporary = self.directory / f".{reference}.tmp"
        with temporary.open("wb") as handle:
            handle.write(sealed)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        self._sync_folder()
        return final

    def pending(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"*{SUFFIX}"))

    def read(self, path: Path) -> dict | None:
        """The record in a spool file; None (and the file set aside as .bad) if it cannot be
        read, so one damaged file never blocks the others."""
        try:
            return json.loads(self.cipher.decrypt(path.read_text("ascii"), context=CONTEXT))
        except (DecryptionFailed, ValueError, OSError) as exc:
            log.error("spool file %s cannot be read (%s); kept as .bad", path.name,
                      type(exc).__name__)
            os.replace(path, path.with_suffix(".bad"))
            return None

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._sync_folder()

    def _sync_folder(self) -> None:
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

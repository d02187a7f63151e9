"""Where a request waits, encrypted and on disk, while the database cannot take it.

One file per request, named by its reference, written to a temporary name, fsynced, renamed
into place and the folder fsynced: once `put` returns, the request survives a crash. The
replay stores each file's request (once per reference, whatever happens in between) and
only then removes the file. A file that cannot be opened (damaged, or sealed with keys this
process does not hold) is left where it is, untouched, and reported (`unreadable`, /healthz).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlmodel import Session

from contacts.core.crypto import DecryptionFailed, FieldCipher

log = logging.getLogger(__name__)

CONTEXT = "intake.spool"
SUFFIX = ".req"


class Spool:
    def __init__(self, directory: Path, cipher: FieldCipher):
        self.directory = directory
        self.cipher = cipher
        self._unreadable: dict[str, str] = {}  # file name -> why it could not be opened
        self._guard = threading.Lock()

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
        """The record in a spool file; None if it cannot be read. The file is left in place
        (a process with other keys must not spoil it for the one that has them) and listed
        in `unreadable`, so one bad file never blocks the others and is seen."""
        try:
            record = json.loads(self.cipher.decrypt(path.read_text("ascii"), context=CONTEXT))
        except (DecryptionFailed, ValueError, OSError) as exc:
            with self._guard:
                first = path.name not in self._unreadable
                self._unreadable[path.name] = type(exc).__name__
            if first:
                log.error("spool file %s cannot be read (%s); left in place", path.name,
                          type(exc).__name__)
            return None
        with self._guard:
            self._unreadable.pop(path.name, None)
        return record

    def unreadable(self) -> dict[str, str]:
        """The files still waiting that this process could not open, and why."""
        waiting = {path.name for path in self.pending()}
        with self._guard:
            return {name: why for name, why in self._unreadable.items() if name in waiting}

    @contextmanager
    def replaying(self) -> Iterator[bool]:
        """Whether this caller may replay now: one replay at a time per spool folder, across
        the threads and processes of the machine (a lock file; others skip this round)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ".replay.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._sync_folder()

    def _sync_folder(self) -> None:
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def spool_health(session: Session, *, spool: Spool) -> dict:
    """The /healthz probe of this machine's spool: requests waiting, and how many files this
    process cannot open (damaged, or sealed with other keys), left in place for one that can.
    Counts only: a file's name is a request's reference, so the names go to the log (see
    Spool.read), never to the public page."""
    unreadable = spool.unreadable()
    return {"ok": not unreadable, "waiting": len(spool.pending()),
            "unreadable": len(unreadable)}

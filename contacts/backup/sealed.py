"""The sealed file format of a snapshot: a short plaintext header, then chunks sealed with
AES-256-GCM under the backup key (not the field keys). Each chunk's associated data holds the
header, its number and whether it is the last, so a changed, reordered, dropped or truncated
byte is refused. Inside: a "#table" line per table, its rows' canonical lines, and last a
"#manifest" line; reading yields those parts, and verifying checks them against the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contacts.backup.canonical import Manifest, SnapshotRefused
from contacts.core.errors import Invalid

MAGIC = b"LIFELINE-BACKUP\n"
FORMAT = 1
CHUNK_BYTES = 1 << 20


class Sealer:
    def __init__(self, key: bytes, handle, header: bytes):
        self.aead, self.handle, self.header = AESGCM(key), handle, header
        self.prefix = os.urandom(8)
        self.buffer = bytearray()
        self.counter = 0
        handle.write(self.prefix)

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) < CHUNK_BYTES:
            return
        sealed = 0
        with memoryview(self.buffer) as view:
            while len(view) - sealed >= CHUNK_BYTES:
                self._seal(view[sealed:sealed + CHUNK_BYTES], final=False)
                sealed += CHUNK_BYTES
        del self.buffer[:sealed]

    def close(self) -> None:
        self._seal(bytes(self.buffer), final=True)

    def _seal(self, chunk, *, final: bool) -> None:
        nonce = self.prefix + struct.pack(">I", self.counter)
        aad = self.header + struct.pack(">I?", self.counter, final)
        sealed = self.aead.encrypt(nonce, chunk, aad)
        self.handle.write(struct.pack(">I?", len(sealed), final) + sealed)
        self.counter += 1


def _open_chunks(key: bytes, handle, header: bytes) -> Iterator[bytes]:
    aead = AESGCM(key)
    prefix = handle.read(8)
    counter, final = 0, False
    while not final:
        frame = handle.read(5)
        if len(frame) < 5:
            raise SnapshotRefused("the snapshot is truncated (its last chunk is missing)")
        length, final = struct.unpack(">I?", frame)
        sealed = handle.read(length)
        nonce = prefix + struct.pack(">I", counter)
        try:
            yield aead.decrypt(nonce, sealed, header + struct.pack(">I?", counter, final))
        except InvalidTag:
            raise SnapshotRefused(
                f"the snapshot failed authentication at chunk {counter}: it was changed, "
                "damaged, or made with another backup key") from None
        counter += 1
    if handle.read(1):
        raise SnapshotRefused("the snapshot has bytes after its last chunk")


def write_header(handle, header: bytes) -> None:
    """A snapshot starts in plaintext: the magic bytes, the header's length, the header."""
    handle.write(MAGIC + struct.pack(">I", len(header)) + header)


def read_header(handle) -> tuple[bytes, dict]:
    if handle.read(len(MAGIC)) != MAGIC:
        raise SnapshotRefused("not a Lifeline backup file")
    (length,) = struct.unpack(">I", handle.read(4))
    header = handle.read(length)
    try:
        meta = json.loads(header)
    except ValueError:
        raise SnapshotRefused("the snapshot header is damaged") from None
    if meta.get("format") != FORMAT:
        raise SnapshotRefused(f"unknown snapshot format {meta.get('format')!r}")
    return header, meta


def _parse_lines(lines: list[bytes]) -> list:
    """Each line is one JSON value; parse them all at once, one by one if that fails."""
    try:
        items = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        items = None
    if items is None or len(items) != len(lines):
        try:
            items = [json.loads(line) for line in lines]
        except ValueError:
            raise SnapshotRefused("the snapshot's contents are damaged") from None
    return items


def snapshot_parts(path: Path, backup_key: bytes) -> Iterator[tuple[str, object]]:
    """Yield ("table", (name, columns)), ("rows", (lines, rows)) for runs of rows (their
    lines as stored, and parsed), and finally ("manifest", dict)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise Invalid(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        header, _meta = read_header(handle)
        pending = b""
        manifest_seen = False
        for chunk in _open_chunks(backup_key, handle, header):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if not lines:
                continue
            if manifest_seen:
                raise SnapshotRefused("the snapshot has lines after its manifest")
            items = _parse_lines(lines)
            start = 0
            for index, item in enumerate(items):
                if type(item) is not list or not item:
                    raise SnapshotRefused("the snapshot's contents are damaged")
                marker = item[0]
                if marker != "#table" and marker != "#manifest":
                    continue
                if index > start:
                    yield "rows", (lines[start:index], items[start:index])
                start = index + 1
                if marker == "#table":
                    yield "table", (item[1], item[2])
                else:
                    if index != len(items) - 1:
                        raise SnapshotRefused("the snapshot has lines after its manifest")
                    manifest_seen = True
                    yield "manifest", item[1]
            if start < len(items):
                yield "rows", (lines[start:], items[start:])
        if pending or not manifest_seen:
            raise SnapshotRefused("the snapshot ends without its manifest")


def verify_snapshot(path: Path, backup_key: bytes) -> Manifest:
    """Decrypt and authenticate the whole file and check it against its own manifest."""
    counted: dict[str, dict] = {}
    current = None
    digest = None
    manifest = None
    for kind, payload in snapshot_parts(path, backup_key):
        if kind == "table":
            current, digest = payload[0], hashlib.sha256()
            counted[current] = {"rows": 0, "sha256": digest.hexdigest()}
        elif kind == "rows":
            if current is None:
                raise SnapshotRefused("the snapshot has rows before its first table")
            lines = payload[0]
            # The lines as stored are the canonical lines the manifest's checksums cover.
            digest.update(b"\n".join(lines) + b"\n")
            counted[current]["rows"] += len(lines)
            counted[current]["sha256"] = digest.hexdigest()
        else:
            manifest = Manifest(**payload)
    for name, figures in counted.items():
        if manifest.tables.get(name) != figures:
            raise SnapshotRefused(f"table {name} does not match the snapshot's manifest")
    return manifest

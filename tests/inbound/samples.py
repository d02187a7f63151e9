"""The inbound parsing tests' messages: real ones from fixtures/, read as bytes and parsed
as the reader will, and the edits a server (or an attacker) makes to their headers."""

from __future__ import annotations

from pathlib import Path

from contacts.inbound.message import Inbound
from contacts.inbound.parsing import parse

FIXTURES = Path(__file__).parent / "fixtures"
TRUSTED = ("mx.lifeline.test",)


def eml(name: str) -> bytes:
    return (FIXTURES / f"{name}.eml").read_bytes()


def parsed(raw: bytes, *, trusted: tuple[str, ...] = TRUSTED,
           attachment_max_bytes: int = 10 * 1024 * 1024) -> Inbound:
    return parse(raw, trusted_authserv_ids=trusted, attachment_max_bytes=attachment_max_bytes)


def with_headers(raw: bytes, *lines: str) -> bytes:
    """`raw` with `lines` prepended as header lines, as a server on the way adds them."""
    return "".join(f"{line}\n" for line in lines).encode() + raw


def without_headers(raw: bytes, *names: str) -> bytes:
    """`raw` without the (single-line) headers `names`."""
    head, separator, body = raw.partition(b"\n\n")
    kept = [line for line in head.split(b"\n")
            if not any(line.lower().startswith(name.lower().encode() + b":") for name in names)]
    return b"\n".join(kept) + separator + body

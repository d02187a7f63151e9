"""Typed IDs: `acc_...`, `site_...`, `app_...`, `ctc_...`. Parse, format, refuse the wrong kind.

The deletion API in the incident behind Lifeline took a site ID where an app ID was meant.
Every ID here carries its kind, and every input that takes an ID names the kind it expects.
The body is 26 Crockford base32 characters: 48 bits of milliseconds, then 80 random bits,
so IDs sort by creation time and index well.
"""

from __future__ import annotations

import os
import re
import time
from typing import Annotated

from pydantic import WithJsonSchema

from contacts.core.errors import Invalid, WrongKind

KINDS = {
    "acc": "account",
    "site": "site",
    "app": "app",
    "ctc": "contact",
    "stf": "staff user",
    "tok": "API token",
    "del": "bulk deletion",
    "req": "support request",
    "inc": "incident",
    "upd": "incident update",
    "itm": "work item",
    "whk": "webhook endpoint",
    "inm": "inbound message",
}

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
BODY_LENGTH = 26
_BODY = "[0-9a-hjkmnp-tv-z]{26}"
ID_PATTERN = re.compile(rf"^([a-z]{{2,8}})_({_BODY})$")
# A support request's reference, as the intake makes them (LL-7KQ2-9XHD: no 0/O, no 1/I).
REFERENCE_PATTERN = "^LL-[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}$"


def id_pattern(*kinds: str) -> str:
    """The JSON Schema pattern of an ID of one of these kinds (for the OpenAPI document)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown ID kinds {sorted(unknown)}")
    return f"^(?:{'|'.join(kinds)})_{_BODY}$"


def typed_id(*kinds: str, or_also: str | None = None):
    """A str field that holds an ID of one of these kinds (or the word `or_also`, such as
    "none" or ""), described with its pattern so clients and fuzzers send well-formed ones.
    The service checks it (parse_id): a malformed ID or one of another kind is refused
    (400) naming the kind it expected, as before."""
    pattern = id_pattern(*kinds)
    if or_also is not None:
        pattern = f"^(?:{pattern[1:-1]}|{re.escape(or_also)})$"
    return Annotated[str, WithJsonSchema({
        "type": "string", "pattern": pattern,
        "examples": [f"{kinds[0]}_01jd8x3k2m9q7r5t4v6w8y0z1b"]})]


AccountId = typed_id("acc")
ContactId = typed_id("ctc")
StaffId = typed_id("stf")
IncidentId = typed_id("inc")
ItemId = typed_id("itm")
VaultId = typed_id("acc", "site", "app", "ctc")
# What each path parameter of the API names, by its name in the route.
PATH_PARAMETER_PATTERNS = {"account_id": id_pattern("acc"), "site_id": id_pattern("site"),
                           "app_id": id_pattern("app"), "contact_id": id_pattern("ctc"),
                           "staff_id": id_pattern("stf"), "token_id": id_pattern("tok"),
                           "deletion_id": id_pattern("del"), "request_id": id_pattern("req"),
                           "incident_id": id_pattern("inc"), "update_id": id_pattern("upd"),
                           "item_id": id_pattern("itm"), "endpoint_id": id_pattern("whk"),
                           "reference": REFERENCE_PATTERN}


# Every 10-bit group as two characters: 13 lookups make an ID (imports make many of them).
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]
_SHIFTS = tuple(range(120, -10, -10))


def new_id(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown ID kind {kind!r}")
    # 130 bits: two zero bits, 48 bits of milliseconds, 80 random bits; 26 characters.
    value = (time.time_ns() // 1_000_000 << 80) | int.from_bytes(os.urandom(10))
    return kind + "_" + "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def kind_of(value: str) -> str | None:
    match = ID_PATTERN.match(value)
    if match and match.group(1) in KINDS:
        return match.group(1)
    return None


def with_article(noun: str) -> str:
    """'an account', 'a site': for messages that name a kind of thing."""
    return ("an " if noun[0] in "aeiouAEIOU" else "a ") + noun


def parse_id(value: object, expected: str) -> str:
    """Return `value` if it is a well-formed ID of kind `expected`; otherwise say what it is."""
    if expected not in KINDS:
        raise ValueError(f"unknown ID kind {expected!r}")
    wanted = with_article(f"{KINDS[expected]} ID ({expected}_...)")
    if not isinstance(value, str):
        raise Invalid(f"expected {wanted}, got {type(value).__name__}")
    value = value.strip()
    got = kind_of(value)
    if got is None:
        raise Invalid(f"expected {wanted}, got a malformed ID", details={"expected": expected})
    if got != expected:
        raise WrongKind(
            f"expected {wanted}, got {with_article(KINDS[got])} ID ({got}_...)",
            details={"expected": expected, "got": got},
        )
    return value

"""A request's reference (`LL-XXXX-XXXX`, what the customer quotes): drawn at random, read
back from what people type; and finding a request by its reference or its ID."""

from __future__ import annotations

import secrets

from sqlmodel import Session, select

from contacts.core.db import get_or_404
from contacts.core.errors import NotFound
from contacts.intake.models import SupportRequest

REFERENCE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, no 1/I


def new_reference() -> str:
    """40 random bits as 8 characters of the 32-letter alphabet, from one read of the
    system's random source (eight `secrets.choice` calls were eight reads on the hot path)."""
    value = int.from_bytes(secrets.token_bytes(5))
    letters = "".join([REFERENCE_ALPHABET[(value >> shift) & 31] for shift in range(35, -5, -5)])
    return f"LL-{letters[:4]}-{letters[4:]}"


def normalize_reference(text: str) -> str | None:
    """'ll 7kq2 9xhd' -> 'LL-7KQ2-9XHD'; None when it cannot be a reference."""
    letters = "".join(ch for ch in text.upper() if ch.isalnum()).removeprefix("LL")
    letters = letters.replace("O", "0").replace("I", "1")
    if len(letters) != 8 or any(ch not in REFERENCE_ALPHABET for ch in letters):
        return None
    return f"LL-{letters[:4]}-{letters[4:]}"


def get_by_reference(*, session: Session, reference: str) -> SupportRequest:
    normalized = normalize_reference(reference)
    request = normalized and session.exec(
        select(SupportRequest).where(SupportRequest.reference == normalized)).first()
    if not request:
        raise NotFound("There is no request with this reference.")
    return request


def get_request(*, session: Session, request_id: str) -> SupportRequest:
    return get_or_404(session, SupportRequest, request_id, "req",
                      "There is no request with this ID.")


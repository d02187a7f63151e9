"""Signed links, one way for every area. A link token is a keyed digest bound to what the
link opens (a request's page, an account's status page): it never expires and reveals
nothing. A sealed payload carries its data and its age (a one-click confirmation, a
subscription link): it is refused once too old. Each purpose keeps its own prefix or salt,
so the links already sent keep working."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from contacts.core.errors import Invalid


def link_token(secret_key: str, purpose: str, *parts: str) -> str:
    """18 bytes of HMAC-SHA256 over the purpose and the parts, URL-safe (24 characters)."""
    message = "\x00".join((purpose, *parts)).encode()
    digest = hmac.digest(secret_key.encode(), message, hashlib.sha256)
    return base64.urlsafe_b64encode(digest[:18]).decode("ascii")


def token_matches(secret_key: str, purpose: str, token: str | None, *parts: str) -> bool:
    return bool(token) and hmac.compare_digest(link_token(secret_key, purpose, *parts),
                                               token or "")


def seal(secret_key: str, purpose: str, payload: Any) -> str:
    return URLSafeTimedSerializer(secret_key, salt=purpose).dumps(payload)


def unseal(secret_key: str, purpose: str, token: str, *, max_age: timedelta | None,
           expired: str, invalid: str) -> Any:
    """The payload of a sealed token; `Invalid` with `expired` past its age (None: no
    limit), with `invalid` for anything else (forged, cut, another purpose's)."""
    seconds = int(max_age.total_seconds()) if max_age is not None else None
    try:
        return URLSafeTimedSerializer(secret_key, salt=purpose).loads(token, max_age=seconds)
    except SignatureExpired:
        raise Invalid(expired) from None
    except BadSignature:
        raise Invalid(invalid) from None

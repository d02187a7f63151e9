"""The codes and signed links of a request: the 6-digit code and its keyed digest, the
one-click link that proves the address (itsdangerous), and the status token and link that
open a request's page. Pure functions of the `Intake`'s keys: no database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from itsdangerous import URLSafeTimedSerializer

from contacts.intake.config import Intake


def new_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def code_digest(intake: Intake, request_id: str, code: str) -> str:
    return intake.crypto.index.digest("request-code", f"{request_id}\x00{code}")


def serializer(intake: Intake) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(intake.secret_key, salt="request-verification")


def verify_link(intake: Intake, reference: str, digest: str) -> str:
    """The one-click link of the emailed code: signed, bound to that code's digest."""
    link_token = serializer(intake).dumps({"r": reference, "c": digest[:24]})
    return f"{intake.base_url}/requests/{reference}/confirm/{link_token}"


def status_token(intake: Intake, reference: str) -> str:
    digest = hmac.digest(intake.secret_key.encode(), f"request-status\x00{reference}".encode(),
                         hashlib.sha256)
    return base64.urlsafe_b64encode(digest[:18]).decode("ascii")


def token_opens(intake: Intake, reference: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(status_token(intake, reference), token or "")


def status_link(intake: Intake, reference: str) -> str:
    return f"{intake.base_url}/requests/{reference}?t={status_token(intake, reference)}"

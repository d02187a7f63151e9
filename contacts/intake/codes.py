"""The codes and signed links of a request: the 6-digit code and its keyed digest, the
one-click link that proves the address (itsdangerous), and the status token and link that
open a request's page. Pure functions of the `Intake`'s keys: no database."""

from __future__ import annotations

import secrets

from contacts.core import links
from contacts.intake.config import Intake

LINK_PURPOSE = "request-verification"
STATUS_PURPOSE = "request-status"


def new_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def code_digest(intake: Intake, request_id: str, code: str) -> str:
    return intake.crypto.index.digest("request-code", f"{request_id}\x00{code}")


def verify_link(intake: Intake, reference: str, digest: str) -> str:
    """The one-click link of the emailed code: signed, bound to that code's digest."""
    link_token = links.seal(intake.secret_key, LINK_PURPOSE, {"r": reference, "c": digest[:24]})
    return f"{intake.base_url}/requests/{reference}/confirm/{link_token}"


def status_token(intake: Intake, reference: str) -> str:
    return links.link_token(intake.secret_key, STATUS_PURPOSE, reference)


def token_opens(intake: Intake, reference: str, token: str | None) -> bool:
    return links.token_matches(intake.secret_key, STATUS_PURPOSE, token, reference)


def status_link(intake: Intake, reference: str) -> str:
    return f"{intake.base_url}/requests/{reference}?t={status_token(intake, reference)}"

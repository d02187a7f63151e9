"""POST /api/v1/requests: the contact form for scripts and the product's own fallback pages
(public: no token, no login). GET /api/v1/requests/<reference>: a request's states for staff
scripts (scope `read`)."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint
from pydantic import BaseModel, Field

from contacts.core.api import API_PREFIX, operation
from contacts.core.db import request_session
from contacts.core.errors import Invalid
from contacts.core.inputs import cap_bodies
from contacts.core.ratelimit import limited
from contacts.intake import service
from contacts.intake.references import normalize_reference
from contacts.intake.schemas import ACCEPTED_MESSAGE, RequestAccepted, RequestIn
from contacts.intake.web import INTAKE_LIMITS, receive

bp = Blueprint("intake_api", __name__, url_prefix=API_PREFIX)
cap_bodies(bp, "intake_max_body_bytes")


@bp.post("/requests")
@limited(*INTAKE_LIMITS)
@operation(scope=None, response=RequestAccepted, status=202, body=RequestIn, tags=("intake",))
def create_request(json: RequestIn):
    """Ask for help without a login or a working site.

    Answers 202 with a reference, the same for every address. An email with a code to
    confirm the address, and a link to follow the request, goes out separately.
    """
    return RequestAccepted(reference=receive(json), message=ACCEPTED_MESSAGE), 202


class CandidateOut(BaseModel):
    account_id: str
    score: float = Field(description="0 to 1, the evidence combined.")
    reasons: str = Field(description="The evidence, in words, separated by '; ' (no personal "
                                     "data).")


class RequestStateOut(BaseModel):
    """A request's states, times and IDs; nothing the requester typed."""

    id: str
    reference: str
    status: str = Field(description="open or closed")
    severity: str = Field(description="As the requester chose it: critical, high, normal, low.")
    verification: str = Field(description="unverified, email_verified, authorized or "
                                          "callback_confirmed")
    trust_rank: int = Field(description="0 authorized or called back, 1 verified email, "
                                        "2 unverified: the queue's first sort key.")
    priority: int = Field(description="1 (highest) to 4.")
    account_id: str | None = Field(description="The account the request is about, once "
                                               "matching proposed one or staff attached it.")
    account_source: str | None = Field(description="match (proposed by matching) or staff "
                                                   "(attached by staff); null with no account.")
    contact_id: str | None = Field(description="The account's contact the verified address "
                                               "belongs to (authorized), or the one called "
                                               "back.")
    received_at: datetime
    stored_at: datetime = Field(description="Later than received_at when the request waited "
                                            "in the spool.")
    verified_at: datetime | None
    processed_at: datetime | None = Field(description="When matching ran; null until then.")
    candidates: list[CandidateOut] = Field(description="The accounts matching proposed, best "
                                                       "first.")


@bp.get("/requests/<reference>")
@operation(scope="read", response=RequestStateOut, tags=("intake",))
def read_request(reference: str):
    """A support request by its reference: verification, trust, the account matched and the
    candidates, as IDs and states. Answers 400 for what cannot be a reference, 404 for one
    that is not stored."""
    if normalize_reference(reference) is None:
        raise Invalid("This is not a request reference; they look like LL-7KQ2-9XHD.")
    state = service.request_state(session=request_session(), reference=reference)
    request = state.request
    return RequestStateOut(
        id=request.id, reference=request.reference, status=request.status,
        severity=request.severity, verification=request.verification,
        trust_rank=request.trust_rank, priority=request.priority,
        account_id=request.account_id, account_source=request.account_source,
        contact_id=request.contact_id, received_at=request.received_at,
        stored_at=request.stored_at, verified_at=request.verified_at,
        processed_at=request.processed_at,
        candidates=[CandidateOut(account_id=row.account_id, score=row.score,
                                 reasons=row.reasons) for row in state.candidates])


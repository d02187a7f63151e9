"""POST /api/v1/requests: the contact form for scripts and the product's own fallback pages.
Public: no token, no login."""

from __future__ import annotations

from flask import Blueprint

from contacts.api import API_PREFIX, operation
from contacts.intake.schemas import ACCEPTED_MESSAGE, RequestAccepted, RequestIn
from contacts.intake.web import INTAKE_LIMITS, receive, refuse_large_bodies
from contacts.ratelimit import limited

bp = Blueprint("intake_api", __name__, url_prefix=API_PREFIX)


@bp.post("/requests")
@limited(*INTAKE_LIMITS)
@operation(scope=None, response=RequestAccepted, status=202, body=RequestIn, tags=("intake",))
def create_request(json: RequestIn):
    """Ask for help without a login or a working site.

    Answers 202 with a reference, the same for every address. An email with a code to
    confirm the address, and a link to follow the request, goes out separately.
    """
    return RequestAccepted(reference=receive(json), message=ACCEPTED_MESSAGE), 202


bp.before_request(refuse_large_bodies)

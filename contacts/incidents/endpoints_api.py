"""Accounts' webhook endpoints over JSON (`webhooks:write`): register, list, ping, rotate the
secret; and the events they receive, in the document's `webhooks` section."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, g
from pydantic import BaseModel, ConfigDict, Field

from contacts.core.api import API_PREFIX, Text, from_row, operation, webhook_event
from contacts.core.db import request_session, utcnow
from contacts.incidents import endpoints
from contacts.incidents.events import (
    SIGNATURE_HELP,
    IncidentUpdateEvent,
    PingEvent,
)
from contacts.incidents.web import desk

bp = Blueprint("webhooks_api", __name__, url_prefix=API_PREFIX)

webhook_event("incident.update", IncidentUpdateEvent, SIGNATURE_HELP)
webhook_event("webhook.ping", PingEvent, SIGNATURE_HELP)

SCOPE = "webhooks:write"


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Text = Field(min_length=1, max_length=2048, description=(
        "An http:// or https:// address on the public internet (https:// only in "
        "production); no user name, no redirects followed."))


class EndpointOut(BaseModel):
    id: str = Field(description="whk_...")
    account_id: str
    url: str
    created_at: datetime
    rotated_at: datetime | None = Field(description="When the secret was last rotated.")
    quarantined_at: datetime | None = Field(description="Set when a message failed to it "
                                                        "for good; register it again to "
                                                        "resume.")


class EndpointWithSecret(BaseModel):
    endpoint: EndpointOut
    secret: str = Field(description="`whsec_<base64>`, shown only in this answer: the key "
                                    "of the Standard Webhooks signature.")


class EndpointList(BaseModel):
    endpoints: list[EndpointOut]


class PingOut(BaseModel):
    delivered: bool = Field(description="The endpoint answered 2xx within the deadline.")
    error: str | None = Field(description="What the attempt met otherwise.")


def _out(endpoint) -> EndpointOut:
    return from_row(EndpointOut, endpoint)


@bp.post("/accounts/<account_id>/webhooks")
@operation(scope=SCOPE, response=EndpointWithSecret, status=201, body=EndpointIn,
           tags=("webhooks",))
def register_endpoint(account_id: str, json: EndpointIn):
    """Register an endpoint for the account's updates (the same URL again: a new secret,
    out of quarantine). A URL that is not on the public internet is refused (400 naming
    why)."""
    endpoint, secret = endpoints.register_endpoint(
        session=request_session(), desk=desk(), actor=g.actor, account_id=account_id,
        url=json.url, now=utcnow())
    return EndpointWithSecret(endpoint=_out(endpoint), secret=secret), 201


@bp.get("/accounts/<account_id>/webhooks")
@operation(scope=SCOPE, response=EndpointList, tags=("webhooks",))
def list_endpoints(account_id: str):
    """The account's endpoints (never their secrets)."""
    found = endpoints.endpoints(session=request_session(), account_id=account_id)
    return EndpointList(endpoints=[_out(endpoint) for endpoint in found])


@bp.post("/accounts/<account_id>/webhooks/<endpoint_id>/ping")
@operation(scope=SCOPE, response=PingOut, tags=("webhooks",))
def ping_endpoint(account_id: str, endpoint_id: str):
    """Send a signed `webhook.ping` now and say how the endpoint answered."""
    result = endpoints.ping(session=request_session(), desk=desk(), actor=g.actor,
                            account_id=account_id, endpoint_id=endpoint_id, now=utcnow())
    return PingOut(delivered=result.delivered, error=result.error)


@bp.post("/accounts/<account_id>/webhooks/<endpoint_id>/rotate")
@operation(scope=SCOPE, response=EndpointWithSecret, tags=("webhooks",))
def rotate_secret(account_id: str, endpoint_id: str):
    """A new secret, shown once, signs every attempt from now on, retries of messages
    queued earlier included; the old one signs nothing more."""
    endpoint, secret = endpoints.rotate_secret(
        session=request_session(), desk=desk(), actor=g.actor, account_id=account_id,
        endpoint_id=endpoint_id, now=utcnow())
    return EndpointWithSecret(endpoint=_out(endpoint), secret=secret)

"""What the public form and the API share in front of the service: the rate limits (per
client address, per claimed email, per claimed domain with public webmail domains exempt),
and receiving a request."""

from __future__ import annotations

from flask import current_app, request

from contacts.db import utcnow
from contacts.intake import service
from contacts.intake.matching import is_public_email_domain
from contacts.intake.schemas import RequestIn
from contacts.mail import LANGUAGES, render_message
from contacts.ratelimit import RateLimit


def _claimed_email() -> str:
    if request.mimetype == "application/json":
        body = request.get_json(silent=True)
        value = body.get("email") if isinstance(body, dict) else None
    else:
        value = request.form.get("email")
    if not isinstance(value, str):
        return ""
    value = value.strip().lower()
    local, at, domain = value.rpartition("@")
    return value if at and local and domain and len(value) <= 254 else ""


def claimed_email() -> str:
    return "intake-email:" + _claimed_email()


def claimed_domain() -> str:
    return "intake-domain:" + _claimed_email().rpartition("@")[2]


def no_email() -> bool:
    return not _claimed_email()


def no_company_domain() -> bool:
    email = _claimed_email()
    return not email or is_public_email_domain(email.rpartition("@")[2])


INTAKE_LIMITS = (
    RateLimit("intake_rate_limit_per_ip"),
    RateLimit("intake_rate_limit_per_email", key=claimed_email, exempt=no_email),
    RateLimit("intake_rate_limit_per_domain", key=claimed_domain, exempt=no_company_domain),
)


def intake() -> service.Intake:
    return current_app.extensions["lifeline.intake"]


def renderer() -> service.Renderer:
    environment = current_app.jinja_env
    return lambda kind, locale, values: render_message(environment, kind, locale, values)


def receive(given: RequestIn) -> str:
    """Store (or spool) a request; the same work whoever is asking."""
    draft = service.draft_request(
        given, locale=request.accept_languages.best_match(LANGUAGES) or "en", now=utcnow())
    stored = current_app.extensions["lifeline.request_writer"].write(draft)
    return stored or draft.reference  # spooled: kept under the reference it was drafted with

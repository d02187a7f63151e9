"""What the public form and the API share in front of the service: the rate limits (per
client address, per claimed mailbox, per claimed registrable domain with public webmail
domains exempt; one budget for both, keyed by digests, see limits.py) and receiving a
request (the body cap is contacts.core.inputs.cap_bodies)."""

from __future__ import annotations

from flask import current_app, g, request

from contacts.core.db import utcnow
from contacts.core.mail import LANGUAGES, Renderer, render_message
from contacts.core.ratelimit import RateLimit
from contacts.core.services import services
from contacts.intake import limits
from contacts.intake.config import Intake
from contacts.intake.matching import is_public_email_domain
from contacts.intake.schemas import RequestIn
from contacts.intake.service import RequestWriter
from contacts.intake.writer import draft_request


def _claimed_email() -> str:
    if request.mimetype == "application/json":
        body = request.get_json(silent=True)
        value = body.get("email") if isinstance(body, dict) else None
    else:
        value = request.form.get("email")
    return value.strip() if isinstance(value, str) and len(value.strip()) <= 254 else ""


def _claimed() -> limits.LimitKeys | None:
    """The claimed address's limit keys, worked out once per request."""
    if "intake_limit_keys" not in g:
        g.intake_limit_keys = limits.limit_keys(services().crypto,
                                                _claimed_email())
    return g.intake_limit_keys


def claimed_email() -> str:
    keys = _claimed()
    return keys.email if keys else "intake-email:none"


def claimed_domain() -> str:
    keys = _claimed()
    return keys.domain if keys else "intake-domain:none"


def no_email() -> bool:
    return _claimed() is None


def no_company_domain() -> bool:
    keys = _claimed()
    return keys is None or is_public_email_domain(keys.registrable_domain)


# One budget for the form and the API: each limit has one scope that both views share.
INTAKE_LIMITS = (
    RateLimit("intake_rate_limit_per_ip", scope="intake-ip"),
    RateLimit("intake_rate_limit_per_email", key=claimed_email, exempt=no_email,
              scope="intake-email"),
    RateLimit("intake_rate_limit_per_domain", key=claimed_domain, exempt=no_company_domain,
              scope="intake-domain"),
)


def intake() -> Intake:
    return services().get(Intake)


def renderer() -> Renderer:
    environment = current_app.jinja_env
    return lambda kind, locale, values: render_message(environment, kind, locale, values)


def receive(given: RequestIn) -> str:
    """Store (or spool) a request; the same work whoever is asking."""
    draft = draft_request(
        given, locale=request.accept_languages.best_match(LANGUAGES) or "en", now=utcnow())
    stored = services().get(RequestWriter).write(draft)
    return stored or draft.reference  # spooled: kept under the reference it was drafted with

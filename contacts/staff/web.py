"""What the sign-in pages share: the limits on failed attempts, known devices, the sign-in
in progress between its password and its second factor, and the two-factor gate.

Limits (failures only; a success gives its attempt back), for the password and the code
steps together:
- per client address (`security.login_rate_limit`), whatever account is named;
- per account and client (`login_rate_limit_per_client`): the client is a known device of
  the account when it has one, else its address;
- per account from every client that is not one of its known devices
  (`login_rate_limit_per_email`). Past it, strangers wait for the window to pass, while
  the staff member's own browser still signs in with the right password.
A signed-in member's codes (replacing recovery codes) fall under the first two, its session
being the client: strangers cannot spend them.
A known device is a browser that completed a sign-in to the account (both factors) in the
last `security.known_device_days`: it carries a signed cookie naming the account's keyed
email digest and a random device ID. Limiter keys hold those digests, never an address.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from flask import current_app, g, redirect, render_template, request, session, url_for
from flask_login import UserMixin, current_user, login_user, logout_user
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.wrappers import Response

from contacts.core.access import rule_for, safe_next
from contacts.core.audit import Actor
from contacts.core.db import request_session
from contacts.core.errors import ConfigError
from contacts.core.ratelimit import Attempt, failure_counter_of
from contacts.core.services import services
from contacts.staff import service, twofactor
from contacts.staff.models import StaffUser

DEVICE_COOKIE = "lifeline_device"
SIGN_IN = "lifeline.sign_in"  # the sign-in in progress, in the (signed) session cookie
SECOND_FACTOR = "lifeline.second_factor"  # how the signed-in session passed its second step
SIGN_IN_SECONDS = 600  # from the right password to the second factor
DEVICE_ACCOUNTS = 5  # accounts one browser remembers


@dataclass
class SignedInStaff(UserMixin):
    """The signed-in staff member as Flask-Login sees it; no personal data."""

    id: str
    role: str
    identity: str

    @classmethod
    def of(cls, user: StaffUser) -> SignedInStaff:
        return cls(id=user.id, role=user.role, identity=service.session_identity(user))

    def get_id(self) -> str:
        return self.identity


def settings():
    return services().settings


def crypto():
    return services().crypto


def check_settings(app) -> None:
    from contacts.core.access import ROLES

    unknown = set(services(app).settings.security_require_2fa_roles) - set(ROLES)
    if unknown:
        raise ConfigError(f"security require_2fa_roles: unknown roles {sorted(unknown)}; "
                          f"choose from {', '.join(ROLES)}")


def requires_two_factor(role: str) -> bool:
    return twofactor.is_required(role, settings().security_require_2fa_roles)


# -- known devices --------------------------------------------------------------------------


def _device_serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key, salt="lifeline.known-device")


def _device() -> dict:
    try:
        value = _device_serializer().loads(request.cookies.get(DEVICE_COOKIE, ""))
    except BadSignature:
        return {}
    ok = (isinstance(value, dict) and isinstance(value.get("id"), str)
          and isinstance(value.get("accounts"), dict))
    return value if ok else {}


def known_device(account: str) -> str | None:
    """This browser's device ID when it is a known device of the account, else None."""
    device = _device()
    signed_in_at = device.get("accounts", {}).get(account)
    max_age = settings().security_known_device_days * 86400
    if not isinstance(signed_in_at, int) or time.time() - signed_in_at > max_age:
        return None
    return device["id"]


def remember_device(response: Response, account: str) -> None:
    device = _device() or {"id": secrets.token_urlsafe(12), "accounts": {}}
    accounts = {key: at for key, at in device["accounts"].items() if key != account}
    accounts[account] = int(time.time())
    kept = dict(sorted(accounts.items(), key=lambda pair: pair[1])[-DEVICE_ACCOUNTS:])
    value = _device_serializer().dumps({"id": device["id"], "accounts": kept})
    response.set_cookie(DEVICE_COOKIE, value, max_age=settings().security_known_device_days
                        * 86400, path="/login", httponly=True, samesite="Lax",
                        secure=current_app.config["SESSION_COOKIE_SECURE"])


# -- failed attempts ------------------------------------------------------------------------


def sign_in_attempt(account: str) -> Attempt:
    """Hold one unit of each limit this attempt falls under (see the module's docstring)."""
    device = known_device(account)
    return _attempt(account, f"device:{device}" if device else f"ip:{_ip()}",
                    stranger=device is None)


def signed_in_attempt(account: str) -> Attempt:
    """The same for a code typed by the signed-in member (replacing recovery codes): that
    is no stranger (and the device cookie is not sent outside /login), so the client is its
    session and the per-account limit that strangers spend does not apply."""
    return _attempt(account, f"session:{current_user.identity}", stranger=False)


def _ip() -> str:
    return g.actor.ip or "unknown"


def _attempt(account: str, client: str, *, stranger: bool) -> Attempt:
    config = settings()
    limits = [(config.security_login_rate_limit, f"sign-in-ip:{_ip()}"),
              (config.security_login_rate_limit_per_client, f"sign-in-client:{account}:{client}")]
    if stranger:
        limits.append((config.security_login_rate_limit_per_email, f"sign-in-account:{account}"))
    return failure_counter_of(current_app).attempt(limits)


def too_many_attempts(template: str, attempt: Attempt, **values) -> tuple:
    minutes = max(1, round(attempt.retry_after / 60))
    message = (f"Too many failed attempts. Try again in {minutes} minute"
               f"{'s' if minutes != 1 else ''}.")
    return (render_template(template, refused=message, **values), 429,
            {"Retry-After": str(attempt.retry_after)})


# -- the sign-in in progress ----------------------------------------------------------------


def after_password(user: StaffUser, next_url: str | None) -> Response:
    """The password was right: ask for the second factor, enrol one, or sign in."""
    if user.has_totp or requires_two_factor(user.role):
        session[SIGN_IN] = {"identity": service.session_identity(user), "at": int(time.time()),
                            "next": safe_next(next_url)}
        step = "staff.login_code" if user.has_totp else "staff.login_enrol"
        return redirect(url_for(step))
    return finish(user, None, redirect(safe_next(next_url) or url_for("staff.home")))


def signing_in() -> StaffUser | None:
    """The account whose password was just given, while its second step is still open."""
    pending = session.get(SIGN_IN)
    if not isinstance(pending, dict) or time.time() - pending.get("at", 0) > SIGN_IN_SECONDS:
        session.pop(SIGN_IN, None)
        return None
    return service.load_signed_in(request_session(), str(pending.get("identity", "")))


def offer_enrolment(sealed: str) -> None:
    """Keep the secret offered to this enrolment attempt (sealed: the session cookie is
    signed, not encrypted) with the sign-in in progress, replacing any earlier one."""
    session[SIGN_IN] = {**session[SIGN_IN], "enrolment": sealed}


def offered_enrolment() -> str | None:
    offered = (session.get(SIGN_IN) or {}).get("enrolment")
    return offered if isinstance(offered, str) else None


def pending_next() -> str:
    pending = session.get(SIGN_IN) or {}
    return safe_next(pending.get("next")) or url_for("staff.home")


def finish(user: StaffUser, second_factor: str | None, response: Response) -> Response:
    """Open the session: the sign-in is complete (and audited); this browser becomes a
    known device of the account."""
    session.pop(SIGN_IN, None)
    service.record_sign_in(session=request_session(), user=user, ip=g.actor.ip,
                           second_factor=second_factor)
    login_user(SignedInStaff.of(user))
    session[SECOND_FACTOR] = second_factor or "none"
    remember_device(response, service.sign_in_key(user))
    return response


def sign_out() -> None:
    logout_user()
    session.pop(SECOND_FACTOR, None)
    session.pop(SIGN_IN, None)


def enforce_second_factor():
    """Before every request: a session that did not pass a second factor ends as soon as
    its role needs one (a session from before 2FA was required, a role changed)."""
    if request.endpoint in (None, "static") or not current_user.is_authenticated:
        return None
    if session.get(SECOND_FACTOR) in ("totp", "recovery_code"):
        return None
    if not requires_two_factor(current_user.role):
        return None
    sign_out()
    g.actor = Actor("anonymous", None, g.actor.ip)
    rule = rule_for(current_app, request.endpoint)
    if rule is not None and rule.kind == "staff":
        return redirect(url_for("staff.login", next=request.full_path.rstrip("?")))
    return None

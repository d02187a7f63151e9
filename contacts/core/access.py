"""Who may reach each endpoint: declared on the view, enforced before every request.

Every endpoint declares its access with `@public`, `@staff(*roles)` or `@token(scope)`.
An endpoint that declares nothing is refused (deny by default), so a new route can never be
open by accident; the route-walking test proves each declaration holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from contacts.core.audit import Actor
from contacts.core.errors import Forbidden, Unauthenticated

ROLES = ("support", "comms", "admin")

SCOPES = {
    "read": "read accounts, contacts, incidents and progress",
    "contacts:write": "push contact, account and site changes (the sync API)",
    "progress:write": "report per-site restore progress",
    "incidents:write": "open incidents, add affected sites and publish updates",
    "escalations:write": "log and triage work items (tickets, escalations, tasks)",
    "audit:read": "read the audit log",
    "backups:write": "take backups and run restore drills",
    "webhooks:write": "register, list, ping and rotate accounts' webhook endpoints",
}


@dataclass(frozen=True)
class Rule:
    kind: str  # "public", "staff" or "token"
    roles: tuple[str, ...] = ()
    scope: str | None = None

    def allows_role(self, role: str) -> bool:
        return role == "admin" or not self.roles or role in self.roles


@dataclass(frozen=True)
class TokenIdentity:
    token_id: str
    scopes: frozenset[str]


def public(view: Callable) -> Callable:
    view.access_rule = Rule("public")
    return view


def without_csrf(view: Callable) -> Callable:
    """A POST whose signed URL is its proof (RFC 8058 one-click unsubscribe: the mailbox
    provider posts with no cookie and no form token): the app checks no CSRF token on it."""
    view.csrf_exempt = True
    return view


def staff(*roles: str) -> Callable[[Callable], Callable]:
    """Any signed-in staff member, or only the given roles (admin may always)."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def declare(view: Callable) -> Callable:
        view.access_rule = Rule("staff", roles=tuple(roles))
        return view

    return declare


def token(scope: str) -> Callable[[Callable], Callable]:
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def declare(view: Callable) -> Callable:
        view.access_rule = Rule("token", scope=scope)
        return view

    return declare


def rule_for(app, endpoint: str | None) -> Rule | None:
    if endpoint is None:
        return None
    named = app.extensions["lifeline.access"]["public_endpoints"]
    if endpoint in named:
        return Rule("public")
    return getattr(app.view_functions.get(endpoint), "access_rule", None)


def safe_next(target: str | None) -> str | None:
    """Only same-site paths are followed after login. A browser reads a backslash as a
    slash and drops tabs and line breaks (`/\\evil.example`, `/\\t/evil.example` go off
    site), and a line break would split the Location header: any of them, any character
    that is not printable (controls, separators), or a length past 2,000 means no `next`."""
    if not target or len(target) > 2000 or not target.startswith("/"):
        return None
    if "\\" in target or not target.isprintable():
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return None
    return target


def client_ip() -> str | None:
    from flask import request

    return request.remote_addr


def init_app(app, *, authenticate_token: Callable[[str, str | None, str], TokenIdentity | None],
             login_endpoint: str) -> None:
    """`authenticate_token(secret, ip, endpoint)` is supplied by the staff domain."""
    from flask import g, redirect, request, url_for
    from flask_login import current_user

    app.extensions["lifeline.access"] = {"public_endpoints": {"static"}}

    @app.before_request
    def enforce_access():
        if request.endpoint is None:
            return None  # 404 and 405 are answered by the routing layer
        rule = rule_for(app, request.endpoint)
        ip = client_ip()
        g.actor = Actor("anonymous", None, ip)
        if rule is None:
            app.logger.error("endpoint %s declares no access rule; refused", request.endpoint)
            raise Forbidden("This address is not open to anyone.")
        if rule.kind == "public":
            if current_user.is_authenticated:
                g.actor = Actor("staff", current_user.id, ip)
            return None
        if rule.kind == "staff":
            if not current_user.is_authenticated:
                return redirect(url_for(login_endpoint, next=request.full_path.rstrip("?")))
            g.actor = Actor("staff", current_user.id, ip)
            if not rule.allows_role(current_user.role):
                raise Forbidden("Your role does not give access to this page.")
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthenticated("Send an API token: Authorization: Bearer <token>.")
        identity = authenticate_token(secret.strip(), ip, request.endpoint)
        if identity is None:
            raise Unauthenticated("The API token is unknown, revoked or expired.")
        g.actor = Actor("token", identity.token_id, ip)
        if rule.scope not in identity.scopes:
            raise Forbidden(f"This call needs a token with the {rule.scope!r} scope.")
        return None

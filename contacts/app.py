"""The composition layer's root: create_app() wires settings -> database -> the areas and
their neighbours -> blueprints -> scheduler. It sits above every domain and may import any.

`flask --app app ...` and `gunicorn app:app` use the module-level `app` (through the root
`app.py` shim), built on first use so that importing create_app has no side effects.
"""

from __future__ import annotations

import functools
import logging
import sys
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from flask import Flask, current_app, render_template, request
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError
from werkzeug.middleware.proxy_fix import ProxyFix

from contacts.backup import cli as backup_cli
from contacts.backup import drills as backup_drills
from contacts.backup import routes as backup_routes
from contacts.backup import snapshot as backup_snapshot
from contacts.backup.api import bp as backup_api
from contacts.core import access, accesslog, api, clock, db, inputs, ratelimit
from contacts.core.api import API_PREFIX
from contacts.core.crypto import Crypto
from contacts.core.errors import ConfigError, Conflict, Invalid, LifelineError, register_http_errors
from contacts.core.services import Services, services
from contacts.core.services import init_app as keep_services
from contacts.core.settings import PROJECT_ROOT, Settings, field_keys_loader, load_settings
from contacts.drill import cli as drill_cli
from contacts.escalations import routes as escalations_routes
from contacts.escalations import service as escalations_service
from contacts.escalations.api import bp as escalations_api
from contacts.inbound import cli as inbound_cli
from contacts.inbound import routes as inbound_routes
from contacts.inbound.mailbox import MailHandler
from contacts.inbound.routing import Addresses
from contacts.incidents import routes as incidents_routes
from contacts.incidents import service as incidents_service
from contacts.incidents import unsubscribe_routes
from contacts.incidents.api import bp as incidents_api
from contacts.incidents.endpoints_api import bp as webhooks_api
from contacts.intake import routes as intake_routes
from contacts.intake import service as intake_service
from contacts.intake.api import bp as intake_api
from contacts.jobs import (
    background_services,
    inbound_handler,
    message_renderer,
    scheduled_jobs,
)
from contacts.mailroom import Mailroom
from contacts.staff import cli as staff_cli
from contacts.staff import routes as staff_routes
from contacts.staff import service as staff_service
from contacts.staff.api import bp as staff_api
from contacts.system import cli as system_cli
from contacts.system import routes as system_routes
from contacts.system.api import bp as system_api
from contacts.timeline import account_history
from contacts.vault import cli as vault_cli
from contacts.vault import service as vault_service
from contacts.vault.api import bp as vault_api
from contacts.vault.routes import bp as vault_routes

log = logging.getLogger("lifeline")


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    settings = load_settings(overrides)
    logging.basicConfig(level=settings.app_log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("alembic.runtime.migration", "apscheduler.executors.default"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    app = Flask(__name__, root_path=str(PROJECT_ROOT),
                template_folder=str(PROJECT_ROOT / "templates"),
                static_folder=str(PROJECT_ROOT / "static"))
    app.config.update(
        SECRET_KEY=settings.secrets.secret_key,
        MAX_CONTENT_LENGTH=settings.server_max_body_bytes,
        SESSION_COOKIE_NAME="lifeline_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.server_session_cookie_secure,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=settings.server_session_cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.server_session_lifetime_minutes),
        WTF_CSRF_SSL_STRICT=settings.server_session_cookie_secure,
    )
    if settings.server_proxy_hops:
        hops = settings.server_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    accesslog.init_app(app)  # access logs and error lines hide the tokens of links
    app.add_template_filter(clock.as_utc, "utc")  # pages show every time in UTC
    crypto = Crypto(settings.secrets.field_keys, settings.secrets.blind_index_key,
                    reload_field_keys=None if settings.secrets_given
                    else field_keys_loader(settings))
    engine = db.make_engine(settings.database_url,
                            busy_timeout_ms=settings.database_sqlite_busy_timeout_ms,
                            pool_size=settings.database_pool_size,
                            max_overflow=settings.database_max_overflow)
    db.init_app(app, engine)
    built = keep_services(app, Services(
        settings=settings, crypto=crypto, engine=engine,
        field_keys_source=field_keys_loader(settings, strict=True),
        snapshots_needing_key=functools.partial(
            backup_snapshot.snapshots_needing_key, Path(settings.backup_dir),
            settings.secrets.backup_key),
        jobs=scheduled_jobs(settings), background=functools.partial(background_services, app),
        account_panels=[escalations_routes.account_panel]))
    _build_areas(app, built)

    inputs.init_app(app, settings)  # first: bodies are capped before any hook reads one
    _init_login(app)
    # Access is checked first: an anonymous POST is sent to sign in, not told about CSRF.
    access.init_app(app, authenticate_token=_token_authenticator(engine),
                    login_endpoint="staff.login")
    _init_csrf(app)
    register_http_errors(app, _render_error_page, db.rollback_request_session)
    api.init_app(app)

    for blueprint in (staff_routes.bp, staff_api, system_routes.bp, system_api, vault_routes,
                      vault_api, backup_routes.bp, backup_api, intake_routes.bp, intake_api,
                      incidents_routes.bp, unsubscribe_routes.bp, incidents_api, webhooks_api,
                      escalations_routes.bp, escalations_api, inbound_routes.bp):
        app.register_blueprint(blueprint)
    for group in (staff_cli.staff_group, staff_cli.tokens_group, system_cli.db_group,
                  system_cli.keys_group, vault_cli.contacts_group, backup_cli.backup_group,
                  drill_cli.drill_group, inbound_cli.inbound_group):
        app.cli.add_command(group)
    app.cli.add_command(system_cli.serve)
    app.cli.add_command(system_cli.worker)
    ratelimit.init_app(app, settings)

    app.before_request(_refuse_nul_bytes)
    app.after_request(_security_headers)
    _bootstrap_admin(app, settings, engine)
    return app


def _build_areas(app: Flask, built: Services) -> None:
    """Each area's own objects, built once at start-up and found by their class."""
    settings, crypto, render = built.settings, built.crypto, message_renderer(app)
    vault = built.add(vault_service.Vault.from_settings(settings, crypto))
    built.add(incidents_service.CommsDesk.from_settings(settings, crypto,
                                                        PROJECT_ROOT / "templates"))
    intake = built.add(intake_service.Intake.from_settings(settings, crypto))
    built.add(intake_service.RequestWriter(engine=built.engine, intake=intake, render=render,
                                           retry_seconds=settings.intake_spool_retry_seconds))
    built.add(escalations_service.SupportDesk.from_settings(
        settings, crypto, vault=vault, render=render,
        neighbours=_escalations_neighbours(crypto, intake, render)))
    built.add(_mailroom(built, intake, render, vault))
    built.add(MailHandler(inbound_handler(app)))
    built.health_probes |= {
        "backups": functools.partial(backup_drills.drill_health,
                                     max_age_hours=settings.backup_drill_max_age_hours),
        "spool": functools.partial(intake_service.spool_health, spool=intake.spool)}


def _mailroom(built: Services, intake: intake_service.Intake, render,
              vault: vault_service.Vault) -> Mailroom:
    """What acts on inbound email (contacts/mailroom.py), with the addresses outgoing mail
    names for answers and bounces."""
    settings = built.settings
    sender = parseaddr(settings.mail_sender)[1]
    return Mailroom(
        intake=intake, writer=built.get(intake_service.RequestWriter),
        desk=built.get(escalations_service.SupportDesk), vault=vault,
        addresses=Addresses(reply_to=settings.mail_reply_to or sender,
                            return_path=settings.mail_return_path or sender,
                            secret=settings.secrets.secret_key, sender=sender),
        domain=settings.mail_domain,
        trusted_authserv_ids=tuple(settings.inbound_trusted_authserv_ids),
        attachment_max_bytes=settings.inbound_attachment_max_bytes,
        results_below_received=settings.inbound_results_below_received)


def _escalations_neighbours(crypto: Crypto, intake: intake_service.Intake,
                            render) -> escalations_service.Neighbours:
    """The staff, intake and incidents functions the escalations read through."""

    def reply_to_request(session, actor, request_id, body, now):
        intake_service.reply_as_staff(session=session, intake=intake, actor=actor,
                                      request_id=request_id, body=body, render=render, now=now)

    def request_references(session, ids):
        return {request_id: request.reference for request_id, request in
                intake_service.requests_by_id(session=session, ids=ids).items()}

    return escalations_service.Neighbours(
        staff_by_id=lambda session, ids: staff_service.staff_by_id(
            session=session, crypto=crypto, ids=ids),
        get_staff=lambda session, staff_id: staff_service.get_staff(
            session=session, crypto=crypto, staff_id=staff_id),
        list_staff=lambda session: staff_service.list_staff(session=session, crypto=crypto),
        incident_id=lambda session, incident_id: incidents_service.get_incident(
            session=session, incident_id=incident_id).id,
        incident_titles=lambda session, ids: incidents_service.incident_titles(
            session=session, ids=ids),
        request_references=request_references, reply_to_request=reply_to_request,
        account_history=account_history)


def _init_csrf(app: Flask) -> None:
    """CSRF on every form. The JSON API is exempt: it authenticates with bearer tokens, not
    cookies, and only accepts application/json, which no cross-site form can send; so is a
    view declared `access.without_csrf` (a one-click unsubscribe: its signed URL is proof)."""
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf = CSRFProtect(app)

    @app.before_request
    def protect_forms():
        rule = access.rule_for(app, request.endpoint)
        api_call = request.path.startswith(API_PREFIX + "/") and (rule is None
                                                                   or rule.kind != "staff")
        exempt = getattr(app.view_functions.get(request.endpoint), "csrf_exempt", False)
        if not (api_call or exempt):
            csrf.protect()


def _init_login(app: Flask) -> None:
    manager = LoginManager(app)
    manager.login_view = "staff.login"
    manager.session_protection = "strong"

    @manager.user_loader
    def load_user(identity: str):
        user = staff_service.load_signed_in(db.request_session(), identity)
        return staff_routes.SignedInStaff.of(user) if user else None


def _token_authenticator(engine):
    def authenticate(secret: str, ip: str | None, endpoint: str):
        # Its own transaction: token use stays audited even when the call then fails.
        with db.session_scope(engine) as session:
            return staff_service.authenticate_token(session=session, secret=secret, ip=ip,
                                                    endpoint=endpoint)

    return authenticate


def _render_error_page(status: int, code: str, message: str):
    try:
        return render_template("error.html", status=status, code=code, message=message), status
    except Exception:  # an error page must never fail
        log.exception("the error page itself failed to render")
        return f"Error {status}: {message}", status, {"Content-Type": "text/plain"}


def _refuse_nul_bytes():
    """PostgreSQL cannot store NUL in text; no legitimate input has one."""
    values = [*request.args.values(), *request.args.keys()]
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        values += [*request.form.values(), *request.form.keys()]
    if any("\x00" in value for value in values):
        raise Invalid("The request contains a NUL character.")


def _security_headers(response):
    if request.endpoint != "static":
        # Console pages show personal data and one-time secrets: never cache them.
        response.headers.setdefault("Cache-Control", "no-store")
    if current_app.config["SESSION_COOKIE_SECURE"]:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'")
    return response


def _bootstrap_admin(app: Flask, settings: Settings, engine) -> None:
    import os

    email = os.environ.get("LIFELINE_ADMIN_EMAIL")
    password = os.environ.get("LIFELINE_ADMIN_PASSWORD")
    if not (email and password) or not inspect(engine).has_table("staff_user"):
        return
    try:
        with db.session_scope(engine) as session:
            created = staff_service.bootstrap_admin(
                session=session, crypto=services(app).crypto, email=email,
                password=password, min_password_length=settings.security_password_min_length)
    except Conflict:
        return  # another process created it first
    except IntegrityError:
        return  # another worker created the same admin at the same moment
    except LifelineError as exc:
        raise ConfigError(f"LIFELINE_ADMIN_EMAIL/LIFELINE_ADMIN_PASSWORD: {exc.message}") from None
    if created:
        log.info("first admin created from LIFELINE_ADMIN_EMAIL (%s)", created.id)


def __getattr__(name: str) -> Flask:
    """The module-level `app`, built once on first use (here or through the root shim)."""
    if name != "app":
        raise AttributeError(name)
    if "app" not in globals():
        try:
            globals()["app"] = create_app()
        except ConfigError as exc:
            print(f"lifeline: {exc.message}", file=sys.stderr)
            sys.exit(2)
    return globals()["app"]

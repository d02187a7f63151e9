"""Console pages: sign-in and sign-out, the staff home, staff accounts and API tokens."""

from __future__ import annotations

from datetime import UTC, datetime, time

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import (
    DateField,
    EmailField,
    HiddenField,
    PasswordField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.validators import DataRequired, Email, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from contacts.core.access import ROLES, SCOPES, public, safe_next, staff
from contacts.core.db import request_session
from contacts.core.errors import Invalid
from contacts.core.forms import form_errors
from contacts.core.services import services
from contacts.staff import service, twofactor, web
from contacts.staff.web import SignedInStaff

__all__ = ["SignedInStaff", "bp"]

bp = Blueprint("staff", __name__)
bp.before_app_request(web.enforce_second_factor)
bp.record_once(lambda state: web.check_settings(state.app))


def _settings():
    return services().settings


def _crypto():
    return services().crypto


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


class CodeForm(FlaskForm):
    code = StringField("Authentication code", validators=[DataRequired(), Length(max=64)])


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    if current_user.is_authenticated:
        return redirect(url_for("staff.home"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next"))
    if form.validate_on_submit():
        # Failed attempts are limited (web.sign_in_attempt); the attempt is held before the
        # password is checked, so parallel guesses cannot slip past the limit.
        attempt = web.sign_in_attempt(service.email_digest(_crypto(), form.email.data))
        if attempt.refused:
            return web.too_many_attempts("staff/login.html", attempt, form=form)
        user = service.check_password(session=request_session(), crypto=_crypto(),
                                      email=form.email.data, password=form.password.data,
                                      ip=g.actor.ip)
        if user is not None:
            attempt.succeeded()
            return web.after_password(user, form.next.data)
        form.password.errors = ["Wrong email or password."]
        return render_template("staff/login.html", form=form), 401
    status = 400 if request.method == "POST" else 200
    return render_template("staff/login.html", form=form), status


def _restart_sign_in():
    flash("Sign in again: the sign-in expired or was not started.")
    return redirect(url_for("staff.login"))


@bp.route("/login/code", methods=["GET", "POST"])
@public
def login_code():
    """The second step of a sign-in: a TOTP code or a recovery code."""
    user = web.signing_in()
    if user is None or not user.has_totp:
        return _restart_sign_in()
    form = CodeForm()
    if form.validate_on_submit():
        attempt = web.sign_in_attempt(service.sign_in_key(user))
        if attempt.refused:
            return web.too_many_attempts("staff/login_code.html", attempt, form=form)
        passed = twofactor.check_second_factor(session=request_session(), crypto=_crypto(),
                                               staff_id=user.id, code=form.code.data,
                                               ip=g.actor.ip)
        if passed:
            attempt.succeeded()
            if passed == "recovery_code":
                left = twofactor.recovery_codes_left(session=request_session(),
                                                     staff_id=user.id)
                flash(f"Recovery code used: {left} left."
                      + (" Replace them under Two-factor sign-in." if left <= 3 else ""))
            return web.finish(user, passed, redirect(web.pending_next()))
        form.code.errors = ["That code is not right, or was already used."]
        return render_template("staff/login_code.html", form=form), 401
    status = 400 if request.method == "POST" else 200
    return render_template("staff/login_code.html", form=form), status


@bp.route("/login/enrol", methods=["GET", "POST"])
@public
def login_enrol():
    """Two-factor sign-in is required for this role and not set up yet: set it up now,
    before any console page. Every visit offers a fresh secret, kept sealed with this
    sign-in only; the account stores it once a code confirms it."""
    user = web.signing_in()
    if user is None or user.has_totp:
        return _restart_sign_in()
    form = CodeForm()
    if request.method == "GET":
        return render_template("staff/login_enrol.html", form=form,
                               enrolment=_new_enrolment(user))
    try:
        enrolment = twofactor.offered_enrolment(
            session=request_session(), crypto=_crypto(), staff_id=user.id,
            sealed=web.offered_enrolment(), issuer=_settings().security_totp_issuer)
    except Invalid as exc:
        form.code.errors = [exc.message]
        return render_template("staff/login_enrol.html", form=form,
                               enrolment=_new_enrolment(user)), 400
    if not form.validate_on_submit():
        return render_template("staff/login_enrol.html", form=form, enrolment=enrolment), 400
    attempt = web.sign_in_attempt(service.sign_in_key(user))
    if attempt.refused:
        return web.too_many_attempts("staff/login_enrol.html", attempt, form=form,
                                     enrolment=enrolment)
    try:
        codes = twofactor.confirm_enrolment(
            session=request_session(), crypto=_crypto(), actor=g.actor, staff_id=user.id,
            sealed=enrolment.sealed, code=form.code.data,
            recovery_codes=_settings().security_recovery_codes)
    except Invalid as exc:
        form.code.errors = [exc.message]
        return render_template("staff/login_enrol.html", form=form, enrolment=enrolment), 401
    attempt.succeeded()
    next_url = web.pending_next()
    response = web.finish(user, "totp", current_app.response_class())
    response.set_data(render_template("staff/recovery_codes.html", codes=codes, next=next_url))
    return response


def _new_enrolment(user) -> twofactor.Enrolment:
    enrolment = twofactor.begin_enrolment(session=request_session(), crypto=_crypto(),
                                          actor=g.actor, staff_id=user.id,
                                          issuer=_settings().security_totp_issuer)
    web.offer_enrolment(enrolment.sealed)
    return enrolment


@bp.route("/console/two-factor", methods=["GET", "POST"])
@staff()
def two_factor():
    """The signed-in member's second factor: replace the recovery codes (with a current
    code, limited per address and per session: see web.signed_in_attempt)."""
    session = request_session()
    user = service.signed_in_user(session=session, staff_id=g.actor.id)
    form = CodeForm()
    status = 200
    if user.has_totp and form.validate_on_submit():
        attempt = web.signed_in_attempt(service.sign_in_key(user))
        if attempt.refused:
            return web.too_many_attempts("staff/two_factor.html", attempt, form=form,
                                         user=user, left=None)
        if twofactor.check_second_factor(session=session, crypto=_crypto(), staff_id=user.id,
                                         code=form.code.data, ip=g.actor.ip):
            attempt.succeeded()
            codes = twofactor.new_recovery_codes(
                session=session, crypto=_crypto(), actor=g.actor, staff_id=user.id,
                count=_settings().security_recovery_codes)
            return render_template("staff/recovery_codes.html", codes=codes,
                                   next=url_for("staff.home"), replaced=True)
        form.code.errors = ["That code is not right, or was already used."]
        status = 401
    elif request.method == "POST":
        status = 400
    left = twofactor.recovery_codes_left(session=session, staff_id=user.id)
    return render_template("staff/two_factor.html", form=form, user=user, left=left), status


@bp.route("/logout", methods=["POST"])
@staff()
def logout():
    service.record_logout(session=request_session(), actor=g.actor)
    web.sign_out()
    flash("You are signed out.")
    return redirect(url_for("staff.login"))


@bp.route("/")
@public
def index():
    return redirect(url_for("staff.home"))


@bp.route("/console/")
@staff()
def home():
    return render_template("staff/home.html")


# -- staff accounts ---------------------------------------------------------------------


class StaffForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=320)])
    role = SelectField("Role", choices=[SelectChoice(role) for role in ROLES])
    password = PasswordField("Initial password", validators=[DataRequired(), Length(max=1024)])


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=[SelectChoice(role) for role in ROLES])


@bp.route("/console/staff", methods=["GET", "POST"])
@staff("admin")
def staff_list():
    form = StaffForm()
    status = 200
    if request.method == "POST":
        status = 400
        if form.validate_on_submit():
            with form_errors(form.email) as refused:
                created = service.create_staff(
                    session=request_session(), crypto=_crypto(), actor=g.actor,
                    email=form.email.data, role=form.role.data, password=form.password.data,
                    min_password_length=_settings().security_password_min_length)
            if not refused:
                flash(f"Staff account {created.id} created with role {created.role}.")
                return redirect(url_for("staff.staff_list"))
    members = service.list_staff(session=request_session(), crypto=_crypto())
    return render_template("staff/staff_list.html", form=form, members=members,
                           role_form=RoleForm()), status


@bp.route("/console/staff/<staff_id>/active", methods=["POST"])
@staff("admin")
def staff_set_active(staff_id: str):
    active = request.form.get("active") == "1"
    service.set_active(session=request_session(), actor=g.actor, staff_id=staff_id,
                       active=active)
    flash("Account activated." if active else "Account deactivated; its sessions ended.")
    return redirect(url_for("staff.staff_list"))


@bp.route("/console/staff/<staff_id>/role", methods=["POST"])
@staff("admin")
def staff_set_role(staff_id: str):
    role = request.form.get("role", "")
    service.set_role(session=request_session(), actor=g.actor, staff_id=staff_id, role=role)
    flash(f"Role changed to {role}.")
    return redirect(url_for("staff.staff_list"))


# -- API tokens -------------------------------------------------------------------------


class TokenForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    scopes = SelectMultipleField(
        "Scopes",
        choices=[SelectChoice(scope, f"{scope}: {text}") for scope, text in SCOPES.items()],
        validators=[DataRequired(message="Choose at least one scope.")],
        option_widget=CheckboxInput(), widget=ListWidget(prefix_label=False))
    expires_on = DateField("Expires on (optional)", validators=[Optional()])


@bp.route("/console/tokens", methods=["GET", "POST"])
@staff("admin")
def tokens():
    form = TokenForm()
    if request.method == "POST" and form.validate_on_submit():
        expires_at = None
        if form.expires_on.data:
            expires_at = datetime.combine(form.expires_on.data, time.min, tzinfo=UTC)
        with form_errors(form.name) as refused:
            token, secret = service.create_token(
                session=request_session(), actor=g.actor, name=form.name.data,
                scopes=form.scopes.data, expires_at=expires_at)
        if not refused:
            return render_template("staff/token_created.html", token=token, secret=secret)
    status = 400 if request.method == "POST" else 200
    listing = service.list_tokens(session=request_session())
    return render_template("staff/tokens.html", form=form, tokens=listing,
                           now=datetime.now(UTC)), status


@bp.route("/console/tokens/<token_id>/revoke", methods=["POST"])
@staff("admin")
def token_revoke(token_id: str):
    token = service.revoke_token(session=request_session(), actor=g.actor, token_id=token_id)
    flash(f"Token {token.name} revoked.")
    return redirect(url_for("staff.tokens"))

"""Console pages: sign-in and sign-out, the staff home, staff accounts and API tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for
from flask_login import UserMixin, current_user, login_user, logout_user
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

from contacts.access import ROLES, SCOPES, public, safe_next, staff
from contacts.db import request_session, rollback_request_session
from contacts.errors import LifelineError
from contacts.ratelimit import RateLimit, limited
from contacts.staff import service
from contacts.staff.models import StaffUser

bp = Blueprint("staff", __name__)


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


def _settings():
    return current_app.extensions["lifeline.settings"]


def _crypto():
    return current_app.extensions["lifeline.crypto"]


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


def _login_email_key() -> str:
    # Keyed digest, so the limiter's storage never holds a typed address.
    return "login-email:" + service.email_digest(_crypto(), request.form.get("email", ""))


@bp.route("/login", methods=["GET", "POST"])
@public
# Every attempt counts, and is counted before the password is checked, so a burst of
# parallel guesses cannot slip past the limit.
@limited(RateLimit("security_login_rate_limit"),
         RateLimit("security_login_rate_limit_per_email", key=_login_email_key))
def login():
    if current_user.is_authenticated:
        return redirect(url_for("staff.home"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next"))
    if form.validate_on_submit():
        user = service.authenticate(session=request_session(), crypto=_crypto(),
                                    email=form.email.data, password=form.password.data,
                                    ip=g.actor.ip)
        if user is not None:
            login_user(SignedInStaff.of(user))
            return redirect(safe_next(form.next.data) or url_for("staff.home"))
        form.password.errors = ["Wrong email or password."]
        return render_template("staff/login.html", form=form), 401
    status = 400 if request.method == "POST" else 200
    return render_template("staff/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@staff()
def logout():
    service.record_logout(session=request_session(), actor=g.actor)
    logout_user()
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
            try:
                created = service.create_staff(
                    session=request_session(), crypto=_crypto(), actor=g.actor,
                    email=form.email.data, role=form.role.data, password=form.password.data,
                    min_password_length=_settings().security_password_min_length)
            except LifelineError as exc:
                rollback_request_session()
                form.email.errors = [exc.message]
            else:
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
        try:
            token, secret = service.create_token(
                session=request_session(), actor=g.actor, name=form.name.data,
                scopes=form.scopes.data, expires_at=expires_at)
        except LifelineError as exc:
            rollback_request_session()
            form.name.errors = [exc.message]
        else:
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

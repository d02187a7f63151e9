"""Pages of the intake: the public contact form, code entry, one-click confirmation and the
request's status page (no login anywhere); the support queue and request pages for staff."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf import FlaskForm
from pydantic import ValidationError
from wtforms import EmailField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from contacts.core.access import public, staff
from contacts.core.db import request_session, utcnow
from contacts.core.errors import Invalid
from contacts.core.forms import form_errors
from contacts.core.inputs import cap_bodies
from contacts.core.ratelimit import RateLimit, limited
from contacts.core.services import services
from contacts.intake import codes, conversation, triage, verification
from contacts.intake.models import LEVELS, SEVERITIES
from contacts.intake.references import get_by_reference, get_request, normalize_reference
from contacts.intake.schemas import MESSAGE_CHARS, RequestIn
from contacts.intake.service import RequestWriter
from contacts.intake.web import INTAKE_LIMITS, intake, receive, renderer
from contacts.vault import service as vault_service
from contacts.vault.service import Vault

bp = Blueprint("intake", __name__)
cap_bodies(bp, "intake_max_body_bytes")


@bp.before_app_request
def own_the_spool() -> None:
    """A process serving requests owns its machine's spool: its request writer (started
    here, a no-op once running) replays it. A CLI run serves nothing and never replays."""
    services().get(RequestWriter).start()

PER_IP = RateLimit("intake_rate_limit_per_ip")


def _vault() -> vault_service.Vault:
    return services().get(Vault)


# -- public -------------------------------------------------------------------------------------


class ContactForm(FlaskForm):
    email = EmailField("Your email address", validators=[DataRequired("Enter your email "
                                                                      "address."),
                                                         Length(max=254)])
    message = TextAreaField("What is wrong?", validators=[
        DataRequired("Tell us what is wrong."), Length(max=MESSAGE_CHARS)])
    name = StringField("Your name", validators=[Optional(), Length(max=200)])
    company = StringField("Company", validators=[Optional(), Length(max=200)])
    site = StringField("Your site, as you remember it", validators=[Optional(), Length(max=500)])
    phone = StringField("Phone", validators=[Optional(), Length(max=40)])
    severity = SelectField("How bad is it?", default="normal", choices=[
        SelectChoice(value, label) for value, label in SEVERITIES.items()])
    # Hidden from people (CSS and aria-hidden); bots that fill every field fill this one.
    website = StringField("Leave this field empty", validators=[Optional()])


@bp.route("/contact", methods=["GET", "POST"])
@public
@limited(*INTAKE_LIMITS)
def contact():
    form = ContactForm()
    if request.method == "POST":
        if form.website.data:
            raise Invalid("This request could not be accepted.")
        if form.validate():
            try:
                given = RequestIn(email=form.email.data, message=form.message.data,
                                  name=form.name.data, company=form.company.data,
                                  site=form.site.data, phone=form.phone.data,
                                  severity=form.severity.data)
            except ValidationError as exc:
                for problem in exc.errors():
                    field = getattr(form, str(problem["loc"][0]), None)
                    if field is not None:
                        field.errors = [*field.errors, problem["msg"].removeprefix(
                            "Value error, ")]
            else:
                reference = receive(given)
                return redirect(url_for("intake.verify", reference=reference), 303)
        return render_template("public/contact.html", form=form), 400
    return render_template("public/contact.html", form=form)


class CodeForm(FlaskForm):
    code = StringField("The 6-digit code from the email", validators=[
        DataRequired("Enter the code from the email."), Length(max=12)])


@bp.route("/requests/<reference>/verify", methods=["GET", "POST"])
@public
@limited(PER_IP)
def verify(reference: str):
    normalized = normalize_reference(reference)
    if normalized is None:
        abort(404)
    form = CodeForm()
    status = 200
    if request.method == "POST":
        status = 400
        if form.validate():
            session = request_session()
            try:
                verified = verification.verify_code(session=session, intake=intake(),
                                                    vault=_vault(), reference=normalized,
                                                    code=form.code.data, now=utcnow())
            except Invalid as exc:
                session.commit()  # the failed attempt counts
                form.code.errors = [exc.message]
            else:
                return _to_status_page(verified.reference)
    return render_template("public/verify.html", form=form, reference=normalized,
                           resend_form=FlaskForm()), status


@bp.post("/requests/<reference>/resend")
@public
@limited(PER_IP)
def resend(reference: str):
    normalized = normalize_reference(reference)
    if normalized is None:
        abort(404)
    verification.resend_code(session=request_session(), intake=intake(), reference=normalized,
                             render=renderer(), now=utcnow())
    flash("If this request is still waiting for its code, a new one is on its way. Codes "
          "sent before it no longer work.")
    return redirect(url_for("intake.verify", reference=normalized), 303)


@bp.route("/requests/<reference>/confirm/<token>", methods=["GET", "POST"])
@public
@limited(PER_IP)
def confirm_link(reference: str, token: str):
    """GET only shows a button: mail scanners follow links, and must not verify anyone."""
    normalized = normalize_reference(reference)
    if normalized is None:
        abort(404)
    error = None
    if request.method == "POST":
        with form_errors() as refused:
            verified = verification.verify_by_link(session=request_session(), intake=intake(),
                                                   vault=_vault(), reference=normalized,
                                                   token=token, now=utcnow())
        if not refused:
            return _to_status_page(verified.reference)
        error = refused.message
    return render_template("public/confirm_request.html", reference=normalized, error=error,
                           form=FlaskForm()), 400 if error else 200


def _to_status_page(reference: str):
    return redirect(url_for("intake.status", reference=reference,
                            t=codes.status_token(intake(), reference)), 303)


class ReplyForm(FlaskForm):
    t = HiddenField()
    body = TextAreaField("Add a message", validators=[
        DataRequired("Write a message first."), Length(max=MESSAGE_CHARS)])


def _opened_request(reference: str, token: str | None):
    """The request, only for the holder of its status link; otherwise nothing at all."""
    normalized = normalize_reference(reference)
    if normalized is None or not codes.token_opens(intake(), normalized, token):
        abort(404)
    return get_by_reference(session=request_session(), reference=normalized)


@bp.get("/requests/<reference>")
@public
def status(reference: str):
    token = request.args.get("t")
    found = _opened_request(reference, token)
    view = conversation.request_view(session=request_session(), intake=intake(), request=found)
    return render_template("public/request.html", view=view, token=token,
                           form=ReplyForm(t=token), severities=SEVERITIES)


@bp.post("/requests/<reference>/reply")
@public
@limited(PER_IP)
def customer_reply(reference: str):
    form = ReplyForm()
    found = _opened_request(reference, form.t.data)
    if form.validate():
        conversation.reply_as_customer(session=request_session(), intake=intake(),
                                       reference=found.reference, body=form.body.data, now=utcnow())
        flash("Your message was added to the request.")
        return redirect(url_for("intake.status", reference=found.reference, t=form.t.data), 303)
    view = conversation.request_view(session=request_session(), intake=intake(), request=found)
    return render_template("public/request.html", view=view, token=form.t.data, form=form,
                           severities=SEVERITIES), 400


# -- staff --------------------------------------------------------------------------------------


@bp.get("/console/requests")
@staff("support", "admin")
def queue():
    view = request.args.get("view", "open")
    if view not in triage.VIEWS:
        view = "open"
    rows = triage.support_queue(session=request_session(), intake=intake(), view=view)
    return render_template("intake/queue.html", rows=rows, view=view, views=triage.VIEWS,
                           severities=SEVERITIES)


class AttachForm(FlaskForm):
    account_id = StringField("Account ID", validators=[DataRequired(), Length(max=40)])


class CallbackForm(FlaskForm):
    contact_id = SelectField("Contact called", validators=[DataRequired()])


class StaffReplyForm(FlaskForm):
    body = TextAreaField("Reply to the requester", validators=[
        DataRequired("Write a reply first."), Length(max=MESSAGE_CHARS)])


class RevealForm(FlaskForm):
    reason = StringField("Why do you need to see the requester's address?", validators=[
        DataRequired("Say why you need to see it."), Length(min=5, max=500)])


def _request_page(request_id: str, status: int = 200, *,
                  requester: triage.Requester | None = None, **forms):
    session = request_session()
    found = get_request(session=session, request_id=request_id)
    view = conversation.request_view(session=session, intake=intake(), request=found)
    contacts = []
    if found.account_id:
        _sites, contacts = vault_service.account_contacts_masked(
            session=session, vault=_vault(), account_id=found.account_id,
            confirm_after_days=services().settings
            .vault_confirm_after_days)
    callback_form = forms.pop("callback_form", None) or CallbackForm()
    callback_form.contact_id.choices = [
        SelectChoice(contact.id, f"{contact.name} · {contact.phone or 'no phone'} · "
                                 f"{contact.role}")
        for contact in contacts if not contact.deleted_at and contact.phone]
    account = (vault_service.accounts_by_id(session=session, ids=[found.account_id])
               .get(found.account_id) if found.account_id else None)
    return render_template(
        "intake/request.html", view=view, account=account,
        requester=requester or triage.masked_requester(view),
        reveal_form=forms.pop("reveal_form", None) or RevealForm(),
        candidates=triage.candidates_of(session=session, request_id=found.id),
        attach_form=forms.pop("attach_form", None) or AttachForm(),
        callback_form=callback_form,
        reply_form=forms.pop("reply_form", None) or StaffReplyForm(),
        status_form=FlaskForm(), severities=SEVERITIES, levels=LEVELS), status


@bp.get("/console/requests/<request_id>")
@staff("support", "admin")
def request_page(request_id: str):
    return _request_page(request_id)


@bp.post("/console/requests/<request_id>/reveal")
@staff("support", "admin")
def reveal_requester(request_id: str):
    """The requester's address and phone in clear, for this page only: with a reason,
    audited."""
    form = RevealForm()
    if not form.validate():
        return _request_page(request_id, 400, reveal_form=form)
    revealed = triage.reveal_requester(session=request_session(), intake=intake(),
                                       actor=g.actor, request_id=request_id,
                                       reason=form.reason.data)
    return _request_page(request_id, requester=revealed)


def _back_to_request(request_id: str, done: str | None = None):
    if done:
        flash(done)
    return redirect(url_for("intake.request_page", request_id=request_id), 303)


@bp.post("/console/requests/<request_id>/attach")
@staff("support", "admin")
def attach(request_id: str):
    form = AttachForm()
    if not form.validate():
        return _request_page(request_id, 400, attach_form=form)
    with form_errors(form.account_id) as refused:
        triage.attach(session=request_session(), intake=intake(), vault=_vault(),
                      actor=g.actor, request_id=request_id, account_id=form.account_id.data)
    if refused:
        return _request_page(request_id, 400, attach_form=form)
    return _back_to_request(request_id, "Request attached to the account.")


@bp.post("/console/requests/<request_id>/callback")
@staff("support", "admin")
def callback(request_id: str):
    form = CallbackForm()
    with form_errors(form.contact_id) as refused:
        triage.record_callback(session=request_session(), actor=g.actor,
                               request_id=request_id, contact_id=request.form.get(
                                   "contact_id", ""), now=utcnow())
    if refused:
        return _request_page(request_id, 400, callback_form=form)
    return _back_to_request(request_id, "Call back recorded: the requester is confirmed.")


@bp.post("/console/requests/<request_id>/reply")
@staff("support", "admin")
def staff_reply(request_id: str):
    form = StaffReplyForm()
    if not form.validate():
        return _request_page(request_id, 400, reply_form=form)
    conversation.reply_as_staff(session=request_session(), intake=intake(), actor=g.actor,
                                request_id=request_id, body=form.body.data, render=renderer(),
                                now=utcnow())
    return _back_to_request(request_id, "Reply sent.")


@bp.post("/console/requests/<request_id>/status")
@staff("support", "admin")
def set_status(request_id: str):
    triage.set_status(session=request_session(), actor=g.actor, request_id=request_id,
                      status=request.form.get("status", ""))
    return _back_to_request(request_id)

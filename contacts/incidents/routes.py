"""Pages of incidents: the comms console (create, affected sites, stages, compose, preview,
publish) and the public status pages (the incident, and each account's private link)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, timedelta

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf import FlaskForm
from wtforms import (
    DateTimeLocalField,
    DecimalField,
    EmailField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from contacts.core.access import public, staff
from contacts.core.db import request_session, utcnow
from contacts.core.errors import Invalid
from contacts.core.forms import form_errors
from contacts.core.ratelimit import RateLimit, limited
from contacts.incidents import (
    cadence,
    endpoints,
    fanout,
    feed,
    messages,
    progress,
    proof,
    publishing,
    records,
    subscriptions,
)
from contacts.incidents.models import CONFIDENCE, SEVERITIES, STATES
from contacts.incidents.web import desk, vault
from contacts.vault import service as vault_service

bp = Blueprint("incidents", __name__)
COMMS = ("comms", "admin")
# The public status page lists incidents closed within this many days.
RECENT_DAYS = 14


def _choices(values) -> list[SelectChoice]:
    return [SelectChoice(value, value.replace("_", " ")) for value in values]


class IncidentForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=200)])
    severity = SelectField("Severity", choices=_choices(SEVERITIES), default="major")
    started_at = DateTimeLocalField("Started at (UTC)", validators=[Optional()])


class SitesForm(FlaskForm):
    sites = TextAreaField("Sites: site IDs or the product's external IDs, one per line or "
                          "separated by commas", validators=[DataRequired()])


class StageForm(FlaskForm):
    sites = TextAreaField("Sites to move", validators=[DataRequired()])
    stage = SelectField("To stage")


class CadenceForm(FlaskForm):
    hours = DecimalField("Send an update every (hours; empty: only when published here)",
                         validators=[Optional(), NumberRange(0.01, 168)])


class UpdateForm(FlaskForm):
    state = SelectField("State", choices=_choices(STATES))
    what_happened = TextAreaField("What happened")
    scope = TextAreaField("Scope (empty: computed from the affected sites)")
    timeline = TextAreaField("Restoration timeline")
    next_update_at = DateTimeLocalField("Next update by (UTC)", validators=[Optional()])
    restore_percentage = DecimalField("Restore percentage (empty: computed from the stages)",
                                      validators=[Optional(), NumberRange(0, 100)])
    restore_note = StringField("Why the percentage is overridden", validators=[Length(max=500)])
    data_loss = TextAreaField("Expected data loss")
    confidence_timeline = SelectField("Confidence in the timeline",
                                      choices=_choices(("", *CONFIDENCE)))
    confidence_restore = SelectField("Confidence in the restore percentage",
                                     choices=_choices(("", *CONFIDENCE)))
    confidence_data_loss = SelectField("Confidence in the data loss",
                                       choices=_choices(("", *CONFIDENCE)))
    # Choices are the incident's accounts; the service refuses any other one.
    preview_account = SelectField("Preview for account", validators=[Optional()],
                                  validate_choice=False)

    def draft(self) -> publishing.UpdateDraft:
        return publishing.UpdateDraft(
            state=self.state.data, what_happened=self.what_happened.data or "",
            scope=self.scope.data or "", timeline=self.timeline.data or "",
            next_update_at=self.next_update_at.data.replace(tzinfo=UTC)
            if self.next_update_at.data else None,
            restore_percentage=float(self.restore_percentage.data)
            if self.restore_percentage.data is not None else None,
            restore_note=self.restore_note.data or "", data_loss=self.data_loss.data or "",
            confidence_timeline=self.confidence_timeline.data or "",
            confidence_restore=self.confidence_restore.data or "",
            confidence_data_loss=self.confidence_data_loss.data or "")


def _refs(text: str) -> list[str]:
    return [ref for ref in text.replace(",", "\n").split() if ref]


@bp.route("/console/incidents", methods=["GET", "POST"])
@staff(*COMMS)
def incidents():
    form = IncidentForm()
    status = 200
    if request.method == "POST":
        status = 400
        if form.validate():
            now = utcnow()
            started = form.started_at.data.replace(tzinfo=UTC) if form.started_at.data else now
            incident = records.create_incident(session=request_session(), actor=g.actor,
                                               title=form.title.data,
                                               severity=form.severity.data,
                                               started_at=started, now=now)
            return redirect(url_for("incidents.incident", incident_id=incident.id), 303)
    return render_template("incidents/list.html", form=form, now=utcnow(),
                           incidents=records.list_incidents(session=request_session()),
                           is_late=cadence.is_late), status


def _incident_page(incident_id: str, status: int = 200, **forms):
    session = request_session()
    the_desk = desk()
    incident = records.get_incident(session=session, incident_id=incident_id)
    shown = progress.affected_accounts_page(session=session, incident_id=incident.id,
                                            page=request.args.get("accounts_page", 1, type=int))
    sites = progress.affected_sites(session=session, incident_id=incident.id,
                                    account_ids=shown.account_ids)
    stage_form = forms.pop("stage_form", None) or StageForm(prefix="move")
    stage_form.stage.choices = _choices(the_desk.stages)
    update_form = forms.pop("update_form", None) or UpdateForm(
        state=incident.state, next_update_at=cadence.next_due_default(the_desk, utcnow())
        .replace(tzinfo=None, second=0, microsecond=0))
    accounts = sorted({(site.account_id, site.account_name) for site in sites},
                      key=lambda pair: pair[1])
    update_form.preview_account.choices = [SelectChoice(account_id, name)
                                           for account_id, name in accounts]
    accounts_affected, sites_affected, scope = progress.computed_scope(
        session=session, incident_id=incident.id)
    return render_template(
        "incidents/incident.html", incident=incident, sites=sites, desk=the_desk,
        accounts_page=shown,
        progress=progress.progress(session=session, desk=the_desk, incident_id=incident.id),
        history=progress.progress_history(session=session, desk=the_desk,
                                          incident_id=incident.id),
        updates=publishing.updates_of(session=session, incident_id=incident.id),
        delivery_counts=proof.delivery_counts(session=session, incident_id=incident.id),
        fanouts=fanout.progress_by_update(session=session, incident_id=incident.id),
        fallbacks=proof.fallbacks_by_update(session=session, incident_id=incident.id),
        sites_form=forms.pop("sites_form", None) or SitesForm(), stage_form=stage_form,
        cadence_form=forms.pop("cadence_form", None) or CadenceForm(
            hours=incident.cadence_hours),
        update_form=update_form, computed_scope=scope, preview=forms.pop("preview", None),
        late=cadence.is_late(incident, utcnow()),
        account_links={account_id: publishing.account_link(the_desk, incident.id, account_id)
                       for account_id, _ in accounts}), status


@bp.get("/console/incidents/<incident_id>")
@staff(*COMMS)
def incident(incident_id: str):
    return _incident_page(incident_id)


def _back_to_incident(incident_id: str, done: str | None = None):
    if done:
        flash(done)
    return redirect(url_for("incidents.incident", incident_id=incident_id), 303)


@bp.post("/console/incidents/<incident_id>/sites")
@staff(*COMMS)
def add_sites(incident_id: str):
    form = SitesForm()
    if form.validate():
        with form_errors(form.sites) as refused:
            added = progress.add_sites(session=request_session(), desk=desk(), actor=g.actor,
                                       incident_id=incident_id, refs=_refs(form.sites.data),
                                       now=utcnow())
        if not refused:
            return _back_to_incident(incident_id, f"{added} sites added.")
    return _incident_page(incident_id, 400, sites_form=form)


@bp.post("/console/incidents/<incident_id>/stages")
@staff(*COMMS)
def set_stages(incident_id: str):
    form = StageForm(prefix="move")
    form.stage.choices = _choices(desk().stages)
    if form.validate():
        with form_errors(form.sites) as refused:
            changed = progress.set_stages(
                session=request_session(), desk=desk(), actor=g.actor,
                incident_id=incident_id,
                stages=[(ref, form.stage.data) for ref in _refs(form.sites.data)],
                now=utcnow())
        if not refused:
            return _back_to_incident(
                incident_id, f"{changed} sites moved to {form.stage.data.replace('_', ' ')}.")
    return _incident_page(incident_id, 400, stage_form=form)


@bp.post("/console/incidents/<incident_id>/cadence")
@staff(*COMMS)
def set_cadence(incident_id: str):
    form = CadenceForm()
    if not form.validate():
        return _incident_page(incident_id, 400, cadence_form=form)
    hours = float(form.hours.data) if form.hours.data is not None else None
    cadence.set_cadence(session=request_session(), actor=g.actor, incident_id=incident_id,
                        hours=hours)
    flash(f"Updates every {hours:g} hours until resolved." if hours
          else "No scheduled updates: they go out when published here.")
    return _back_to_incident(incident_id)


@bp.post("/console/incidents/<incident_id>/updates")
@staff(*COMMS)
def compose(incident_id: str):
    """Preview (the default) or publish, from the same form."""
    form = UpdateForm()
    if not form.validate():
        return _incident_page(incident_id, 400, update_form=form)
    session = request_session()
    publish_now = request.form.get("action") == "publish"
    with form_errors(form.what_happened) as refused:
        if publish_now:
            update = publishing.publish(session=session, desk=desk(), actor=g.actor,
                                        incident_id=incident_id, draft=form.draft(),
                                        now=utcnow())
        else:
            shown = publishing.preview(session=session, desk=desk(), vault=vault(),
                                       incident_id=incident_id, draft=form.draft(),
                                       account_id=form.preview_account.data or "",
                                       actor=g.actor, now=utcnow())
    if refused:
        return _incident_page(incident_id, 400, update_form=form)
    if publish_now:
        return _back_to_incident(
            incident_id, f"Update {update.number} published. Its recipients are being queued: "
                         "the count below grows until every one is.")
    return _incident_page(incident_id, 200, update_form=form, preview=shown)


class TemplateForm(FlaskForm):
    kind = SelectField("Part", choices=[SelectChoice(kind, kind) for kind in messages.KINDS])
    locale = SelectField("Language", choices=[SelectChoice(locale, locale)
                                              for locale in messages.LOCALES])
    body = TextAreaField("Template (Jinja2, sandboxed)", validators=[DataRequired()])


@bp.route("/console/templates", methods=["GET", "POST"])
@staff(*COMMS)
def templates():
    """The update templates in use, per part and language; saving one checks that it shows
    every required field and stays inside the sandbox."""
    form = TemplateForm()
    status = 200
    if request.method == "POST":
        status = 400
        if form.validate():
            with form_errors(form.body, catching=(Invalid,)) as refused:
                saved = publishing.save_template(session=request_session(), actor=g.actor,
                                                 kind=form.kind.data, locale=form.locale.data,
                                                 body=form.body.data, now=utcnow())
            if not refused:
                flash(f"Saved version {saved.version} of the {saved.kind} template "
                      f"({saved.locale}).")
                return redirect(url_for("incidents.templates"), 303)
    session = request_session()
    sources = {locale: publishing.template_sources(session=session, desk=desk(), locale=locale)
               for locale in messages.LOCALES}
    return render_template("incidents/templates.html", form=form, sources=sources,
                           required=messages.REQUIRED,
                           required_in_subject=messages.REQUIRED_IN_SUBJECT), status


class WebhookForm(FlaskForm):
    account_id = StringField("Account ID", validators=[DataRequired(), Length(max=40)])
    url = StringField("Endpoint URL (https://, on the public internet)",
                      validators=[DataRequired(), Length(max=2048)])


@bp.get("/console/incidents/<incident_id>/deliveries.csv")
@staff(*COMMS)
def deliveries_csv(incident_id: str):
    """Every message of every update and its outcome, for the post-incident review."""
    session = request_session()
    found = records.get_incident(session=session, incident_id=incident_id)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["update", "published_at", "account_id", "recipient", "channel", "state",
                     "attempts", "sent_at"])
    for item in proof.deliveries(session=session, incident_id=found.id):
        writer.writerow([item.update_number, item.published_at.isoformat(), item.account_id,
                         item.recipient, item.channel, item.state, item.attempts,
                         item.sent_at.isoformat() if item.sent_at else ""])
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{found.id}-deliveries.csv"'})


@bp.route("/console/webhooks", methods=["GET", "POST"])
@staff(*COMMS)
def webhooks():
    """Accounts' endpoints for signed update webhooks; a new secret is shown once."""
    form = WebhookForm()
    secret, status = None, 200
    if request.method == "POST":
        status = 400
        if form.validate():
            with form_errors(form.url) as refused:
                _, secret = endpoints.register_endpoint(
                    session=request_session(), desk=desk(), actor=g.actor,
                    account_id=form.account_id.data, url=form.url.data, now=utcnow())
            if not refused:
                status = 200
    session = request_session()
    saved = endpoints.endpoints(session=session)
    names = vault_service.accounts_by_id(session=session,
                                         ids=[hook.account_id for hook in saved])
    return render_template("incidents/webhooks.html", form=form, secret=secret,
                           endpoints=saved, names=names), status


# -- public ------------------------------------------------------------------------------------


@bp.get("/status")
@public
def status_index():
    session, now = request_session(), utcnow()
    return render_template(
        "public/status.html", now=now, is_late=cadence.is_late,
        incidents=records.list_incidents(session=session, open_only=True),
        recent=records.recently_closed(session=session,
                                       since=now - timedelta(days=RECENT_DAYS)),
        recent_days=RECENT_DAYS)


@bp.get("/status/<incident_id>")
@public
def status_page(incident_id: str):
    session = request_session()
    the_desk = desk()
    found = records.get_incident(session=session, incident_id=incident_id)
    return render_template(
        "public/incident.html", incident=found, desk=the_desk,
        progress=progress.progress(session=session, desk=the_desk, incident_id=found.id),
        updates=publishing.updates_of(session=session, incident_id=found.id),
        late=cadence.is_late(found, utcnow()), account=None, sites=None)


class SubscribeForm(FlaskForm):
    email = EmailField("Your email address", validators=[DataRequired(), Length(max=254)])


@bp.route("/status/subscribe", methods=["GET", "POST"])
@public
@limited(RateLimit("intake_rate_limit_per_ip"))
def subscribe():
    form = SubscribeForm()
    if request.method == "POST":
        if not form.validate():
            return render_template("public/subscribe.html", form=form, sent=False), 400
        with form_errors(form.email, catching=(Invalid,)) as refused:
            subscriptions.subscribe(session=request_session(), desk=desk(),
                                    email=form.email.data,
                                    locale=request.accept_languages.best_match(("en", "fr"))
                                    or "en", now=utcnow())
        if refused:
            return render_template("public/subscribe.html", form=form, sent=False), 400
        return render_template("public/subscribe.html", form=form, sent=True)
    return render_template("public/subscribe.html", form=form, sent=False)


@bp.route("/status/subscription/<action>/<token>", methods=["GET", "POST"])
@public
def subscription(action: str, token: str):
    """GET shows a button (mail scanners follow links); POST confirms or stops."""
    done, error = False, None
    if request.method == "POST":
        with form_errors(catching=(Invalid,)) as refused:
            subscriptions.follow_subscription_link(session=request_session(), desk=desk(),
                                                   action=action, token=token, now=utcnow())
        done, error = not refused, refused.message or None
    elif action not in subscriptions.ACTIONS:
        abort(404)
    return render_template("public/subscription.html", action=action, done=done, error=error,
                           form=FlaskForm()), 400 if error else 200


@bp.get("/status/<incident_id>/feed.atom")
@public
def status_feed(incident_id: str):
    session = request_session()
    found = records.get_incident(session=session, incident_id=incident_id)
    body = feed.incident_feed(base_url=desk().base_url, incident=found,
                              updates=publishing.updates_of(session=session, incident_id=found.id))
    return Response(body, mimetype="application/atom+xml")


@bp.get("/status/<incident_id>/accounts/<account_id>")
@public
def account_status(incident_id: str, account_id: str):
    """An account's private view: its own sites' stages, behind a signed link."""
    session = request_session()
    the_desk = desk()
    found = records.get_incident(session=session, incident_id=incident_id)
    if not publishing.token_opens_account(the_desk, found.id, account_id, request.args.get("t")):
        abort(404)
    account = vault_service.get_account(session=session, account_id=account_id,
                                        include_deleted=True)
    return render_template(
        "public/incident.html", incident=found, desk=the_desk,
        progress=progress.progress(session=session, desk=the_desk, incident_id=found.id,
                                   account_id=account.id),
        updates=publishing.updates_of(session=session, incident_id=found.id),
        late=cadence.is_late(found, utcnow()), account=account,
        sites=progress.affected_sites(session=session, incident_id=found.id,
                                      account_id=account.id))

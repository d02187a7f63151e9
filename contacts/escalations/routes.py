"""Console pages of the escalations: the queue (filters, my items, saved views), the quick-add
form, each item's page and actions, bulk actions and support hours on the account page (a
panel of the vault's account page), and the support leads' dashboard.

Everyone on staff reads; support (and admins) triage; only admins delete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from contacts.core.access import staff
from contacts.core.db import request_session, utcnow
from contacts.core.errors import Invalid
from contacts.core.forms import form_errors
from contacts.escalations import service
from contacts.escalations.models import CHANNELS, KINDS, OPEN_STATUSES, STATUSES, TRANSITIONS
from contacts.escalations.web import desk

bp = Blueprint("escalations", __name__)
NUMBER = re.compile(r"[0-9]{1,6}")  # str.isdigit() takes "²"; int() of 30 digits is no page
TRIAGE = ("support",)  # admins may always


def _choices(values) -> list[SelectChoice]:
    return [SelectChoice(value, value.replace("_", " ")) for value in values]


PRIORITY_CHOICES = [SelectChoice("1", "P1 (urgent)"), SelectChoice("2", "P2 (high)"),
                    SelectChoice("3", "P3 (normal)"), SelectChoice("4", "P4 (low)")]


class ItemForm(FlaskForm):
    account_id = StringField("Account ID", validators=[Optional(), Length(max=40)])
    kind = SelectField("Kind", choices=_choices(KINDS), default="escalation")
    channel = SelectField("Arrived by", choices=_choices(CHANNELS), default="phone")
    priority = SelectField("Priority", choices=PRIORITY_CHOICES, default="2")
    title = StringField("Title", validators=[DataRequired(), Length(max=300)])
    body = TextAreaField("What was said", validators=[Optional(), Length(max=20_000)])
    requester_contact_id = SelectField("Requester (a contact of the account)",
                                       choices=[], validate_choice=False)
    owner_id = SelectField("Owner", choices=[], validate_choice=False)


def _owner_choices(form: ItemForm) -> None:
    form.owner_id.choices = [SelectChoice("", "Region on shift (unowned)")] + [
        SelectChoice(member.id, f"{member.email} ({member.role})")
        for member in service.assignable_staff(session=request_session(), desk=desk())]


def _contact_choices(form: ItemForm, contacts) -> None:
    form.requester_contact_id.choices = [SelectChoice("", "Nobody in particular")] + [
        SelectChoice(contact.id, f"{contact.name} · {contact.role.replace('_', ' ')} · "
                                 f"{contact.email}")
        for contact in contacts if not contact.deleted_at]


def _create_from(form: ItemForm):
    new = service.NewItem(
        account_id=form.account_id.data.strip() or None, kind=form.kind.data,
        channel=form.channel.data, title=form.title.data, body=form.body.data,
        priority=int(form.priority.data),
        owner_id=form.owner_id.data or None,
        requester_contact_id=form.requester_contact_id.data or None)
    return service.create_item(session=request_session(), desk=desk(), actor=g.actor,
                               new=new, now=utcnow())


@bp.route("/console/items/new", methods=["GET", "POST"])
@staff(*TRIAGE)
def new_item():
    """Quick add: an escalation that came by phone, an executive's email, a task."""
    form = ItemForm()
    if request.method == "GET":
        form.account_id.data = request.args.get("account", "")[:40]
        form.channel.data = request.args.get("channel", form.channel.data)
    _owner_choices(form)
    _contact_choices(form, [])
    status = 200
    if request.method == "POST":
        status = 400
        if form.validate_on_submit():
            with form_errors(form.title) as refused:
                item = _create_from(form)
            if not refused:
                flash(f"Logged {item.id}.")
                return redirect(url_for("escalations.item_page", item_id=item.id))
    return render_template("escalations/new.html", form=form), status


# -- the queue -------------------------------------------------------------------------------


def _filter_from_args(args) -> service.QueueFilter:
    def text(name: str) -> str | None:
        value = args.get(name, "").strip()[:64]
        return value or None

    priority = text("priority")
    if priority is not None and not NUMBER.fullmatch(priority):
        raise Invalid("priority must be 1 to 4")
    owner = text("owner")
    if owner == "me":
        owner = current_user.id
    verified = text("verified")
    if verified not in (None, "yes", "no"):
        raise Invalid("verified must be yes or no")
    return service.check_filter(desk(), service.QueueFilter(
        status=text("status") or "open", region=text("region"), owner=owner,
        account=text("account"), incident=text("incident"), channel=text("channel"),
        kind=text("kind"), priority=int(priority) if priority else None,
        verified=None if verified is None else verified == "yes", sla=text("sla")))


@bp.get("/console/items")
@staff()
def queue():
    given = _filter_from_args(request.args)
    page = request.args.get("page", "1")
    found = service.queue(session=request_session(), desk=desk(), given=given, now=utcnow(),
                          page=int(page) if NUMBER.fullmatch(page) else 1)
    views = service.saved_views(session=request_session(), staff_id=current_user.id)
    return render_template("escalations/queue.html", queue=found, given=given, views=views,
                           statuses=STATUSES, channels=CHANNELS, kinds=KINDS,
                           regions=desk().rota.names, me=current_user.id,
                           query=given.query_string())


@bp.post("/console/views")
@staff()
def save_view():
    given = _filter_from_args(request.form)
    name = request.form.get("name", "")
    with form_errors(flash_as="{}") as refused:
        service.save_view(session=request_session(), staff_id=current_user.id, name=name,
                          given=given)
    if not refused:
        flash(f"View “{name.strip()}” saved.")
    return redirect(url_for("escalations.queue") + "?" + given.query_string())


@bp.post("/console/views/<int:view_id>/delete")
@staff()
def delete_view(view_id: int):
    service.delete_view(session=request_session(), staff_id=current_user.id, view_id=view_id)
    flash("View deleted.")
    return redirect(url_for("escalations.queue"))


# -- one item --------------------------------------------------------------------------------


def _render_item(item, status: int = 200):
    session = request_session()
    view = service.item_view(session=session, desk=desk(), item=item, now=utcnow())
    return render_template(
        "escalations/item.html", view=view, item=item,
        next_statuses=TRANSITIONS[item.status], regions=desk().rota.names,
        staff=service.assignable_staff(session=session, desk=desk()),
        can_triage=current_user.role in ("support", "admin"),
        can_delete=current_user.role == "admin", open_statuses=OPEN_STATUSES), status


@bp.get("/console/items/<item_id>")
@staff()
def item_page(item_id: str):
    item = service.get_item(session=request_session(), item_id=item_id)
    if item.merged_into_id:
        flash(f"{item.id} was merged into {item.merged_into_id}.")
        return redirect(url_for("escalations.item_page", item_id=item.merged_into_id))
    return _render_item(item)


def _act(item_id: str, action, done: str):
    """Run one action on an item (the app checks every form's CSRF token before any view);
    a refusal is shown on the item's page (4xx)."""
    with form_errors(flash_as="{}") as refused:
        action(session=request_session(), desk=desk(), actor=g.actor, item_id=item_id,
               now=utcnow())
    if refused:
        item = service.get_item(session=request_session(), item_id=item_id)
        return _render_item(item, refused.status)
    flash(done)
    return redirect(url_for("escalations.item_page", item_id=item_id))


def _form(name: str) -> str:
    return request.form.get(name, "").strip()


@bp.post("/console/items/<item_id>/status")
@staff(*TRIAGE)
def set_status(item_id: str):
    status = _form("status")
    return _act(item_id, lambda **kw: service.change_status(status=status,
                                                            note=_form("note") or None, **kw),
                f"Status set to {status.replace('_', ' ')}.")


@bp.post("/console/items/<item_id>/assign")
@staff(*TRIAGE)
def assign(item_id: str):
    return _act(item_id, lambda **kw: service.assign(owner_id=_form("owner_id") or None, **kw),
                "Owner changed.")


@bp.post("/console/items/<item_id>/priority")
@staff(*TRIAGE)
def set_priority(item_id: str):
    value = _form("priority")
    if not NUMBER.fullmatch(value):
        raise Invalid("priority must be 1 to 4")
    return _act(item_id, lambda **kw: service.set_priority(priority=int(value), **kw),
                f"Priority set to P{value}.")


@bp.post("/console/items/<item_id>/region")
@staff(*TRIAGE)
def set_region(item_id: str):
    return _act(item_id, lambda **kw: service.set_region(region=_form("region"), **kw),
                "Region changed.")


@bp.post("/console/items/<item_id>/comment")
@staff(*TRIAGE)
def comment(item_id: str):
    return _act(item_id, lambda **kw: service.comment(body=_form("body"), **kw),
                "Comment added.")


@bp.post("/console/items/<item_id>/reply")
@staff(*TRIAGE)
def reply(item_id: str):
    return _act(item_id, lambda **kw: service.reply(body=_form("body"), **kw),
                "Reply queued for the requester.")


@bp.post("/console/items/<item_id>/link")
@staff(*TRIAGE)
def link(item_id: str):
    return _act(item_id, lambda **kw: service.link(
        parent_id=_form("parent_id") or None, parent_kind=_form("parent_kind") or None,
        incident_id=_form("incident_id") or None, **kw), "Linked.")


@bp.post("/console/items/<item_id>/merge")
@staff(*TRIAGE)
def merge(item_id: str):
    into = _form("into_id")
    return _act(item_id, lambda **kw: service.merge(into_id=into, **kw),
                f"Merged into {into}.")


@bp.post("/console/items/<item_id>/delete")
@staff("admin")
def delete(item_id: str):
    item = service.delete_item(session=request_session(), desk=desk(), actor=g.actor,
                               item_id=item_id, now=utcnow())
    flash(f"{item.id} deleted (kept in the database, hidden everywhere).")
    return redirect(url_for("escalations.queue"))


# -- the account page's panel ----------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    template: str
    values: dict


def account_panel(session, account_id: str, contacts: list) -> Panel:
    """Work items, SLA, support hours and the timeline on the vault's account page
    (`contacts`: the page's masked contacts, for the requester list)."""
    picture = service.account_picture(session=session, desk=desk(), account_id=account_id,
                                      now=utcnow())
    form = ItemForm()
    form.account_id.data = account_id
    _owner_choices(form)
    _contact_choices(form, contacts)
    return Panel("escalations/_account_panel.html", {
        "picture": picture, "item_form": form, "statuses": STATUSES,
        "staff": service.assignable_staff(session=session, desk=desk()),
        "can_triage": current_user.role in ("support", "admin")})


@bp.post("/console/accounts/<account_id>/items")
@staff(*TRIAGE)
def add_account_item(account_id: str):
    form = ItemForm()
    _owner_choices(form)
    if form.validate_on_submit():
        form.account_id.data = account_id
        with form_errors(flash_as="Nothing was logged: {}") as refused:
            item = _create_from(form)
        if not refused:
            flash(f"Logged {item.id}.")
    else:
        flash("; ".join(f"{name}: {', '.join(errors)}" for name, errors in form.errors.items()))
    return redirect(url_for("vault.account", account_id=account_id) + "#work")


@bp.post("/console/accounts/<account_id>/items/bulk")
@staff(*TRIAGE)
def bulk(account_id: str):
    with form_errors(flash_as="Nothing was changed: {}") as refused:
        done = service.bulk(session=request_session(), desk=desk(), actor=g.actor,
                            account_id=account_id, item_ids=request.form.getlist("items"),
                            action=_form("action"), now=utcnow(),
                            status=_form("status") or None, owner_id=_form("owner_id") or None,
                            incident_id=_form("incident_id") or None,
                            parent_id=_form("parent_id") or None, body=_form("body") or None)
    if refused:
        return redirect(url_for("vault.account", account_id=account_id) + "#work")
    flash(f"{done} item{'s' if done != 1 else ''} updated.")
    return redirect(url_for("vault.account", account_id=account_id) + "#work")


@bp.post("/console/accounts/<account_id>/support-hours")
@staff(*TRIAGE)
def support_hours(account_id: str):
    with form_errors(flash_as="{}") as refused:
        service.set_profile(session=request_session(), desk=desk(), actor=g.actor,
                            account_id=account_id, timezone=_form("timezone"),
                            business_hours=_form("business_hours"), now=utcnow())
    if not refused:
        flash("Support hours saved; the account's open items follow them.")
    return redirect(url_for("vault.account", account_id=account_id) + "#hours")


# -- the dashboard ---------------------------------------------------------------------------


@bp.get("/console/dashboard")
@staff()
def dashboard():
    board = service.dashboard(session=request_session(), desk=desk(), now=utcnow())
    return render_template("escalations/dashboard.html", board=board,
                           chart=intake_chart(board.intake_per_hour))


def intake_chart(points, width: int = 720, height: int = 160) -> dict:
    """Bars of a server-rendered SVG: items opened per hour."""
    peak = max((count for _, count in points), default=0) or 1
    step = width / max(1, len(points))
    bars = []
    for index, (hour, count) in enumerate(points):
        bar = (count / peak) * (height - 20)
        bars.append({"x": round(index * step, 1), "y": round(height - bar, 1),
                     "width": max(1.0, round(step - 1, 1)), "height": round(bar, 1),
                     "label": f"{hour:%a %H:00} UTC: {count}"})
    labels = [{"x": round(index * step, 1), "text": f"{hour:%a %H:00}"}
              for index, (hour, _) in enumerate(points) if hour.hour == 0]
    return {"width": width, "height": height, "bars": bars, "peak": peak, "labels": labels}

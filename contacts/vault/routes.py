"""Console pages of the vault: account search, account pages with masked contacts and audited
reveals, stale accounts, and the admin's import page."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import BooleanField, StringField
from wtforms.validators import DataRequired, Length

from contacts.core.access import public, staff
from contacts.core.db import request_session, utcnow
from contacts.core.errors import Invalid, NotFound
from contacts.core.forms import form_errors
from contacts.core.services import services
from contacts.vault import (
    console,
    deletions,
    freshness,
    importer,
    service,
    softdelete,
    sync,
)
from contacts.vault.service import Vault

bp = Blueprint("vault", __name__)


def _settings():
    return services().settings


def _vault() -> service.Vault:
    return services().get(Vault)


@bp.get("/console/accounts")
@staff()
def accounts():
    query = request.args.get("q", "")[:200]
    found = console.search_accounts(session=request_session(), vault=_vault(), query=query,
                                    confirm_after_days=_settings().vault_confirm_after_days)
    return render_template("vault/accounts.html", accounts=found, query=query)


class RevealForm(FlaskForm):
    reason = StringField("Why do you need to see this contact?",
                         validators=[DataRequired(), Length(min=5, max=500)])


@bp.get("/console/accounts/<account_id>")
@staff()
def account(account_id: str):
    session = request_session()
    account = service.get_account(session=session, account_id=account_id)
    sites, contacts = service.account_contacts_masked(
        session=session, vault=_vault(), account_id=account.id,
        confirm_after_days=_settings().vault_confirm_after_days)
    return render_template("vault/account.html", account=account, sites=sites,
                           contacts=contacts, revealed=None, reveal_form=RevealForm(),
                           panels=_panels(account.id, contacts))


def _panels(account_id: str, contacts: list) -> list:
    """What other areas show on an account page (work items, timeline), registered by the
    app as `lifeline.account_panels`: callables (session, account_id, contacts) -> an
    object with `template` and `values`."""
    return [panel(request_session(), account_id, contacts)
            for panel in services().account_panels]


@bp.post("/console/contacts/<contact_id>/reveal")
@staff()
def reveal(contact_id: str):
    session = request_session()
    contact = service.get_contact(session=session, contact_id=contact_id)
    form = RevealForm()
    revealed = None
    status = 400
    if form.validate_on_submit():
        revealed = console.reveal_contact(session=session, vault=_vault(), actor=g.actor,
                                          contact_id=contact.id, reason=form.reason.data)
        status = 200
    account = service.get_account(session=session, account_id=contact.account_id,
                                  include_deleted=True)
    sites, contacts = service.account_contacts_masked(
        session=session, vault=_vault(), account_id=account.id,
        confirm_after_days=_settings().vault_confirm_after_days)
    return render_template("vault/account.html", account=account, sites=sites,
                           contacts=contacts, revealed=revealed, reveal_form=form,
                           reveal_for=contact.id, panels=_panels(account.id, contacts)), status


@bp.post("/console/contacts/<contact_id>/restore")
@staff("admin")
def restore_contact(contact_id: str):
    session = request_session()
    contact = service.get_contact(session=session, contact_id=contact_id)
    if contact.deleted_at is not None:
        softdelete.restore(session=session, vault=_vault(), actor=g.actor, kind="contact",
                           ids=[contact.id], deleted_at=contact.deleted_at)
        flash("Contact restored.")
    return redirect(url_for("vault.account", account_id=contact.account_id))


@bp.get("/console/stale-accounts")
@staff()
def stale():
    days = _settings().vault_confirm_after_days
    found = console.stale_accounts(session=request_session(), confirm_after_days=days)
    return render_template("vault/stale.html", accounts=found, days=days)


# -- admin: import ---------------------------------------------------------------------------


class ImportForm(FlaskForm):
    file = FileField("Contacts file (CSV or JSON)", validators=[
        FileRequired(), FileAllowed(["csv", "json"], "Upload a .csv or a .json file.")])
    strict = BooleanField("Strict: any rejected entry aborts the whole import")


class ConfirmHeldForm(FlaskForm):
    token = StringField("Token (from the sync or import report)",
                        validators=[DataRequired(), Length(max=200)])
    reason = StringField("Reason (required, kept in the audit log)",
                         validators=[DataRequired(), Length(max=500)])


@bp.route("/console/import", methods=["GET", "POST"])
@staff("admin")
def import_contacts():
    form = ImportForm()
    report = None
    status = 200
    if request.method == "POST":
        status = 400
        if form.validate_on_submit():
            upload = form.file.data
            suffix = Path(upload.filename or "").suffix.lstrip(".").lower()
            with form_errors(form.file) as refused:
                report = _import_upload(upload.read(), suffix, form.strict.data)
            if not refused:
                status = 200
    return _import_page(form, report, status)


def _import_page(form: ImportForm, report, status: int, confirm_form=None,
                 failed: str | None = None):
    held = deletions.held(session=request_session(), limits=_limits(), now=utcnow())
    blank = ConfirmHeldForm(formdata=None)
    return render_template("vault/import.html", form=form, report=report, held=held,
                           confirm_form=confirm_form or blank, blank_form=blank,
                           failed=failed, action_form=FlaskForm()), status


def _limits() -> deletions.Limits:
    return deletions.Limits.from_settings(_settings())


@bp.post("/console/deletions/<deletion_id>/confirm")
@staff("admin")
def confirm_held_deletion(deletion_id: str):
    """A sync's or an import's deletions over the cap, confirmed by an admin with the token
    its report gave and a reason (audited as bulk_delete.confirmed)."""
    form = ConfirmHeldForm()
    if form.validate_on_submit():
        with form_errors(flash_as="Not confirmed, nothing deleted: {}.") as refused:
            done = deletions.confirm_held(
                session=request_session(), vault=_vault(), actor=g.actor,
                deletion_id=deletion_id, token=form.token.data.strip(), limits=_limits(),
                is_admin=True, reason=form.reason.data)
        if refused:
            return _import_page(ImportForm(formdata=None), None, refused.status, form,
                                deletion_id)
        flash(f"Deleted {done.deleted} {done.kind}(s) ({done.deletion_id}); restorable until "
              f"{done.restorable_until:%Y-%m-%d %H:%M} UTC.")
        return redirect(url_for("vault.import_contacts"), 303)
    return _import_page(ImportForm(formdata=None), None, 400, form, deletion_id)


@bp.post("/console/deletions/<deletion_id>/dismiss")
@staff("admin")
def dismiss_held_deletion(deletion_id: str):
    if not FlaskForm().validate_on_submit():
        return _import_page(ImportForm(formdata=None), None, 400)
    deletions.dismiss(session=request_session(), actor=g.actor, deletion_id=deletion_id,
                      now=utcnow())
    flash(f"Held deletion {deletion_id} dismissed: nothing deleted, its token no longer works.")
    return redirect(url_for("vault.import_contacts"), 303)


def _import_upload(content: bytes, file_format: str, strict: bool):
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Invalid("the file is not UTF-8 text") from None
    parsed = importer.parse_text(text, file_format)
    session = request_session()
    report = sync.sync(session=session, vault=_vault(), actor=g.actor,
                       entries=parsed.entries, source="import")
    report.merge(parsed.report)
    if strict and report.rejections:
        first = report.rejections[0]
        raise Invalid(f"{len(report.rejections)} rejected entries, nothing imported "
                               f"(strict); first: {first.line}: {first.reason}")
    return report


# -- public: a contact confirms their details ----------------------------------------------------


def _contact_from_link(token: str) -> str:
    settings = _settings()
    return freshness.contact_of_token(settings.secrets.secret_key, token,
                                      settings.vault_confirm_link_days)


@bp.get("/confirm/<token>")
@public
def confirm_page(token: str):
    try:
        contact_id = _contact_from_link(token)
        account_name, masked = freshness.describe_for_confirmation(
            session=request_session(), vault=_vault(), contact_id=contact_id)
    except (Invalid, NotFound) as exc:
        return render_template("public/confirm.html", error=exc.message), 400
    return render_template("public/confirm.html", account_name=account_name,
                           masked_email=masked)


@bp.post("/confirm/<token>")
@public
def confirm_details(token: str):
    session = request_session()
    with form_errors(catching=(Invalid, NotFound)) as refused:
        contact_id = _contact_from_link(token)
        account_name, _ = freshness.describe_for_confirmation(session=session, vault=_vault(),
                                                              contact_id=contact_id)
        freshness.confirm(session=session, vault=_vault(), actor=g.actor,
                          contact_id=contact_id, now=utcnow())
    if refused:
        return render_template("public/confirm.html", error=refused.message), 400
    return render_template("public/confirm.html", confirmed=True, account_name=account_name)

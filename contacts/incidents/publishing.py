"""Publishing an update: the fields it must state, the templates it is rendered with, and
its audiences (each affected account's contacts, rendered once per account and language,
the account's webhook endpoints, the public subscribers), queued in the outbox in the caller's
transaction; the preview and each account's private link."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from html import escape

from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select

from contacts.core import audit, clock, links
from contacts.core.audit import Actor
from contacts.core.errors import Conflict, Invalid
from contacts.core.ids import new_id
from contacts.delivery import outbox
from contacts.incidents import endpoints, messages
from contacts.incidents.desk import CommsDesk
from contacts.incidents.messages import language_of
from contacts.incidents.models import (
    CONFIDENCE,
    STATES,
    SUBSCRIBER_EMAIL,
    AffectedSite,
    Incident,
    IncidentUpdate,
    MessageTemplate,
    Subscriber,
    UpdateFanout,
)
from contacts.incidents.progress import SiteStage, affected_sites, computed_scope, progress
from contacts.incidents.records import CLOSED_STATES, get_incident
from contacts.incidents.subscriptions import unsubscribe_headers, unsubscribe_link
from contacts.vault import service as vault_service

ACCOUNT_PURPOSE = "incident-account"  # the private status link of an account


class UpdateDraft(BaseModel):
    """What an update must state. `scope` and `restore_percentage` are computed when left
    empty; an overridden percentage needs a note."""

    state: str
    what_happened: str = ""
    scope: str = ""
    timeline: str = ""
    next_update_at: datetime | None = None
    restore_percentage: float | None = Field(default=None, ge=0, le=100)
    restore_note: str = ""
    data_loss: str = ""
    confidence_timeline: str = ""
    confidence_restore: str = ""
    confidence_data_loss: str = ""


FIELD_NAMES = {
    "what_happened": "what happened", "scope": "scope", "timeline": "timeline",
    "next_update_at": "time of the next update", "data_loss": "expected data loss",
    "confidence_timeline": "confidence in the timeline",
    "confidence_restore": "confidence in the restore percentage",
    "confidence_data_loss": "confidence in the data loss", "restore_note":
    "a note on the overridden restore percentage", "state": "state",
}


def missing_fields(draft: UpdateDraft) -> list[str]:
    """The fields an update still lacks, by name; it cannot be published with any."""
    missing = [name for name in ("what_happened", "timeline", "data_loss")
               if not getattr(draft, name).strip()]
    if draft.state not in STATES:
        missing.append("state")
    if draft.next_update_at is None and draft.state not in CLOSED_STATES:
        missing.append("next_update_at")
    missing += [name for name in ("confidence_timeline", "confidence_restore",
                                  "confidence_data_loss")
                if getattr(draft, name) not in CONFIDENCE]
    if draft.restore_percentage is not None and not draft.restore_note.strip():
        missing.append("restore_note")
    return missing


@dataclass(frozen=True)
class Preview:
    """The update as each audience would receive it: one contact's email, the account's
    webhook body, and the card the public page would show."""

    recipient: str  # masked
    locale: str
    rendered: messages.Rendered
    update: IncidentUpdate  # not saved: what the public page's card would say
    webhook: str  # the JSON body the account's endpoint would receive, indented
    # Saved templates that failed for this audience: the default was used (as at publish).
    template_failures: list[dict]


def format_time(moment: datetime | None) -> str:
    return clock.format_utc(moment) if moment else "none: the incident is over"


def _values(desk: CommsDesk, incident: Incident, update: IncidentUpdate) -> dict:
    return {"incident_title": incident.title, "incident_state": update.state.replace("_", " "),
            "number": update.number, "what_happened": update.what_happened,
            "scope": update.scope, "timeline": update.timeline,
            "next_update": format_time(update.next_update_at),
            "restore_percentage": f"{update.restore_percentage:g}%",
            "data_loss": update.data_loss,
            "confidence_timeline": update.confidence["timeline"],
            "confidence_restore": update.confidence["restore"],
            "confidence_data_loss": update.confidence["data_loss"],
            "support": update.support,
            "status_link": f"{desk.base_url}/status/{incident.id}"}


def account_token(desk: CommsDesk, incident_id: str, account_id: str) -> str:
    return links.link_token(desk.secret_key, ACCOUNT_PURPOSE, incident_id, account_id)


def account_link(desk: CommsDesk, incident_id: str, account_id: str) -> str:
    return (f"{desk.base_url}/status/{incident_id}/accounts/{account_id}"
            f"?t={account_token(desk, incident_id, account_id)}")


def token_opens_account(desk: CommsDesk, incident_id: str, account_id: str,
                        token: str | None) -> bool:
    return links.token_matches(desk.secret_key, ACCOUNT_PURPOSE, token, incident_id, account_id)


def template_sources(*, session: Session, desk: CommsDesk, locale: str) -> dict[str, str]:
    """The newest saved version of each kind for a locale, else the default file."""
    locale = locale if locale in messages.LOCALES else "en"
    saved = {}
    for row in session.exec(select(MessageTemplate).where(MessageTemplate.locale == locale)
                            .order_by(MessageTemplate.version)):
        saved[row.kind] = row.body
    return {kind: saved.get(kind) or messages.default_source(desk.templates_dir, kind, locale)
            for kind in messages.KINDS}


def save_template(*, session: Session, actor: Actor, kind: str, locale: str,
                  body: str, now: datetime) -> MessageTemplate:
    if locale not in messages.LOCALES:
        raise Invalid(f"locale must be one of {', '.join(messages.LOCALES)}")
    messages.check(kind, body, locale)
    version = (session.exec(select(func.max(MessageTemplate.version)).where(
        MessageTemplate.kind == kind, MessageTemplate.locale == locale)).one() or 0) + 1
    template = MessageTemplate(kind=kind, locale=locale, version=version, body=body,
                               created_by=actor.id or actor.kind, created_at=now)
    session.add(template)
    audit.record(session, actor, "template.saved", kind=kind, locale=locale, version=version)
    return template


def _build_update(session: Session, desk: CommsDesk, incident: Incident, draft: UpdateDraft,
                  actor: Actor, now: datetime) -> IncidentUpdate:
    missing = missing_fields(draft)
    if missing:
        raise Invalid("the update cannot be published without: "
                      + ", ".join(FIELD_NAMES[name] for name in missing),
                      details={"missing": missing})
    accounts, sites, scope = computed_scope(session=session, incident_id=incident.id)
    if not sites:
        raise Conflict("add the affected sites before publishing an update")
    computed = progress(session=session, desk=desk, incident_id=incident.id).percentage
    number = (session.exec(select(func.max(IncidentUpdate.number)).where(
        IncidentUpdate.incident_id == incident.id)).one() or 0) + 1
    return IncidentUpdate(
        id=new_id("upd"), incident_id=incident.id, number=number, state=draft.state,
        what_happened=draft.what_happened.strip(), scope=draft.scope.strip() or scope,
        accounts_affected=accounts, sites_affected=sites, timeline=draft.timeline.strip(),
        next_update_at=clock.as_utc(draft.next_update_at) if draft.next_update_at else None,
        restore_percentage=computed if draft.restore_percentage is None
        else draft.restore_percentage,
        restore_note=draft.restore_note.strip() or None, data_loss=draft.data_loss.strip(),
        confidence={"timeline": draft.confidence_timeline,
                    "restore": draft.confidence_restore,
                    "data_loss": draft.confidence_data_loss},
        support=desk.support_url,
        published_at=now, published_by=actor.id or actor.kind)


def account_views(session: Session, desk: CommsDesk, incident: Incident,
                  account_ids: list[str] | None = None) -> dict[str, dict]:
    """Each affected account's own part of an update (its sites, their stages, its restore
    percentage, its private link): for the accounts given, else every one, in two queries."""
    by_account: dict[str, list[SiteStage]] = {}
    for site in affected_sites(session=session, incident_id=incident.id,
                               account_ids=account_ids):
        by_account.setdefault(site.account_id, []).append(site)
    views = {}
    for owner, sites in by_account.items():
        restored = sum(1 for site in sites if desk.restored(site.stage))
        views[owner] = {
            "account_name": sites[0].account_name,
            "account_percentage": f"{round(100 * restored / len(sites), 1):g}%",
            "account_sites": [{"name": site.name, "stage": site.stage.replace("_", " ")}
                              for site in sites],
            # Webhooks carry the stage keys (`validated_by_us`): programs compare them.
            "webhook_sites": [{"name": site.name, "stage": site.stage} for site in sites],
            "private_link": account_link(desk, incident.id, owner)}
    return views


def preview(*, session: Session, desk: CommsDesk, vault: vault_service.Vault, incident_id: str,
            draft: UpdateDraft, account_id: str, actor: Actor, now: datetime) -> Preview:
    """The update exactly as one of the account's contacts would receive it (the first
    contact of the account), with the recipient's address masked."""
    incident = get_incident(session=session, incident_id=incident_id)
    update = _build_update(session, desk, incident, draft, actor, now)
    account = vault_service.get_account(session=session, account_id=account_id)
    contacts = vault_service.contacts_of_accounts(session=session, vault=vault,
                                                  account_ids=[account.id])[account.id]
    if not contacts:
        raise Conflict("this account has no contact to preview for")
    contact = contacts[0]
    view = account_views(session, desk, incident, [account.id]).get(account.id)
    if view is None:
        raise Invalid("preview for an account this incident affects")
    values = {**_values(desk, incident, update), **view}
    sources = template_sources(session=session, desk=desk, locale=language_of(contact.locale))
    webhook = json.dumps(json.loads(webhook_body(desk, incident, update, account.id, view)),
                         indent=2, ensure_ascii=False)
    failures = messages.TemplateFailures(defaults=messages.default_sources(desk.templates_dir))
    rendered = messages.render_update(sources, values, language_of(contact.locale), failures)
    return Preview(recipient=vault_service.mask_email(contact.email),
                   locale=language_of(contact.locale), rendered=rendered, update=update,
                   webhook=webhook, template_failures=failures.summary())


def publish(*, session: Session, desk: CommsDesk, actor: Actor, incident_id: str,
            draft: UpdateDraft, now: datetime) -> IncidentUpdate:
    """Record the update, and the fan-out that a job runs to queue its audience (each
    affected account's contacts, rendered once per account and language, their webhooks,
    the public subscribers), in the caller's transaction: publishing answers at once,
    whatever the audience (`incidents.fanout`)."""
    incident = get_incident(session=session, incident_id=incident_id)
    update = _build_update(session, desk, incident, draft, actor, now)
    update.recipients = 0
    session.add(update)
    session.flush()
    session.add(UpdateFanout(update_id=update.id, incident_id=incident.id, created_at=now))
    incident.state = update.state
    incident.last_update_at = now
    incident.next_update_due = update.next_update_at
    incident.updated_at = now
    session.add_all([update, incident])
    audit.record(session, actor, "incident.update_published", target_kind="incident",
                 target_id=incident.id, update=update.id)
    return update


def update_headers(incident: Incident) -> dict[str, str]:
    """The headers every email of an incident's updates carries."""
    return {"List-Id": f"Lifeline incident {incident.id} <{incident.id}.incidents.lifeline>"}


def contact_rows(desk: CommsDesk, incident: Incident, update: IncidentUpdate,
                 views: dict[str, dict], contacts: dict[str, list], sources: dict,
                 failures: messages.TemplateFailures, now: datetime,
                 earlier: tuple[str, ...]) -> list[dict]:
    """One outbox row per address of each account's contacts (an address twice in one
    account is told once), rendered once per account and language; later updates thread
    under the earlier ones (`thread_headers`), and answers go to the contact's signed
    reply address."""
    rows = []
    base, headers = _values(desk, incident, update), update_headers(incident)
    for account_id in sorted(views):
        if not contacts.get(account_id):
            continue
        values = {**base, **views[account_id]}
        by_language: dict[str, list[tuple[str, outbox.Topic, str]]] = {}
        seen: set[str] = set()
        for contact in contacts[account_id]:
            if contact.email.lower() in seen:
                continue
            seen.add(contact.email.lower())
            by_language.setdefault(language_of(contact.locale), []).append((
                f"update:{update.id}:{account_id}:{contact.id}",
                outbox.Topic("update", update.id, "contact", contact.id, account_id),
                contact.email,
                {"Reply-To": desk.mail.reply_address("contact", contact.id),
                 **thread_headers(desk, earlier, f"{account_id}:{contact.id}")}))
        for language, recipients in by_language.items():
            message = messages.render_update(sources[language], values, language, failures)
            rows += outbox.email_rows(
                cipher=desk.crypto.cipher, purpose="incident_update", now=now,
                recipients=recipients,
                email=outbox.Email(to="", subject=message.subject, text=message.text,
                                   html=message.html, headers=headers))
    return rows


def earlier_updates_of(session: Session, incident_id: str,
                       update: IncidentUpdate) -> tuple[str, ...]:
    """The IDs of the updates a later one threads under: the incident's first and the one
    just before it (RFC 5322 3.6.4 lets References be trimmed to the first and the last;
    two hashes a row keep the fan-out's cost), none for the first."""
    numbers = {1, update.number - 1} if update.number > 1 else set()
    return tuple(session.exec(select(IncidentUpdate.id).where(
        IncidentUpdate.incident_id == incident_id, col(IncidentUpdate.number).in_(numbers))
        .order_by(IncidentUpdate.number)).all()) if numbers else ()


def thread_headers(desk: CommsDesk, earlier: tuple[str, ...],
                   recipient: str) -> dict[str, str]:
    """Later updates answer the incident's update before them to the same recipient and
    name its first (Message-IDs from their outbox keys, as the drain makes them), so mail
    clients show an incident as one thread; `recipient` is the key's tail
    (`<account>:<contact>`, `public:<subscriber>`)."""
    if not earlier:
        return {}
    named = [outbox.message_id_for(f"update:{update_id}:{recipient}", desk.mail_domain)
             for update_id in earlier]
    return {"In-Reply-To": named[-1], "References": " ".join(named)}


def updates_of(*, session: Session, incident_id: str) -> list[IncidentUpdate]:
    return list(session.exec(select(IncidentUpdate).where(
        IncidentUpdate.incident_id == incident_id).order_by(col(IncidentUpdate.number).desc())))


# -- webhooks ----------------------------------------------------------------------------------


def webhook_body(desk: CommsDesk, incident: Incident, update: IncidentUpdate, account_id: str,
                 account_values: dict) -> str:
    """The JSON an account's endpoint receives: the update's typed fields, and its own sites."""
    return json.dumps({
        "type": "incident.update",
        "incident": {"id": incident.id, "title": incident.title, "state": update.state,
                     "severity": incident.severity,
                     "status_page": f"{desk.base_url}/status/{incident.id}"},
        "update": {"id": update.id, "number": update.number,
                   "published_at": update.published_at.isoformat(),
                   "what_happened": update.what_happened, "scope": update.scope,
                   "accounts_affected": update.accounts_affected,
                   "sites_affected": update.sites_affected, "timeline": update.timeline,
                   "next_update_at": update.next_update_at.isoformat()
                   if update.next_update_at else None,
                   "restore_percentage": update.restore_percentage,
                   "restore_note": update.restore_note, "data_loss": update.data_loss,
                   "confidence": update.confidence, "support": update.support},
        "account": {"id": account_id, "name": account_values["account_name"],
                    "restore_percentage": float(account_values["account_percentage"][:-1]),
                    "sites": account_values["webhook_sites"],
                    "private_status_page": account_values["private_link"]},
    }, sort_keys=True)


def webhook_accounts(*, session: Session, incident_id: str) -> list[str]:
    """The affected accounts with an endpoint not in quarantine."""
    return endpoints.accounts_with_endpoints(session=session, accounts=select(
        AffectedSite.account_id).where(AffectedSite.incident_id == incident_id))


def webhook_rows(session: Session, desk: CommsDesk, incident: Incident, update: IncidentUpdate,
                 views: dict[str, dict], now: datetime) -> list[dict]:
    """One row per endpoint (not in quarantine) of each account of `views`, naming the
    endpoint: the lane signs each attempt when it sends it, with the endpoint's secret and
    URL of that moment."""
    rows, bodies = [], {}
    for endpoint in endpoints.active_endpoints(session=session, account_ids=list(views)):
        if endpoint.account_id not in bodies:
            bodies[endpoint.account_id] = webhook_body(desk, incident, update,
                                                       endpoint.account_id,
                                                       views[endpoint.account_id])
        key = f"update:{update.id}:{endpoint.account_id}:webhook:{endpoint.id}"
        rows.append(outbox.webhook_row(
            cipher=desk.crypto.cipher, key=key, purpose="incident_update", now=now,
            topic=outbox.Topic("update", update.id, "webhook", endpoint.id,
                               endpoint.account_id),
            webhook=outbox.Webhook(endpoint=endpoint.id, body=bodies[endpoint.account_id])))
    return rows


STOP_LINE = {"en": "Stop these emails", "fr": "Ne plus recevoir ces e-mails"}


def subscriber_rows(session: Session, desk: CommsDesk, incident: Incident,
                    update: IncidentUpdate, sources: dict, failures: messages.TemplateFailures,
                    now: datetime, earlier: tuple[str, ...], *, after: int,
                    limit: int) -> list[dict]:
    """The public audience: confirmed subscribers with an ID above `after` (a keyset),
    `limit` at most, rendered once per language; each email with its one-click
    unsubscribe link, in the headers (RFC 8058) and in both bodies."""
    rows, rendered = [], {}
    base, headers = _values(desk, incident, update), update_headers(incident)
    for subscriber in session.exec(select(Subscriber).where(
            col(Subscriber.id) > after, col(Subscriber.confirmed_at).is_not(None),
            col(Subscriber.unsubscribed_at).is_(None)).order_by(Subscriber.id).limit(limit)):
        language = subscriber.locale if subscriber.locale in messages.LOCALES else "en"
        if language not in rendered:
            rendered[language] = messages.render_update(sources[language], {
                **base, "account_name": "", "account_percentage": "", "account_sites": [],
                "private_link": ""}, language, failures)
        message = rendered[language]
        stop = unsubscribe_link(desk, subscriber.id)
        rows.append(outbox.email_row(
            cipher=desk.crypto.cipher, key=f"update:{update.id}:public:{subscriber.id}",
            purpose="incident_update", now=now,
            topic=outbox.Topic("update", update.id, "subscriber", str(subscriber.id)),
            email=outbox.Email(
                to=desk.crypto.cipher.decrypt(subscriber.email_encrypted,
                                              context=SUBSCRIBER_EMAIL),
                subject=message.subject,
                text=f"{message.text}\n{STOP_LINE[language]}: {stop}\n",
                html=_with_stop_link(message.html, stop, STOP_LINE[language]),
                headers={**headers, **unsubscribe_headers(stop), **thread_headers(
                    desk, earlier, f"public:{subscriber.id}")})))
    return rows


def _with_stop_link(html: str, link: str, label: str) -> str:
    """The HTML body with the stop link as its last paragraph (inside <body> if it has one)."""
    paragraph = f'<p><a href="{escape(link)}">{escape(label)}</a></p>\n'
    end = html.lower().rfind("</body>")
    return html[:end] + paragraph + html[end:] if end >= 0 else html + paragraph

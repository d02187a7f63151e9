"""Incidents: the sites they affect and each one's restore stage, the restore percentage of
the incident and of each account (with its history), and structured updates, published to
every contact of the affected accounts through the outbox.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import BaseModel, Field
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, func, select

from contacts.core import audit, clock
from contacts.core.audit import Actor
from contacts.core.crypto import Crypto, normalize_email
from contacts.core.db import bulk_insert, get_or_404, in_chunks
from contacts.core.errors import Conflict, Invalid, NotFound
from contacts.core.ids import new_id
from contacts.delivery import outbox
from contacts.delivery.webhook import WebhookPolicy, check_endpoint
from contacts.incidents import messages
from contacts.incidents.models import (
    CONFIDENCE,
    SEVERITIES,
    STATES,
    SUBSCRIBER_EMAIL,
    WEBHOOK_SECRET,
    AccountWebhook,
    AffectedSite,
    Incident,
    IncidentUpdate,
    MessageTemplate,
    StageChange,
    Subscriber,
    UpdateFallback,
)
from contacts.vault import service as vault_service

# States in which an incident is over: no more updates are promised.
CLOSED_STATES = ("resolved", "post_incident_review")


@dataclass(frozen=True)
class Desk:
    """What the incident service needs from settings."""

    stages: tuple[str, ...]
    restored_stage: str
    support_url: str
    base_url: str
    secret_key: str
    default_cadence_hours: float
    templates_dir: Path
    crypto: Crypto
    webhooks: WebhookPolicy  # which endpoints an account's webhook may be set to
    # A scheduled update goes out this long before the time it promised (never more than
    # half a cadence), so that the scheduler's run makes it on time.
    cadence_lead: timedelta = timedelta(seconds=60)

    @classmethod
    def from_settings(cls, settings, crypto: Crypto, templates_dir: Path) -> Desk:
        return cls(webhooks=WebhookPolicy.from_settings(settings),
                   stages=tuple(settings.incidents_stages),
                   restored_stage=settings.incidents_restored_stage,
                   support_url=settings.incidents_support_url,
                   base_url=settings.app_base_url.rstrip("/"),
                   secret_key=settings.secrets.secret_key,
                   default_cadence_hours=settings.incidents_default_cadence_hours,
                   templates_dir=templates_dir, crypto=crypto,
                   cadence_lead=timedelta(
                       seconds=max(0, settings.incidents_cadence_lead_seconds)))

    def restored(self, stage: str) -> bool:
        return self.stages.index(stage) >= self.stages.index(self.restored_stage)


# -- incidents and their sites -----------------------------------------------------------------


def create_incident(*, session: Session, actor: Actor, title: str, severity: str,
                    started_at: datetime, now: datetime) -> Incident:
    title = title.strip()
    if not title:
        raise Invalid("give the incident a title")
    if severity not in SEVERITIES:
        raise Invalid(f"severity must be one of {', '.join(SEVERITIES)}")
    incident = Incident(id=new_id("inc"), title=title[:200], state="investigating",
                        severity=severity, started_at=started_at, created_at=now,
                        updated_at=now, created_by=actor.id or actor.kind)
    session.add(incident)
    audit.record(session, actor, "incident.created", target_kind="incident",
                 target_id=incident.id)
    return incident


def get_incident(*, session: Session, incident_id: str) -> Incident:
    return get_or_404(session, Incident, incident_id, "inc",
                      "There is no incident with this ID.")


def list_incidents(*, session: Session, open_only: bool = False) -> list[Incident]:
    query = select(Incident)
    if open_only:
        query = query.where(col(Incident.state).not_in(CLOSED_STATES))
    return list(session.exec(query.order_by(col(Incident.started_at).desc()).limit(200)))


def recently_closed(*, session: Session, since: datetime, limit: int = 20) -> list[Incident]:
    """Incidents resolved (or under review) whose last update is after `since`, latest
    first: a customer who arrives after the fix still finds what happened."""
    return list(session.exec(
        select(Incident).where(col(Incident.state).in_(CLOSED_STATES),
                               col(Incident.last_update_at) >= since)
        .order_by(col(Incident.last_update_at).desc()).limit(limit)))


def add_sites(*, session: Session, desk: Desk, actor: Actor, incident_id: str,
              refs: list[str], now: datetime) -> int:
    """Add sites (site IDs or the product's external IDs) at the first stage. Every
    reference must be a live site, or nothing is added; returns how many were new."""
    incident = get_incident(session=session, incident_id=incident_id)
    refs = list(dict.fromkeys(ref.strip() for ref in refs if ref.strip()))
    if not refs:
        raise Invalid("list at least one site")
    found = vault_service.live_sites(session=session, refs=refs)
    unknown = [ref for ref in refs if ref not in found]
    if unknown:
        raise Invalid(f"{len(unknown)} sites are not in the vault: {', '.join(unknown[:10])}",
                      details={"unknown": unknown})
    already = {site_id for chunk in in_chunks(site.id for site in found.values())
               for site_id in session.exec(select(AffectedSite.site_id).where(
                   AffectedSite.incident_id == incident.id,
                   col(AffectedSite.site_id).in_(chunk)))}
    new = {site.id: site for site in found.values() if site.id not in already}
    first = desk.stages[0]
    bulk_insert(session.connection(), AffectedSite.__table__, [
        {"incident_id": incident.id, "site_id": site.id, "account_id": site.account_id,
         "stage": first, "stage_at": now} for site in new.values()])
    bulk_insert(session.connection(), StageChange.__table__, [
        {"incident_id": incident.id, "site_id": site_id, "stage": first, "at": now,
         "source": f"{actor.kind} {actor.id}"} for site_id in new])
    incident.updated_at = now
    session.add(incident)
    audit.record(session, actor, "incident.sites_added", target_kind="incident",
                 target_id=incident.id, added=len(new))
    return len(new)


def set_stages(*, session: Session, desk: Desk, actor: Actor, incident_id: str,
               stages: list[tuple[str, str]], now: datetime) -> int:
    """Move sites (by site ID or external ID) to stages. Everything is checked first: a site
    not in the incident, or a stage that does not exist, refuses the whole report."""
    incident = get_incident(session=session, incident_id=incident_id)
    problems = [f"{stage!r} is not a stage (stages: {', '.join(desk.stages)})"
                for _, stage in stages if stage not in desk.stages]
    found = vault_service.live_sites(session=session, refs=[ref for ref, _ in stages])
    affected = {row.site_id: row for chunk in in_chunks(site.id for site in found.values())
                for row in session.exec(select(AffectedSite).where(
                    AffectedSite.incident_id == incident.id,
                    col(AffectedSite.site_id).in_(chunk)))}
    problems += [f"site {ref!r} is not in this incident" for ref, _ in stages
                 if ref not in found or found[ref].id not in affected]
    if problems:
        raise Invalid("; ".join(dict.fromkeys(problems)), details={"problems": problems})
    changes = []
    for ref, stage in stages:
        row = affected[found[ref].id]
        if row.stage != stage:
            row.stage, row.stage_at = stage, now
            session.add(row)
            changes.append({"incident_id": incident.id, "site_id": row.site_id, "stage": stage,
                            "at": now, "source": f"{actor.kind} {actor.id}"})
    bulk_insert(session.connection(), StageChange.__table__, changes)
    if changes:
        incident.updated_at = now
        session.add(incident)
    return len(changes)


@dataclass(frozen=True)
class Progress:
    sites: int
    restored: int
    by_stage: dict[str, int]

    @property
    def percentage(self) -> float:
        return round(100 * self.restored / self.sites, 1) if self.sites else 0.0


def progress(*, session: Session, desk: Desk, incident_id: str,
             account_id: str | None = None) -> Progress:
    query = (select(AffectedSite.stage, func.count()).where(
        AffectedSite.incident_id == incident_id).group_by(AffectedSite.stage))
    if account_id is not None:
        query = query.where(AffectedSite.account_id == account_id)
    counts = dict(session.exec(query).all())
    by_stage = {stage: counts.get(stage, 0) for stage in desk.stages}
    return Progress(sites=sum(by_stage.values()),
                    restored=sum(n for stage, n in by_stage.items() if desk.restored(stage)),
                    by_stage=by_stage)


def progress_history(*, session: Session, desk: Desk,
                     incident_id: str) -> list[tuple[datetime, float]]:
    """(time, restore percentage) after each change: the restore curve."""
    current: dict[str, str] = {}
    points = []
    for change in session.exec(select(StageChange).where(StageChange.incident_id == incident_id)
                               .order_by(StageChange.at, StageChange.id)):
        current[change.site_id] = change.stage
        restored = sum(1 for stage in current.values() if desk.restored(stage))
        point = (change.at, round(100 * restored / len(current), 1))
        if points and points[-1][0] == change.at:
            points[-1] = point
        else:
            points.append(point)
    return points


@dataclass(frozen=True)
class SiteStage:
    site_id: str
    name: str
    account_id: str
    account_name: str
    stage: str
    stage_at: datetime


def affected_sites(*, session: Session, incident_id: str,
                   account_id: str | None = None) -> list[SiteStage]:
    query = select(AffectedSite).where(AffectedSite.incident_id == incident_id)
    if account_id is not None:
        query = query.where(AffectedSite.account_id == account_id)
    rows = session.execute(query.with_only_columns(
        AffectedSite.site_id, AffectedSite.account_id, AffectedSite.stage,
        AffectedSite.stage_at)).all()
    sites = vault_service.site_names(session=session, ids=[row.site_id for row in rows])
    accounts = vault_service.account_names(session=session,
                                           ids={row.account_id for row in rows})
    found = [SiteStage(row.site_id, sites.get(row.site_id, row.site_id), row.account_id,
                       accounts.get(row.account_id, row.account_id), row.stage, row.stage_at)
             for row in rows]
    return sorted(found, key=lambda site: (site.account_name, site.name))


# -- updates -----------------------------------------------------------------------------------


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


def computed_scope(*, session: Session, incident_id: str) -> tuple[int, int, str]:
    accounts, sites = session.exec(
        select(func.count(func.distinct(AffectedSite.account_id)), func.count())
        .where(AffectedSite.incident_id == incident_id)).one()
    return accounts, sites, (f"{sites} sites of {accounts} customer accounts are affected; "
                             "no other customer is.")


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


def _format_time(moment: datetime | None) -> str:
    return clock.format_utc(moment) if moment else "none: the incident is over"


def _values(desk: Desk, incident: Incident, update: IncidentUpdate) -> dict:
    return {"incident_title": incident.title, "incident_state": update.state.replace("_", " "),
            "number": update.number, "what_happened": update.what_happened,
            "scope": update.scope, "timeline": update.timeline,
            "next_update": _format_time(update.next_update_at),
            "restore_percentage": f"{update.restore_percentage:g}%",
            "data_loss": update.data_loss,
            "confidence_timeline": update.confidence["timeline"],
            "confidence_restore": update.confidence["restore"],
            "confidence_data_loss": update.confidence["data_loss"],
            "support": update.support,
            "status_link": f"{desk.base_url}/status/{incident.id}"}


def account_token(desk: Desk, incident_id: str, account_id: str) -> str:
    digest = hmac.digest(desk.secret_key.encode(),
                         f"incident-account\x00{incident_id}\x00{account_id}".encode(),
                         hashlib.sha256)
    return base64.urlsafe_b64encode(digest[:18]).decode("ascii")


def account_link(desk: Desk, incident_id: str, account_id: str) -> str:
    return (f"{desk.base_url}/status/{incident_id}/accounts/{account_id}"
            f"?t={account_token(desk, incident_id, account_id)}")


def token_opens_account(desk: Desk, incident_id: str, account_id: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(account_token(desk, incident_id, account_id),
                                               token or "")


def template_sources(*, session: Session, desk: Desk, locale: str) -> dict[str, str]:
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


def _build_update(session: Session, desk: Desk, incident: Incident, draft: UpdateDraft,
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


def _account_views(session: Session, desk: Desk, incident: Incident,
                   account_id: str | None = None) -> dict[str, dict]:
    """Each affected account's own part of an update (its sites, their stages, its restore
    percentage, its private link), for every account in two queries."""
    by_account: dict[str, list[SiteStage]] = {}
    for site in affected_sites(session=session, incident_id=incident.id,
                               account_id=account_id):
        by_account.setdefault(site.account_id, []).append(site)
    views = {}
    for owner, sites in by_account.items():
        restored = sum(1 for site in sites if desk.restored(site.stage))
        views[owner] = {
            "account_name": sites[0].account_name,
            "account_percentage": f"{round(100 * restored / len(sites), 1):g}%",
            "account_sites": [{"name": site.name, "stage": site.stage.replace("_", " ")}
                              for site in sites],
            "private_link": account_link(desk, incident.id, owner)}
    return views


def preview(*, session: Session, desk: Desk, vault: vault_service.Vault, incident_id: str,
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
    view = _account_views(session, desk, incident, account.id).get(account.id)
    if view is None:
        raise Invalid("preview for an account this incident affects")
    values = {**_values(desk, incident, update), **view}
    sources = template_sources(session=session, desk=desk, locale=_language(contact.locale))
    webhook = json.dumps(json.loads(webhook_body(desk, incident, update, account.id, view)),
                         indent=2, ensure_ascii=False)
    failures = messages.TemplateFailures(defaults=messages.default_sources(desk.templates_dir))
    rendered = messages.render_update(sources, values, _language(contact.locale), failures)
    return Preview(recipient=vault_service.mask_email(contact.email),
                   locale=_language(contact.locale), rendered=rendered, update=update,
                   webhook=webhook, template_failures=failures.summary())


def _language(locale: str) -> str:
    return "fr" if locale.lower().startswith("fr") else "en"


def publish(*, session: Session, desk: Desk, vault: vault_service.Vault, actor: Actor,
            incident_id: str, draft: UpdateDraft, now: datetime) -> IncidentUpdate:
    """Record the update and queue one email per contact of every affected account, in its
    language, rendered once per account and language; all in the caller's transaction. A
    saved template that fails for an audience gives way to the default one: the update still
    goes out, and the failure is recorded on it and in the audit log."""
    incident = get_incident(session=session, incident_id=incident_id)
    update = _build_update(session, desk, incident, draft, actor, now)
    session.add(update)
    views = _account_views(session, desk, incident)
    contacts = vault_service.recipients_of_accounts(session=session, vault=vault,
                                                    account_ids=views)
    base = _values(desk, incident, update)
    sources = {language: template_sources(session=session, desk=desk, locale=language)
               for language in messages.LOCALES}
    failures = messages.TemplateFailures(defaults=messages.default_sources(desk.templates_dir))
    rows = []
    headers = {"List-Id": f"Lifeline incident {incident.id} <{incident.id}.incidents.lifeline>"}
    for account_id in sorted(views):
        if not contacts[account_id]:
            continue
        values = {**base, **views[account_id]}
        rendered: dict[str, messages.Rendered] = {}
        seen: set[str] = set()
        for contact in contacts[account_id]:
            if contact.email.lower() in seen:
                continue
            seen.add(contact.email.lower())
            language = _language(contact.locale)
            if language not in rendered:
                rendered[language] = messages.render_update(sources[language], values,
                                                            language, failures)
            message = rendered[language]
            rows.append(outbox.email_row(
                cipher=desk.crypto.cipher, key=f"update:{update.id}:{account_id}:{contact.id}",
                purpose="incident_update", now=now,
                email=outbox.Email(to=contact.email, subject=message.subject,
                                   text=message.text, html=message.html, headers=headers)))
    rows += _webhook_rows(session, desk, incident, update, views, now)
    rows += _subscriber_rows(session, desk, base, sources, update, headers, now, failures)
    update.template_failures = failures.summary() or None
    session.flush()
    outbox.enqueue_rows(session=session, rows=rows)
    update.recipients = len(rows)
    for failure in update.template_failures or ():
        audit.record(session, actor, "incident.template_failed", target_kind="incident",
                     target_id=incident.id, update=update.id, **failure)
    incident.state = update.state
    incident.last_update_at = now
    incident.next_update_due = update.next_update_at
    incident.updated_at = now
    session.add_all([update, incident])
    audit.record(session, actor, "incident.update_published", target_kind="incident",
                 target_id=incident.id, update=update.id, recipients=len(rows))
    return update


def updates_of(*, session: Session, incident_id: str) -> list[IncidentUpdate]:
    return list(session.exec(select(IncidentUpdate).where(
        IncidentUpdate.incident_id == incident_id).order_by(col(IncidentUpdate.number).desc())))


def is_late(incident: Incident, now: datetime) -> bool:
    """The promised update time has passed with no update: said, not hidden."""
    return incident.next_update_due is not None and now > incident.next_update_due


def late_updates(updates: list[IncidentUpdate], now: datetime) -> dict[int, bool]:
    """Per update number: whether the update it promised came late (or not yet, past due)."""
    ordered = sorted(updates, key=lambda update: update.number)
    following = {update.number: after.published_at
                 for update, after in zip(ordered, ordered[1:], strict=False)}
    return {update.number: update.next_update_at is not None
            and following.get(update.number, now) > update.next_update_at
            for update in ordered}


def next_due_default(desk: Desk, now: datetime) -> datetime:
    return now + timedelta(hours=desk.default_cadence_hours)




# -- cadence -----------------------------------------------------------------------------------


def set_cadence(*, session: Session, actor: Actor, incident_id: str,
                hours: float | None) -> Incident:
    """Every `hours` until resolved (None or 0: only when staff publish)."""
    incident = get_incident(session=session, incident_id=incident_id)
    if hours is not None and not 0 < hours <= 168:
        raise Invalid("the cadence must be between a few minutes and 168 hours")
    incident.cadence_hours = hours or None
    session.add(incident)
    audit.record(session, actor, "incident.cadence_set", target_kind="incident",
                 target_id=incident.id, hours=incident.cadence_hours)
    return incident


def publish_due(*, session: Session, desk: Desk, vault: vault_service.Vault,
                now: datetime) -> list[IncidentUpdate]:
    """Send the scheduled update of every incident whose cadence is due: the latest update
    again, with the scope, the restore percentage and each account's progress as they now
    stand, and the next update one cadence after the time promised (or after now, when that
    has passed). Incidents without a first update wait for staff (a scheduled update repeats
    what was said; it does not invent it).

    An update is due `desk.cadence_lead` before its promised time (never more than half a
    cadence before), so that the job, which runs every few seconds, sends it on time."""
    candidates = list(session.exec(select(Incident).where(
        col(Incident.cadence_hours).is_not(None),
        col(Incident.next_update_due).is_not(None),
        col(Incident.next_update_due) <= now + desk.cadence_lead,
        col(Incident.state).not_in(CLOSED_STATES))))
    due = [incident for incident in candidates
           if clock.as_utc(incident.next_update_due) - _lead(desk, incident) <= now]
    published = []
    for incident in due:
        latest = session.exec(select(IncidentUpdate).where(
            IncidentUpdate.incident_id == incident.id)
            .order_by(col(IncidentUpdate.number).desc())).first()
        if latest is None:
            continue
        draft = UpdateDraft(
            state=incident.state, what_happened=latest.what_happened,
            timeline=latest.timeline, data_loss=latest.data_loss,
            next_update_at=max(clock.as_utc(incident.next_update_due), now)
            + timedelta(hours=incident.cadence_hours),
            confidence_timeline=latest.confidence["timeline"],
            confidence_restore=latest.confidence["restore"],
            confidence_data_loss=latest.confidence["data_loss"])
        published.append(publish(session=session, desk=desk, vault=vault,
                                 actor=Actor.system("cadence"), incident_id=incident.id,
                                 draft=draft, now=now))
    return published


def _lead(desk: Desk, incident: Incident) -> timedelta:
    return min(desk.cadence_lead, timedelta(hours=incident.cadence_hours) / 2)


def warn_late(*, session: Session, desk: Desk, inbox: str, now: datetime) -> list[Incident]:
    """Email the comms team once about each promised update that is now late."""
    late = [incident for incident in session.exec(select(Incident).where(
        col(Incident.next_update_due).is_not(None), col(Incident.next_update_due) < now,
        col(Incident.state).not_in(CLOSED_STATES)))
        if incident.late_warned_for != incident.next_update_due]
    for incident in late:
        incident.late_warned_for = incident.next_update_due
        session.add(incident)
        audit.record(session, Actor.system("cadence"), "incident.update_late",
                     target_kind="incident", target_id=incident.id)
        if inbox:
            due = _format_time(incident.next_update_due)
            outbox.enqueue_email(
                session=session, cipher=desk.crypto.cipher, purpose="incident_late", now=now,
                key=f"late:{incident.id}:{incident.next_update_due.isoformat()}",
                email=outbox.Email(
                    to=inbox, subject=f"[{incident.title}] The update promised for {due} is late",
                    text=f"The update of {incident.title} promised for {due} has not been "
                         f"published. The public page says it is late.\n\n"
                         f"{desk.base_url}/console/incidents/{incident.id}\n"))
    return late


# -- webhooks ----------------------------------------------------------------------------------


def set_webhook(*, session: Session, desk: Desk, actor: Actor, account_id: str,
                url: str, now: datetime) -> str:
    """Register (or replace) an account's endpoint; returns its signing secret, shown once.
    An endpoint that is not on the public internet is refused (RefusedEndpoint, an Invalid
    naming why); the outbox checks it again each time it calls."""
    url = url.strip()
    check_endpoint(url, desk.webhooks)
    account = vault_service.get_account(session=session, account_id=account_id)
    secret = secrets.token_urlsafe(32)
    existing = session.get(AccountWebhook, account.id)
    webhook = existing or AccountWebhook(account_id=account.id, url=url, secret_encrypted="",
                                         created_by=actor.id or actor.kind, created_at=now)
    webhook.url = url
    webhook.secret_encrypted = desk.crypto.cipher.encrypt(secret, context=WEBHOOK_SECRET)
    webhook.created_by, webhook.created_at = actor.id or actor.kind, now
    webhook.quarantined_at = None
    session.add(webhook)
    audit.record(session, actor, "webhook.set", target_kind="account", target_id=account.id)
    return secret


def webhooks(*, session: Session) -> list[AccountWebhook]:
    return list(session.exec(select(AccountWebhook).order_by(AccountWebhook.account_id)))


def webhook_body(desk: Desk, incident: Incident, update: IncidentUpdate, account_id: str,
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
                    "sites": account_values["account_sites"],
                    "private_status_page": account_values["private_link"]},
    }, sort_keys=True)


def _webhook_rows(session: Session, desk: Desk, incident: Incident, update: IncidentUpdate,
                  views: dict[str, dict], now: datetime) -> list[dict]:
    rows = []
    for webhook in session.exec(select(AccountWebhook)):  # few: one per account at most
        if webhook.account_id not in views or webhook.quarantined_at is not None:
            continue
        body = webhook_body(desk, incident, update, webhook.account_id,
                            views[webhook.account_id])
        secret = desk.crypto.cipher.decrypt(webhook.secret_encrypted, context=WEBHOOK_SECRET)
        rows.append(outbox.webhook_row(
            cipher=desk.crypto.cipher, key=f"update:{update.id}:{webhook.account_id}:webhook",
            purpose="incident_update", now=now,
            webhook=outbox.Webhook(url=webhook.url, body=body,
                                   signature=outbox.sign(secret, body))))
    return rows


# -- proof: what was told, to whom, when ------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    update_number: int
    published_at: datetime
    account_id: str
    recipient: str  # a contact ID, or "webhook"
    channel: str
    state: str
    attempts: int
    sent_at: datetime | None


def deliveries(*, session: Session, incident_id: str,
               account_id: str | None = None) -> list[Delivery]:
    """Every message of the incident's updates with its outcome (IDs only, no addresses)."""
    updates = {update.id: update for update in updates_of(session=session,
                                                          incident_id=incident_id)}
    found = []
    for update_id, update in updates.items():
        prefix = f"update:{update_id}:" + (f"{account_id}:" if account_id else "")
        for row in outbox.messages_with_prefix(session=session, prefix=prefix):
            _, _, account, recipient = row.key.split(":", 3)
            found.append(Delivery(update.number, update.published_at, account, recipient,
                                  row.channel, row.state, row.attempts, row.sent_at))
    return sorted(found, key=lambda d: (d.update_number, d.account_id, d.recipient))


def delivery_counts(*, session: Session, incident_id: str) -> dict[int, dict[str, int]]:
    """Per update number: messages queued, sent and failed (counted in the database, not
    read: an update may have 100,000)."""
    return {update.number: outbox.counts_by_prefix(session=session,
                                                   prefix=f"update:{update.id}:")
            for update in updates_of(session=session, incident_id=incident_id)}


@dataclass(frozen=True)
class AccountUpdate:
    """An update that went to an account, for the account's timeline."""

    incident_id: str
    incident_title: str
    update_number: int
    published_at: datetime
    messages: dict[str, int]  # queued, sent, failed: to this account's contacts and webhook


def updates_to_account(*, session: Session, account_id: str,
                       limit: int = 50) -> list[AccountUpdate]:
    incident_ids = list(session.exec(select(AffectedSite.incident_id)
                                     .where(AffectedSite.account_id == account_id).distinct()))
    if not incident_ids:
        return []
    rows = session.exec(select(IncidentUpdate, Incident.title)
                        .join(Incident, col(Incident.id) == IncidentUpdate.incident_id)
                        .where(col(IncidentUpdate.incident_id).in_(incident_ids))
                        .order_by(col(IncidentUpdate.published_at).desc()).limit(limit))
    return [AccountUpdate(update.incident_id, title, update.number, update.published_at,
                          outbox.counts_by_prefix(session=session,
                                                  prefix=f"update:{update.id}:{account_id}:"))
            for update, title in rows]


# Failed update emails are looked at for this long after they were queued.
FALLBACK_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class Unreached:
    incident_id: str
    incident_title: str
    update_number: int
    account_id: str
    contacts_failed: int


def follow_up_bounces(*, session: Session, now: datetime) -> list[Unreached]:
    """Update emails refused for good: their contacts are flagged in the vault for the
    freshness work, and an account none of whose contacts the update reached is recorded as
    falling back (returned, once each, for support to call).

    It runs every few seconds beside the senders: everything is read first, in a few
    queries, and the writes come last, so SQLite's write lock is held only for them."""
    failed: dict[tuple[str, str], list[str]] = {}
    bounced_at: dict[str, datetime] = {}
    for key, created_at in outbox.bounced_keys_since(session=session,
                                                     since=now - FALLBACK_WINDOW):
        parts = key.split(":")
        if len(parts) == 4 and parts[0] == "update" and parts[3].startswith("ctc_"):
            failed.setdefault((parts[1], parts[2]), []).append(parts[3])
            bounced_at[parts[3]] = max(bounced_at.get(parts[3], created_at), created_at)
    if not failed:
        return []
    update_ids = list({update_id for update_id, _ in failed})
    known = {(row.update_id, row.account_id) for row in session.exec(
        select(UpdateFallback).where(col(UpdateFallback.update_id).in_(update_ids)))}
    updates = {update.id: update for update in session.exec(
        select(IncidentUpdate).where(col(IncidentUpdate.id).in_(update_ids)))}
    pending = {pair: contacts for pair, contacts in sorted(failed.items())
               if pair not in known and pair[0] in updates}
    reached = set()  # (update, account): another contact was reached, or may still be
    for update_id in {update_id for update_id, _ in pending}:
        for key in outbox.keys_in_states(session=session, prefix=f"update:{update_id}:",
                                         states=("sent", "queued")):
            parts = key.split(":")
            if len(parts) == 4 and parts[3].startswith("ctc_"):
                reached.add((update_id, parts[2]))
    titles = incident_titles(session=session,
                             ids=list({update.incident_id for update in updates.values()}))
    unreached = []
    vault_service.flag_undeliverable(session=session, actor=Actor.system("delivery"),
                                     bounced_at=bounced_at, now=now)
    for (update_id, account_id), contacts in pending.items():
        if (update_id, account_id) in reached:
            continue
        update = updates[update_id]
        session.add(UpdateFallback(update_id=update_id, account_id=account_id,
                                   incident_id=update.incident_id,
                                   contacts_failed=len(contacts), at=now))
        audit.record(session, Actor.system("delivery"), "incident.account_unreached",
                     target_kind="account", target_id=account_id, update=update_id)
        unreached.append(Unreached(update.incident_id, titles.get(update.incident_id, ""),
                                   update.number, account_id, len(contacts)))
    return unreached


def fallbacks_by_update(*, session: Session, incident_id: str) -> dict[int, int]:
    """Per update number: accounts no email reached, handed to support to call."""
    rows = session.exec(select(IncidentUpdate.number, func.count())
                        .join(UpdateFallback, col(UpdateFallback.update_id) == IncidentUpdate.id)
                        .where(IncidentUpdate.incident_id == incident_id)
                        .group_by(IncidentUpdate.number))
    return dict(rows.all())


def resolved_incidents(*, session: Session, ids: list[str]) -> set[str]:
    """Those of `ids` that are resolved (or past it, in review)."""
    found: set[str] = set()
    for chunk in in_chunks(ids):
        found |= set(session.exec(select(Incident.id).where(
            col(Incident.id).in_(chunk), col(Incident.state).in_(CLOSED_STATES))))
    return found


def incident_titles(*, session: Session, ids: list[str]) -> dict[str, str]:
    return dict(session.exec(select(Incident.id, Incident.title)
                             .where(col(Incident.id).in_(list(ids)))).all()) if ids else {}


# -- public subscriptions (double opt-in) ------------------------------------------------------

SUBSCRIPTION_DAYS = 7


ACTIONS = ("confirm", "stop")


def _subscriptions(desk: Desk, action: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(desk.secret_key, salt=f"status-subscription-{action}")


def subscription_link(desk: Desk, subscriber_id: int, action: str) -> str:
    token = _subscriptions(desk, action).dumps(subscriber_id)
    return f"{desk.base_url}/status/subscription/{action}/{token}"


def subscribe(*, session: Session, desk: Desk, email: str, locale: str,
              now: datetime) -> None:
    """Email the address once a day at most: a confirmation link for a new, pending or
    stopped subscription (nothing else is sent until it is followed), the stop link for one
    already confirmed. Either way one email is queued, so the page's answer, and the work
    behind it (the same sealing, the same one upsert, the same outbox row), do not tell
    whether the address was subscribed."""
    subscriber_id, confirmed_at, unsubscribed_at = _touch_subscriber(
        session, desk, email=email, locale=locale, now=now)
    subscribed = confirmed_at is not None and unsubscribed_at is None
    if subscribed:
        purpose, text = "subscription_reminder", (
            "Someone (we hope you) asked to receive incident updates at this address. It "
            "already receives them: nothing changes.\n"
            f"To stop them: {subscription_link(desk, subscriber_id, 'stop')}\n\n"
            "If it was not you, ignore this email.\n")
    else:
        purpose, text = "subscription_confirm", (
            "Someone (we hope you) asked to receive incident updates at this address.\n"
            f"Confirm within {SUBSCRIPTION_DAYS} days: "
            f"{subscription_link(desk, subscriber_id, 'confirm')}\n\n"
            "If it was not you, ignore this email: nothing else will be sent.\n")
    outbox.enqueue_email(
        session=session, cipher=desk.crypto.cipher, purpose=purpose, now=now,
        key=f"subscribe:{subscriber_id}:{now.date().isoformat()}",
        email=outbox.Email(to=email, subject="Incident updates by email", text=text))


def _touch_subscriber(session: Session, desk: Desk, *, email: str, locale: str,
                      now: datetime) -> tuple[int, datetime | None, datetime | None]:
    """The address's subscriber row, added if new, in one INSERT ... ON CONFLICT that
    returns it either way (a known address's row is left as it was): its id and state."""
    index = desk.crypto.index.digest("subscriber", normalize_email(email))
    table = Subscriber.__table__
    dialect = session.get_bind().dialect.name
    upsert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table).values(
        email_index=index, locale=_language(locale), created_at=now,
        email_encrypted=desk.crypto.cipher.encrypt(email, context=SUBSCRIBER_EMAIL))
    upsert = upsert.on_conflict_do_update(
        index_elements=[table.c.email_index],
        set_={"email_index": upsert.excluded.email_index},  # a no-op: the same write
    ).returning(table.c.id, table.c.confirmed_at, table.c.unsubscribed_at)
    subscriber_id, confirmed_at, unsubscribed_at = session.execute(upsert).one()
    return subscriber_id, confirmed_at, unsubscribed_at


def follow_subscription_link(*, session: Session, desk: Desk, action: str, token: str,
                             now: datetime) -> None:
    """Confirm a subscription (links last a week) or end one (links last forever)."""
    if action not in ACTIONS:
        raise NotFound("There is nothing at this address.")
    try:
        subscriber_id = _subscriptions(desk, action).loads(
            token, max_age=SUBSCRIPTION_DAYS * 86400 if action == "confirm" else None)
    except SignatureExpired:
        raise Invalid("This link has expired. Subscribe again on the status page.") from None
    except BadSignature:
        raise Invalid("This link is not valid.") from None
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise Invalid("This subscription no longer exists.")
    if action == "confirm":
        subscriber.confirmed_at, subscriber.unsubscribed_at = now, None
    else:
        subscriber.unsubscribed_at = now
    session.add(subscriber)


def _subscriber_rows(session: Session, desk: Desk, base: dict, sources: dict, update,
                     headers: dict, now: datetime,
                     failures: messages.TemplateFailures) -> list[dict]:
    """The public audience: confirmed subscribers, rendered once per language."""
    rows, rendered = [], {}
    for subscriber in session.exec(select(Subscriber).where(
            col(Subscriber.confirmed_at).is_not(None),
            col(Subscriber.unsubscribed_at).is_(None))):
        language = subscriber.locale if subscriber.locale in messages.LOCALES else "en"
        if language not in rendered:
            rendered[language] = messages.render_update(sources[language], {
                **base, "account_name": "", "account_percentage": "", "account_sites": [],
                "private_link": ""}, language, failures)
        message = rendered[language]
        stop = subscription_link(desk, subscriber.id, "stop")
        rows.append(outbox.email_row(
            cipher=desk.crypto.cipher, key=f"update:{update.id}:public:{subscriber.id}",
            purpose="incident_update", now=now,
            email=outbox.Email(
                to=desk.crypto.cipher.decrypt(subscriber.email_encrypted,
                                              context=SUBSCRIBER_EMAIL),
                subject=message.subject, text=f"{message.text}\nStop these emails: {stop}\n",
                html=message.html, headers={**headers, "List-Unsubscribe": f"<{stop}>"})))
    return rows


def quarantine_failing_webhooks(*, session: Session, now: datetime) -> list[str]:
    """Endpoints a message failed for good to (after every retry) stop receiving updates
    until staff save them again; returns their account IDs."""
    quarantined = []
    active = list(session.exec(select(AccountWebhook).where(
        col(AccountWebhook.quarantined_at).is_(None))))
    if not active:
        return quarantined
    failed = outbox.failed_since(session=session, channel="webhook",
                                 since=min(webhook.created_at for webhook in active))
    for webhook in active:
        if any(message.key.endswith(f":{webhook.account_id}:webhook")
               and message.created_at >= webhook.created_at for message in failed):
            webhook.quarantined_at = now
            session.add(webhook)
            audit.record(session, Actor.system("delivery"), "webhook.quarantined",
                         target_kind="account", target_id=webhook.account_id)
            quarantined.append(webhook.account_id)
    return quarantined

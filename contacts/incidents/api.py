"""Incidents over JSON, so a script (the drill) can run one without the console: open it, add
its sites, publish updates (`incidents:write`), read it back and one account's proof of
delivery (`read`); the product reports restore progress (`progress:write`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from flask import Blueprint, g
from pydantic import BaseModel, ConfigDict, Field

from contacts.core.api import API_PREFIX, Moment, Text, ValidationFailed, from_row, operation
from contacts.core.db import request_session, utcnow
from contacts.core.errors import WrongKind
from contacts.core.ids import kind_of, parse_id
from contacts.incidents import cadence, fanout, progress, proof, publishing, records
from contacts.incidents.models import IncidentUpdate
from contacts.incidents.web import desk

bp = Blueprint("incidents_api", __name__, url_prefix=API_PREFIX)

State = Literal["investigating", "identified", "monitoring", "resolved", "post_incident_review"]
Severity = Literal["minor", "major", "critical"]
Confidence = Literal["low", "medium", "high"]


# -- incidents ---------------------------------------------------------------------------------


class IncidentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Text = Field(min_length=1, max_length=200)
    severity: Severity
    started_at: Moment | None = Field(default=None, description="With a time zone; now when "
                                                                "left out.")


class IncidentOut(BaseModel):
    id: str
    title: str
    state: str = Field(description="A new incident is `investigating`; each published "
                                   "update sets the state it states.")
    severity: str
    started_at: datetime
    created_at: datetime
    updated_at: datetime
    last_update_at: datetime | None
    next_update_due: datetime | None = Field(description="When customers were promised the "
                                                         "next update; null once resolved.")
    late: bool = Field(description="The promised update time has passed with no update.")
    cadence_hours: float | None = Field(description="Scheduled updates every this many hours "
                                                    "until resolved; null: none.")


def _incident_out(incident) -> IncidentOut:
    return from_row(IncidentOut, incident, late=cadence.is_late(incident, utcnow()))


@bp.post("/incidents")
@operation(scope="incidents:write", response=IncidentOut, status=201, body=IncidentIn,
           tags=("incidents",))
def create_incident(json: IncidentIn):
    """Open an incident, as the console does; it starts `investigating`."""
    now = utcnow()
    incident = records.create_incident(session=request_session(), actor=g.actor,
                                       title=json.title, severity=json.severity,
                                       started_at=json.started_at or now, now=now)
    return _incident_out(incident), 201


# -- affected sites ----------------------------------------------------------------------------


class SitesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sites: list[Annotated[Text, Field(max_length=128)]] = Field(
        min_length=1, max_length=5000,
        description="Site IDs (site_...) or the product's external site IDs. An account is "
                    "added by listing its sites.")


class SitesAdded(BaseModel):
    added: int = Field(description="Sites new to the incident, at the first stage.")
    already_there: int = Field(description="References that added no site: it was already "
                                           "in the incident, or named twice in this request.")
    sites: int = Field(description="Sites the incident now affects.")
    accounts: int = Field(description="Accounts the incident now affects.")


def _refused_kinds(refs: list[str]) -> dict[str, str]:
    """The references that are IDs of another kind (an account, an app...), each with why."""
    refused = {}
    for ref in refs:
        if kind_of(ref) not in (None, "site"):
            try:
                parse_id(ref, "site")
            except WrongKind as exc:
                refused[ref] = exc.message
    return refused


@bp.post("/incidents/<incident_id>/sites")
@operation(scope="incidents:write", response=SitesAdded, body=SitesIn, tags=("incidents",))
def add_sites(incident_id: str, json: SitesIn):
    """Add affected sites at the first stage. An unknown site, or an ID of another kind,
    refuses the whole list (400 naming each); nothing is half-written."""
    refs = list(dict.fromkeys(ref.strip() for ref in json.sites if ref.strip()))
    refused = _refused_kinds(refs)
    if refused:
        named = "; ".join(f"{ref}: {why}" for ref, why in list(refused.items())[:10])
        raise WrongKind(f"{len(refused)} references are not sites: {named}. Give site IDs "
                        "(site_...) or the product's external site IDs.",
                        details={"wrong_kind": list(refused)})
    session = request_session()
    added = progress.add_sites(session=session, desk=desk(), actor=g.actor,
                               incident_id=incident_id, refs=refs, now=utcnow())
    accounts, sites, _ = progress.computed_scope(session=session,
                                                 incident_id=parse_id(incident_id, "inc"))
    return SitesAdded(added=added, already_there=len(refs) - added, sites=sites,
                      accounts=accounts)


# -- updates -----------------------------------------------------------------------------------


class UpdateIn(BaseModel):
    """The fields of `publishing.UpdateDraft`; what a publishable update lacks is answered 422
    naming every missing field."""

    model_config = ConfigDict(extra="forbid")

    state: State | None = Field(default=None, description="Required. `resolved` or "
                                                          "`post_incident_review` need no "
                                                          "next update time.")
    what_happened: Text = Field(default="", max_length=10_000, description="Required.")
    scope: Text = Field(default="", max_length=10_000,
                       description="Computed from the affected sites when left empty.")
    timeline: Text = Field(default="", max_length=10_000, description="Required.")
    next_update_at: Moment | None = Field(default=None, description="Required unless the "
                                                                    "state is resolved.")
    restore_percentage: float | None = Field(default=None, ge=0, le=100,
                                             description="Computed from the stages when left "
                                                         "out; an override needs a note.")
    restore_note: Text = Field(default="", max_length=500)
    data_loss: Text = Field(default="", max_length=10_000, description="Required: the expected "
                                                                      "data loss.")
    confidence_timeline: Confidence | None = Field(default=None, description="Required.")
    confidence_restore: Confidence | None = Field(default=None, description="Required.")
    confidence_data_loss: Confidence | None = Field(default=None, description="Required.")
    cadence_hours: float | None = Field(
        default=None, gt=0, le=168,
        description="Left out: the cadence is unchanged. A number (fractions allowed, 0.25 "
                    "is 15 minutes): the latest update goes out again every this many hours "
                    "until resolved. null: only when published.")

    def draft(self) -> publishing.UpdateDraft:
        return publishing.UpdateDraft(
            state=self.state or "", what_happened=self.what_happened, scope=self.scope,
            timeline=self.timeline, next_update_at=self.next_update_at,
            restore_percentage=self.restore_percentage, restore_note=self.restore_note,
            data_loss=self.data_loss, confidence_timeline=self.confidence_timeline or "",
            confidence_restore=self.confidence_restore or "",
            confidence_data_loss=self.confidence_data_loss or "")


class ConfidenceOut(BaseModel):
    timeline: str
    restore: str
    data_loss: str


class TemplateFailure(BaseModel):
    kind: str = Field(description="subject, text or html")
    locale: str
    audiences: int = Field(description="Accounts (or the public subscribers) that got the "
                                       "default template of this kind instead.")
    error: str = Field(description="What went wrong, the first time.")


class UpdateOut(BaseModel):
    id: str
    number: int
    state: str
    published_at: datetime
    next_update_at: datetime | None
    late: bool = Field(description="The next update it promised came after `next_update_at`, "
                                   "or has not come and that time has passed.")
    what_happened: str
    scope: str
    accounts_affected: int
    sites_affected: int
    timeline: str
    restore_percentage: float
    restore_note: str | None
    data_loss: str
    confidence: ConfidenceOut
    support: str
    recipients: int = Field(description="Messages queued for it so far: an email per contact "
                                        "of the affected accounts, a webhook per account "
                                        "endpoint, an email per subscriber. A job queues them "
                                        "after publishing, in batches: see `audience_queued`.")
    audience_queued: bool = Field(description="Every recipient is queued: `recipients` is "
                                              "final.")
    messages: dict[str, int] = Field(description="Those messages by state now: queued, sent, "
                                                 "failed.")
    accounts_unreached: int = Field(description="Accounts none of whose contacts an email "
                                                "reached, handed to support to call.")
    template_failures: list[TemplateFailure] = Field(
        description="Saved templates that failed for some audiences when it was published: "
                    "those audiences got the default template of that kind instead.")


class UpdatePublished(UpdateOut):
    cadence_hours: float | None = Field(description="The incident's cadence after this call.")


def _updates_out(session, incident_id: str, updates: list[IncidentUpdate]) -> list[UpdateOut]:
    counts = proof.delivery_counts(session=session, incident_id=incident_id)
    unreached = proof.fallbacks_by_update(session=session, incident_id=incident_id)
    late = cadence.late_updates(updates, utcnow())
    queuing = fanout.progress_by_update(session=session, incident_id=incident_id)
    return [from_row(UpdateOut, update, late=late[update.number],
                     audience_queued=queuing[update.number].done
                     if update.number in queuing else True,
                     confidence=ConfidenceOut(**update.confidence),
                     messages=counts.get(update.number, {}),
                     accounts_unreached=unreached.get(update.number, 0),
                     template_failures=update.template_failures or []) for update in updates]


@bp.post("/incidents/<incident_id>/updates")
@operation(scope="incidents:write", response=UpdatePublished, status=201, body=UpdateIn,
           errors=(409,), tags=("incidents",))
def publish_update(incident_id: str, json: UpdateIn):
    """Publish an update exactly as the console does: recorded at once; then a job queues
    an email per contact of every affected account (and a webhook per endpoint, an email
    per subscriber) in the outbox, in batches (`recipients` grows until `audience_queued`).
    A draft missing required fields is refused 422, naming each; an incident with no sites
    is 409."""
    draft = json.draft()
    missing = publishing.missing_fields(draft)
    if missing:
        raise ValidationFailed(
            "The update cannot be published without: "
            + ", ".join(f"{name} ({publishing.FIELD_NAMES[name]})" for name in missing),
            details=[{"field": name, "message": f"required: {publishing.FIELD_NAMES[name]}",
                      "type": "missing"} for name in missing])
    session = request_session()
    update = publishing.publish(session=session, desk=desk(), actor=g.actor,
                                incident_id=incident_id, draft=draft, now=utcnow())
    incident = records.get_incident(session=session, incident_id=update.incident_id)
    if "cadence_hours" in json.model_fields_set:
        incident = cadence.set_cadence(session=session, actor=g.actor,
                                       incident_id=incident.id, hours=json.cadence_hours)
    published = _updates_out(session, incident.id,
                             publishing.updates_of(session=session, incident_id=incident.id))
    mine = next(out for out in published if out.id == update.id)
    return UpdatePublished(**mine.model_dump(), cadence_hours=incident.cadence_hours), 201


# -- reading -----------------------------------------------------------------------------------


class IncidentDetail(IncidentOut):
    restore_percentage: float
    sites: int = Field(description="Sites the incident affects.")
    restored: int = Field(description="Of those, sites at the restored stage or past it.")
    by_stage: dict[str, int] = Field(description="Sites at each stage, in the stages' order.")
    accounts: int = Field(description="Accounts the incident affects.")
    updates: list[UpdateOut] = Field(description="Newest first.")


@bp.get("/incidents/<incident_id>")
@operation(scope="read", response=IncidentDetail, tags=("incidents",))
def get_incident(incident_id: str):
    """The incident, its restore progress, and every update with its messages' outcomes."""
    session = request_session()
    incident = records.get_incident(session=session, incident_id=incident_id)
    restore = progress.progress(session=session, desk=desk(), incident_id=incident.id)
    accounts, _, _ = progress.computed_scope(session=session, incident_id=incident.id)
    updates = publishing.updates_of(session=session, incident_id=incident.id)
    return IncidentDetail(
        **_incident_out(incident).model_dump(), restore_percentage=restore.percentage,
        sites=restore.sites, restored=restore.restored, by_stage=restore.by_stage,
        accounts=accounts, updates=_updates_out(session, incident.id, updates))


class DeliveryOut(BaseModel):
    update_number: int
    recipient: str = Field(description="The contact's ID (ctc_...), or `webhook`.")
    channel: str = Field(description="email or webhook")
    state: str = Field(description="queued, sent or failed")
    failure: str | None = Field(description="Why it failed: `bounced` when the recipient's "
                                            "server refused it, at once or later by a "
                                            "delivery status notification; null otherwise.")
    attempts: int
    sent_at: datetime | None


class DeliveryList(BaseModel):
    account_id: str
    deliveries: list[DeliveryOut] = Field(description="By update, then recipient.")


@bp.get("/incidents/<incident_id>/accounts/<account_id>/deliveries")
@operation(scope="read", response=DeliveryList, tags=("incidents",))
def account_deliveries(incident_id: str, account_id: str):
    """Proof of delivery for one account (an incident may have 100,000 messages, an account
    few): every message of the incident's updates to its contacts and its endpoint, with its
    outcome now (IDs only, no addresses); none for an account the incident did not reach."""
    session = request_session()
    incident = records.get_incident(session=session, incident_id=incident_id)
    account_id = parse_id(account_id, "acc")
    found = proof.deliveries(session=session, incident_id=incident.id, account_id=account_id)
    return DeliveryList(account_id=account_id, deliveries=[
        DeliveryOut(update_number=item.update_number, recipient=item.recipient,
                    channel=item.channel, state=item.state, failure=item.failure,
                    attempts=item.attempts, sent_at=item.sent_at) for item in found])


# -- progress from the product -----------------------------------------------------------------


class SiteStageIn(BaseModel):
    site: Text = Field(max_length=128, description="A site ID (site_...) or the product's "
                                                  "external ID of the site.")
    stage: Text = Field(max_length=32)


class ProgressReport(BaseModel):
    sites: list[SiteStageIn] = Field(min_length=1, max_length=5000)


class ProgressOut(BaseModel):
    changed: int = Field(description="Sites whose stage changed.")
    sites: int
    restored: int
    restore_percentage: float
    by_stage: dict[str, int]


@bp.post("/incidents/<incident_id>/progress")
@operation(scope="progress:write", response=ProgressOut, body=ProgressReport,
           tags=("incidents",))
def report_progress(incident_id: str, json: ProgressReport):
    """Move the incident's sites to stages. A site not in the incident or an unknown stage
    refuses the whole report (422 naming each problem); nothing is half-written."""
    session = request_session()
    changed = progress.set_stages(session=session, desk=desk(), actor=g.actor,
                                  incident_id=incident_id,
                                  stages=[(item.site, item.stage) for item in json.sites],
                                  now=utcnow())
    now = progress.progress(session=session, desk=desk(), incident_id=incident_id)
    return ProgressOut(changed=changed, sites=now.sites, restored=now.restored,
                       restore_percentage=now.percentage, by_stage=now.by_stage)

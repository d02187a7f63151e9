"""The update schedule: whether a promised update is late, the scheduled updates of
incidents on a cadence, and the comms team's warning when a promised update is late."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from contacts.core import audit, clock
from contacts.core.audit import Actor
from contacts.core.errors import Invalid
from contacts.delivery import outbox
from contacts.incidents.desk import CommsDesk
from contacts.incidents.models import Incident, IncidentUpdate
from contacts.incidents.publishing import UpdateDraft, format_time, publish
from contacts.incidents.records import CLOSED_STATES, get_incident


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


def next_due_default(desk: CommsDesk, now: datetime) -> datetime:
    return now + timedelta(hours=desk.default_cadence_hours)


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


def publish_due(*, session: Session, desk: CommsDesk, now: datetime) -> list[IncidentUpdate]:
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
        published.append(publish(session=session, desk=desk, actor=Actor.system("cadence"),
                                 incident_id=incident.id, draft=draft, now=now))
    return published


def _lead(desk: CommsDesk, incident: Incident) -> timedelta:
    return min(desk.cadence_lead, timedelta(hours=incident.cadence_hours) / 2)


def warn_late(*, session: Session, desk: CommsDesk, inbox: str, now: datetime) -> list[Incident]:
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
            due = format_time(incident.next_update_due)
            outbox.enqueue_email(
                session=session, cipher=desk.crypto.cipher, purpose="incident_late", now=now,
                key=f"late:{incident.id}:{incident.next_update_due.isoformat()}",
                topic=outbox.Topic("incident", incident.id, "inbox"),
                email=outbox.Email(
                    to=inbox, subject=f"[{incident.title}] The update promised for {due} is late",
                    text=f"The update of {incident.title} promised for {due} has not been "
                         f"published. The public page says it is late.\n\n"
                         f"{desk.base_url}/console/incidents/{incident.id}\n"))
    return late

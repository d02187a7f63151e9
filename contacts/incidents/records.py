"""Incidents themselves: opening one, finding and listing them, and which are over (resolved
or under review)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.db import get_or_404, in_chunks
from contacts.core.errors import Invalid
from contacts.core.ids import new_id
from contacts.incidents.models import SEVERITIES, Incident, IncidentUpdate

# States in which an incident is over: no more updates are promised.
CLOSED_STATES = ("resolved", "post_incident_review")


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


def incident_of_update(*, session: Session, update_id: str) -> str | None:
    """The incident an update belongs to (an email answering it is about that incident)."""
    update = session.get(IncidentUpdate, update_id)
    return update.incident_id if update else None

"""What one area's events make another do, composed above the domains so that none of them
is a hub: tickets follow their support requests, and items follow their resolved incident.
(An account that no update reached gets a call task: `jobs.send_scheduled_updates` hands
the incidents' list to the escalations.)"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from contacts.escalations import service as escalations
from contacts.incidents import service as incidents_service
from contacts.intake import service as intake_service


def sync_requests(*, session: Session, desk: escalations.SupportDesk, now: datetime,
                  limit: int = 1000) -> int:
    """Every request changed since the last sync, page by page, handed to the escalations
    (a ticket for a new one, its ticket kept in step for the others)."""
    since = escalations.requests_seen_since(session)
    changed = 0
    while True:
        summaries = intake_service.requests_changed_since(session=session, since=since,
                                                          limit=limit)
        changed += escalations.follow_requests(session=session, desk=desk, requests=summaries,
                                               now=now)
        if len(summaries) < limit:
            return changed
        session.flush()
        since = (summaries[-1].changed_at, summaries[-1].id)


def resolve_for_incidents(*, session: Session, desk: escalations.SupportDesk, now: datetime) -> int:
    """Open items linked to an incident now resolved are resolved with it."""
    resolved = incidents_service.resolved_incidents(
        session=session, ids=escalations.incidents_of_open_items(session))
    return escalations.resolve_with_incidents(session=session, desk=desk, resolved=resolved,
                                              now=now)

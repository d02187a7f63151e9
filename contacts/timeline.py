"""An account's timeline as the other areas tell it: the support requests received and
answered (intake) and the incident updates sent to its contacts (incidents). The account
page's work panel merges it with the items' own history (`escalations/accounts.py`)."""

from __future__ import annotations

from sqlmodel import Session

from contacts.escalations.service import TimelineEntry
from contacts.incidents import service as incidents_service
from contacts.intake import service as intake_service

EXCHANGES = {"received": "Request {reference} received from the public form",
             "customer": "The customer wrote again on {reference}",
             "staff": "Support replied on request {reference}"}


def account_history(session: Session, account_id: str) -> list[TimelineEntry]:
    entries = []
    for exchange in intake_service.exchanges_of_account(session=session,
                                                        account_id=account_id):
        entries.append(TimelineEntry(
            exchange.at, "reply" if exchange.kind == "staff" else "request",
            EXCHANGES[exchange.kind].format(reference=exchange.reference),
            f"/console/requests/{exchange.request_id}"))
    for update in incidents_service.updates_to_account(session=session,
                                                       account_id=account_id):
        sent = update.messages.get("sent", 0)
        queued = update.messages.get("queued", 0)
        entries.append(TimelineEntry(
            update.published_at, "update",
            f"Update #{update.update_number} of “{update.incident_title}”: {sent} sent"
            + (f", {queued} queued" if queued else "")
            + (f", {update.messages['failed']} failed" if update.messages.get("failed") else ""),
            f"/console/incidents/{update.incident_id}"))
    return entries

"""An account's timeline as the other areas tell it: the support requests received and
answered (intake), the incident updates sent to its contacts (incidents) and the emails
received about it that no request holds (inbound: answers to updates, late bounces). The account
page's work panel merges it with the items' own history (`escalations/accounts.py`)."""

from __future__ import annotations

from sqlmodel import Session

from contacts.escalations.service import TimelineEntry
from contacts.inbound import store as inbound_store
from contacts.incidents import service as incidents_service
from contacts.intake import service as intake_service

EXCHANGES = {"received": "Request {reference} received {by}",
             "customer": "The customer wrote again on {reference} {by}",
             "other": "Someone other than the requester wrote on {reference} {by}",
             "auto": "An automatic reply arrived on {reference} {by}",
             "staff": "Support replied on request {reference}"}
CHANNELS = {"web": "from the public form", "email": "by email"}
MAIL = {"reply": "An email answered {what}", "auto_reply": "An automatic reply to {what}",
        "bounce": "A late bounce for {what}", "delay": "A delay notice for {what}",
        "complaint": "An abuse report for {what}"}


def account_history(session: Session, account_id: str) -> list[TimelineEntry]:
    entries = []
    for exchange in intake_service.exchanges_of_account(session=session,
                                                        account_id=account_id):
        entries.append(TimelineEntry(
            exchange.at, "reply" if exchange.kind == "staff" else "request",
            EXCHANGES[exchange.kind].format(reference=exchange.reference,
                                            by=CHANNELS.get(exchange.channel, "")).strip(),
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
    for mail in inbound_store.account_mail(session=session, account_id=account_id):
        if mail.request_id or mail.outcome not in MAIL:
            continue  # a request's emails are its exchanges, above
        what = ("an incident update" if mail.thread_kind == "contact" else
                f"item {mail.item_id}" if mail.thread_kind == "item" else "an email we sent")
        text = MAIL[mail.outcome].format(what=what)
        if mail.outcome == "reply" and mail.from_party is False:
            text += " (not from the person it was sent to)"
        entries.append(TimelineEntry(mail.at, "email", text, f"/console/inbound/{mail.id}"))
    return entries

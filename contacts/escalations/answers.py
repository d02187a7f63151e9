"""What customers write back, on the items it concerns: an email answering a ticket's
request, an item's reply or an incident update joins the item's history, and an answer
from the requester moves an item waiting on the customer back to us (its clock resumes),
or reopens one resolved. A message from someone else is kept and marked, and moves
nothing; an automatic reply is kept and moves nothing either."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from contacts.core.audit import Actor
from contacts.escalations.desk import SupportDesk, record_event
from contacts.escalations.items import NewItem, create_item, move
from contacts.escalations.models import EVENT_MESSAGE_REF, WorkItem

CUSTOMER = Actor.system("customer")


@dataclass(frozen=True)
class Written:
    """A message a customer sent, as an item's history shows it."""

    body: str  # what they wrote, without the quoted history
    channel: str  # email, web
    as_requester: bool  # from the thread's requester (else: kept, marked, acts as nobody)
    automatic: bool = False  # an auto-reply (out of office...): recorded, never acted on
    verified: bool = False  # the receiving server vouched for the sender (DMARC/DKIM)
    # The account's contact who wrote (an answer to an update sent to them): the item's
    # requester from now on if it had none, so support's answer goes back to them.
    contact_id: str | None = None
    message_id: str | None = None  # its Message-ID, which support's answer names


def customer_wrote(*, session: Session, desk: SupportDesk, item_id: str, written: Written,
                   now: datetime) -> WorkItem | None:
    """Add what a customer wrote to an item; the requester's own answer brings the item
    back to us. None when the item is gone (deleted or merged away: its survivor gets it)."""
    item = session.get(WorkItem, item_id)
    while item is not None and item.merged_into_id:
        item = session.get(WorkItem, item.merged_into_id)
    if item is None or item.deleted_at is not None:
        return None
    kind = "auto_reply" if written.automatic else "customer_reply" if written.as_requester \
        else "other_reply"
    who = "the requester" if written.as_requester else "someone other than the requester"
    detail = (f"automatic reply by {written.channel}" if written.automatic else
              f"{who} wrote by {written.channel}"
              + ("" if written.verified or written.channel != "email" else " (sender unverified)"))
    event = record_event(session, desk, item, CUSTOMER, kind, now, detail,
                         written.body[:20_000])
    if written.message_id and kind == "customer_reply":
        event.message_ref_encrypted = desk.seal(written.message_id[:998], EVENT_MESSAGE_REF)
    item.updated_at = now
    if (written.as_requester and not written.automatic and written.contact_id
            and not item.request_id and not item.requester_contact_id):
        item.requester_contact_id = written.contact_id
        item.requester_verification = "authorized"  # a listed contact of the account
        record_event(session, desk, item, CUSTOMER, "requester", now,
                     f"requester: contact {written.contact_id}, who answered by email")
    if written.as_requester and not written.automatic:
        if item.status == "waiting_on_customer":
            move(session, desk, item, CUSTOMER, "in_progress", now, "the customer answered")
        elif item.status == "resolved":
            move(session, desk, item, CUSTOMER, "in_progress", now,
                 "the customer wrote again after it was resolved")
    session.add(item)
    return item


def ticket_of_request(*, session: Session, request_id: str) -> str | None:
    """The ticket that follows a support request, if the sync has made it."""
    return session.exec(select(WorkItem.id).where(WorkItem.request_id == request_id)).first()


def item_for_update_reply(*, session: Session, desk: SupportDesk, account_id: str,
                          incident_id: str | None, contact_id: str | None, now: datetime,
                          create: bool = True) -> str | None:
    """Where an account contact's answer to an incident update goes: the account's open item
    linked to that incident (the newest), else (with `create`) a new ticket for it, so the
    answer is heard."""
    query = select(WorkItem.id).where(WorkItem.account_id == account_id,
                                      col(WorkItem.is_open).is_(True),
                                      col(WorkItem.deleted_at).is_(None),
                                      col(WorkItem.merged_into_id).is_(None))
    if incident_id:
        query = query.where(WorkItem.incident_id == incident_id)
    found = session.exec(query.order_by(col(WorkItem.created_at).desc())).first()
    if found or not create:
        return found
    item = create_item(session=session, desk=desk, actor=CUSTOMER, now=now, new=NewItem(
        kind="ticket", channel="email", account_id=account_id, priority=2,
        title="Answer to an incident update", incident_id=incident_id,
        requester_contact_id=contact_id))
    return item.id

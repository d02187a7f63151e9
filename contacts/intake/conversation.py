"""A request's conversation: opened for reading (`request_view`: the request and every
message, in clear, for its page), and the replies both ways (staff's goes out by email)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.errors import Invalid
from contacts.core.mail import SUPPORT_LIST_ID, Renderer
from contacts.delivery import outbox
from contacts.intake import threads
from contacts.intake.codes import status_link
from contacts.intake.config import Intake
from contacts.intake.models import (
    MESSAGE_BODY,
    MESSAGE_REF,
    REQUEST_COMPANY,
    REQUEST_EMAIL,
    REQUEST_MESSAGE,
    REQUEST_NAME,
    REQUEST_PHONE,
    REQUEST_SITE,
    RequestMessage,
    SupportRequest,
)
from contacts.intake.references import get_by_reference, get_request


@dataclass(frozen=True)
class Entry:
    author: str  # customer, staff, other (not the requester), auto (an automatic reply)
    at: datetime
    body: str
    channel: str = "web"  # web, email
    inbound_id: str | None = None  # the email it came in, shown whole on its own page


@dataclass(frozen=True)
class RequestView:
    request: SupportRequest
    email: str
    name: str | None
    company: str | None
    site: str | None
    phone: str | None
    conversation: list[Entry]


def request_view(*, session: Session, intake: Intake, request: SupportRequest) -> RequestView:
    cipher = intake.crypto.cipher

    def opened(value: str | None, context: str) -> str | None:
        return cipher.decrypt(value, context=context) if value else None

    conversation = [Entry("customer", request.received_at,
                          cipher.decrypt(request.message_encrypted, context=REQUEST_MESSAGE),
                          request.channel, request.inbound_id)]
    conversation += [Entry(message.author, message.at,
                           cipher.decrypt(message.body_encrypted, context=MESSAGE_BODY),
                           message.channel, message.inbound_id)
                     for message in session.exec(select(RequestMessage)
                                                 .where(RequestMessage.request_id == request.id)
                                                 .order_by(RequestMessage.at,
                                                           RequestMessage.id))]
    return RequestView(request=request,
                       email=cipher.decrypt(request.email_encrypted, context=REQUEST_EMAIL),
                       name=opened(request.name_encrypted, REQUEST_NAME),
                       company=opened(request.company_encrypted, REQUEST_COMPANY),
                       site=opened(request.site_encrypted, REQUEST_SITE),
                       phone=opened(request.phone_encrypted, REQUEST_PHONE),
                       conversation=conversation)


def reply_as_staff(*, session: Session, intake: Intake, actor: Actor, request_id: str,
                   body: str, render: Renderer, now: datetime) -> RequestMessage:
    """Queue a staff reply to the requester: answers come back to the request's reply
    address, and it names the receipt and the staff replies before it."""
    request = get_request(session=session, request_id=request_id)
    earlier = threads.conversation_ids(session, intake, request)
    message = _add_message(session, intake, request, "staff", body, now, staff_id=actor.id)
    session.flush()
    email = intake.crypto.cipher.decrypt(request.email_encrypted, context=REQUEST_EMAIL)
    subject, text, html = render("request_reply", request.locale, {
        "reference": request.reference, "reply": body,
        "status_link": status_link(intake, request.reference)})
    outbox.enqueue_email(session=session, cipher=intake.crypto.cipher,
                         key=threads.reply_key(message.id), purpose="request_reply", now=now,
                         topic=outbox.Topic("request", request.reference, "requester",
                                            request.reference, request.account_id),
                         email=outbox.Email(to=email, subject=subject, text=text, html=html,
                                            headers={"List-Id": SUPPORT_LIST_ID,
                                                     **threads.thread_headers(
                                                         intake, request.id, [],
                                                         earlier_ids=earlier)}))
    audit.record(session, actor, "request.replied", target_kind="request", target_id=request.id)
    return message


def reply_as_customer(*, session: Session, intake: Intake, reference: str, body: str,
                      now: datetime) -> RequestMessage:
    request = get_by_reference(session=session, reference=reference)
    if request.status == "closed":
        request.status = "open"
        session.add(request)
    return _add_message(session, intake, request, "customer", body, now)


def emailed_by_customer(*, session: Session, intake: Intake, request_id: str, body: str,
                        author: str, inbound_id: str, message_id: str | None,
                        now: datetime) -> RequestMessage:
    """An email on a request's thread: from its requester (`customer`: reopens a closed
    request), from someone else (`other`) or automatic (`auto`): both kept, acting on
    nothing. The request's change time moves, so its ticket hears of it."""
    request = get_request(session=session, request_id=request_id)
    if author == "customer" and request.status == "closed":
        request.status = "open"
    request.changed_at = now
    session.add(request)
    message = _add_message(session, intake, request, author, body or "(no text)", now,
                           channel="email", inbound_id=inbound_id)
    if message_id:
        message.message_ref_encrypted = intake.crypto.cipher.encrypt(message_id[:998],
                                                                     context=MESSAGE_REF)
    return message


def _add_message(session: Session, intake: Intake, request: SupportRequest, author: str,
                 body: str, now: datetime, staff_id: str | None = None, channel: str = "web",
                 inbound_id: str | None = None) -> RequestMessage:
    body = body.strip()
    if not body:
        raise Invalid("Write a message first.")
    message = RequestMessage(request_id=request.id, author=author, staff_id=staff_id, at=now,
                             channel=channel, inbound_id=inbound_id,
                             body_encrypted=intake.crypto.cipher.encrypt(body,
                                                                         context=MESSAGE_BODY))
    session.add(message)
    return message

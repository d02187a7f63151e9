"""A request's emails as one thread: the outbox keys of its receipt, code emails and staff
replies, their Message-IDs (computed from the keys, as the drain makes them: no lookup), and
the headers that tie each new email to the ones before (Reply-To with the request's signed
token, In-Reply-To, References)."""

from __future__ import annotations

from sqlmodel import Session, col, select

from contacts.delivery import outbox
from contacts.intake.config import Intake
from contacts.intake.models import MESSAGE_REF, RequestMessage, SupportRequest

# A long conversation names its first email and its latest ones, not every one (RFC 5322
# 3.6.4 lets References be trimmed; mail clients thread on the first and the last).
REFERENCES_KEPT = 10


def receipt_key(reference: str) -> str:
    return f"request-received:{reference}"


def code_key(reference: str, number: int) -> str:
    """The key of the request's `number`th code email (the receipt carried the first)."""
    return f"request-code:{reference}:{number}"


def reply_key(message_id: int) -> str:
    return f"request-reply:{message_id}"


def thread_headers(intake: Intake, request_id: str, earlier_keys: list[str],
                   earlier_ids: list[str] | None = None) -> dict[str, str]:
    """Reply-To naming the request, and In-Reply-To/References naming its earlier emails
    (by their outbox keys, oldest first; or, `earlier_ids`, by their Message-IDs, which
    includes the customer's own emails)."""
    headers = {"Reply-To": intake.mail.reply_address("request", request_id)}
    named = earlier_ids if earlier_ids is not None else [
        outbox.message_id_for(key, intake.mail_domain) for key in earlier_keys]
    if named:
        kept = named[:1] + named[1:][-(REFERENCES_KEPT - 1):]
        headers |= {"In-Reply-To": kept[-1], "References": " ".join(kept)}
    return headers


def conversation_ids(session: Session, intake: Intake, request: SupportRequest) -> list[str]:
    """The Message-IDs of a request's conversation by email, oldest first: the receipt, then
    each staff reply Lifeline sent and each email the requester sent (sealed with it)."""
    named = [outbox.message_id_for(receipt_key(request.reference), intake.mail_domain)]
    for message_id, author, sealed in session.exec(
            select(RequestMessage.id, RequestMessage.author,
                   RequestMessage.message_ref_encrypted)
            .where(RequestMessage.request_id == request.id).order_by(col(RequestMessage.id))):
        if author == "staff":
            named.append(outbox.message_id_for(reply_key(message_id), intake.mail_domain))
        elif author == "customer" and sealed:
            named.append(intake.crypto.cipher.decrypt(sealed, context=MESSAGE_REF))
    return named


def staff_reply_ids(session: Session, request_id: str) -> list[int]:
    """The request's staff replies (their message rows' IDs), oldest first."""
    return list(session.exec(select(RequestMessage.id).where(
        RequestMessage.request_id == request_id, RequestMessage.author == "staff")
        .order_by(col(RequestMessage.id))))


def thread_keys(session: Session, request: SupportRequest) -> list[str]:
    """The outbox keys of every email Lifeline sent about a request: the receipt, the code
    emails asked for since, the staff replies. Keys of emails not sent yet are there too."""
    return ([receipt_key(request.reference)]
            + [code_key(request.reference, number) for number in range(2, request.codes_sent + 1)]
            + [reply_key(message_id) for message_id in staff_reply_ids(session, request.id)])


def thread_message_ids(*, session: Session, intake: Intake,
                       request: SupportRequest) -> set[str]:
    """The Message-IDs Lifeline made for a request's emails: an inbound message whose
    In-Reply-To or References names one of them belongs to this request."""
    return {outbox.message_id_for(key, intake.mail_domain)
            for key in thread_keys(session, request)}

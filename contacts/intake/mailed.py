"""Requests by email: a message to a support address that answers no thread becomes a
support request through the form's own path (the same sealed row, reference, matching job
and receipt with its code), with the channel `email`.

Two differences, both about what an email proves. A sender the receiving server vouches
for (DMARC, or aligned DKIM: `inbound.authentication`) has proved its address as a code
would: the request starts `email_verified`, and the matching job makes it `authorized` when
that address is a live contact of its account. And a sender gets at most one receipt an
hour, so two auto-responders cannot keep each other busy through us.

Nothing is spooled here: the email stays in its mailbox until this transaction commits, so
a database that is down loses nothing (the reader tries again at its next pass)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from contacts.core.crypto import normalize_email
from contacts.core.ids import new_id
from contacts.delivery import outbox
from contacts.intake import codes, threads
from contacts.intake.models import SupportRequest
from contacts.intake.references import new_reference
from contacts.intake.writer import Draft, RequestWriter

RECEIPT_EVERY = timedelta(hours=1)
MESSAGE_MAX = 20_000  # characters of the email kept as the request's message (all is sealed)


def receive_email(*, session: Session, writer: RequestWriter, email: str, name: str | None,
                  subject: str, body: str, locale: str, verified: bool, inbound_id: str,
                  now: datetime, receipt: bool = True) -> str:
    """Store a request from an email in the session's transaction; its reference. With
    `receipt` False (a From the receiving server found forged) nothing is sent."""
    message = (f"{subject.strip()}\n\n{body.strip()}" if subject.strip() else body.strip())
    draft = Draft(id=new_id("req"), reference=new_reference(), received_at=now,
                  locale=locale, severity="normal", email=email,
                  message=message[:MESSAGE_MAX] or "(no text)", name=name or None,
                  company=None, site=None, phone=None, code=codes.new_code())
    prepared = writer.prepare(draft=draft, now=now, by_email=True)
    row = {**prepared.request, "channel": "email", "inbound_id": inbound_id}
    if verified:
        row.update(verification="email_verified", verified_at=now, trust_rank=1)
    answer = prepared.email if receipt and not _receipt_sent_lately(session, writer, email,
                                                                     now) else None
    stored = writer.store(session=session, now=now,
                          prepared=[replace(prepared, request=row, email=answer)])
    return stored[0].draft.reference


def _receipt_sent_lately(session: Session, writer: RequestWriter, email: str,
                         now: datetime) -> bool:
    """Whether a receipt went to this address in the last hour: a request by email from it
    that had one queued (a request kept without one, its From found forged, does not
    count, or a forger could keep the real sender from hearing from us)."""
    digest = writer.intake.crypto.index.digest("email", normalize_email(email))
    references = list(session.exec(select(SupportRequest.reference).where(
        SupportRequest.email_index == digest, SupportRequest.channel == "email",
        col(SupportRequest.received_at) > now - RECEIPT_EVERY).limit(100)))
    return bool(references) and outbox.any_queued(
        session=session, keys=[threads.receipt_key(reference) for reference in references])

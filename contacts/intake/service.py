"""What the rest of Lifeline calls of the intake: the `Intake` and its `RequestWriter` (built
by create_app), the intake job's matching, the reply a ticket sends, and what other areas
read of requests: summaries with no personal data, changes since a point (the tickets'
sync), an account's exchanges (its timeline), a request's state (staff scripts, the API).

The rest of the intake, by job: writer.py (storing a request, or spooling it), codes.py
(codes and signed links), references.py, verification.py (proof of address), trust.py
(matching and trust), conversation.py, triage.py (the support queue, staff actions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_
from sqlmodel import Session, col, select

from contacts.core.crypto import normalize_email
from contacts.core.db import in_chunks
from contacts.intake.config import Intake
from contacts.intake.conversation import emailed_by_customer, reply_as_staff
from contacts.intake.mailed import receive_email
from contacts.intake.models import RequestCandidate, RequestMessage, SupportRequest
from contacts.intake.references import get_by_reference, get_request
from contacts.intake.spool import spool_health
from contacts.intake.threads import thread_message_ids
from contacts.intake.trust import process_pending
from contacts.intake.writer import RequestWriter

__all__ = [
    # defined elsewhere in the intake, published here
    "Intake", "RequestWriter", "emailed_by_customer", "process_pending", "receive_email",
    "reply_as_staff", "spool_health",
    # defined here
    "Exchange", "RequestParty", "RequestState", "RequestSummary", "address_index",
    "exchanges_of_account", "request_message_ids", "request_party", "request_state",
    "requests_by_address", "requests_by_id", "requests_changed_since",
]


@dataclass(frozen=True)
class RequestSummary:
    """What other domains read of a request: no personal data."""

    id: str
    reference: str
    account_id: str | None
    verification: str
    priority: int
    severity: str
    status: str
    contact_id: str | None
    received_at: datetime
    changed_at: datetime


def _summary(request: SupportRequest) -> RequestSummary:
    return RequestSummary(request.id, request.reference, request.account_id,
                          request.verification, request.priority, request.severity,
                          request.status, request.contact_id, request.received_at,
                          request.changed_at)


def requests_changed_since(*, session: Session, since: tuple[datetime, str] | None,
                           limit: int = 1000) -> list[RequestSummary]:
    """Matched (processed) requests changed after `since` (a change time and a request ID:
    the last one seen), in that order: a keyset, so equal times never repeat a page."""
    query = select(SupportRequest).where(col(SupportRequest.processed_at).is_not(None))
    if since is not None:
        at, request_id = since
        query = query.where(or_(col(SupportRequest.changed_at) > at,
                                (col(SupportRequest.changed_at) == at)
                                & (col(SupportRequest.id) > request_id)))
    query = query.order_by(SupportRequest.changed_at, SupportRequest.id).limit(limit)
    return [_summary(request) for request in session.exec(query)]


def requests_by_id(*, session: Session, ids: list[str]) -> dict[str, RequestSummary]:
    found: dict[str, RequestSummary] = {}
    for chunk in in_chunks(ids):
        for request in session.exec(select(SupportRequest)
                                    .where(col(SupportRequest.id).in_(chunk))):
            found[request.id] = _summary(request)
    return found


@dataclass(frozen=True)
class Exchange:
    """One message on a request, for an account's timeline (the body stays sealed)."""

    request_id: str
    reference: str
    kind: str  # received (the request itself), customer (wrote again), staff (a reply),
    # other (someone else wrote on its thread), auto (an automatic reply)
    at: datetime
    channel: str = "web"  # web, email


def exchanges_of_account(*, session: Session, account_id: str,
                         limit: int = 200) -> list[Exchange]:
    """Requests of the account and the replies both ways, newest first."""
    requests = list(session.exec(select(SupportRequest)
                                 .where(SupportRequest.account_id == account_id)
                                 .order_by(col(SupportRequest.received_at).desc())
                                 .limit(limit)))
    by_id = {request.id: request for request in requests}
    found = [Exchange(request.id, request.reference, "received", request.received_at,
                      request.channel)
             for request in requests]
    if by_id:
        found += [Exchange(message.request_id, by_id[message.request_id].reference,
                           message.author, message.at, message.channel)
                  for message in session.exec(
                      select(RequestMessage)
                      .where(col(RequestMessage.request_id).in_(list(by_id)))
                      .order_by(col(RequestMessage.at).desc()).limit(limit))]
    return sorted(found, key=lambda exchange: exchange.at, reverse=True)[:limit]


@dataclass(frozen=True)
class RequestState:
    """A request as staff scripts read it: its states, times and IDs, and the accounts
    matching proposed; nothing the requester typed."""

    request: SupportRequest
    candidates: list[RequestCandidate]


def request_state(*, session: Session, reference: str) -> RequestState:
    request = get_by_reference(session=session, reference=reference)
    candidates = list(session.exec(select(RequestCandidate)
                                   .where(RequestCandidate.request_id == request.id)
                                   .order_by(col(RequestCandidate.score).desc(),
                                             RequestCandidate.account_id)))
    return RequestState(request, candidates)


@dataclass(frozen=True)
class RequestParty:
    """Who a request's thread is with, as an inbound email is checked against it: IDs and
    the keyed digest of the requester's address, nothing in clear."""

    id: str
    reference: str
    account_id: str | None
    contact_id: str | None
    email_index: str
    locale: str


def request_party(*, session: Session, request_id: str | None = None,
                  reference: str | None = None) -> RequestParty | None:
    """A request's party by its ID or its reference; None when there is no such request."""
    if request_id is not None:
        request = session.get(SupportRequest, request_id)
    else:
        request = session.exec(select(SupportRequest)
                               .where(SupportRequest.reference == reference)).first()
    if request is None:
        return None
    return RequestParty(request.id, request.reference, request.account_id, request.contact_id,
                        request.email_index, request.locale)


def requests_by_address(*, session: Session, intake: Intake, address: str,
                        limit: int = 50) -> list[str]:
    """The references of the latest requests from an address (by its keyed digest)."""
    return list(session.exec(select(SupportRequest.reference)
                             .where(SupportRequest.email_index == address_index(intake, address))
                             .order_by(col(SupportRequest.received_at).desc()).limit(limit)))


def address_index(intake: Intake, address: str) -> str:
    """The keyed digest requests are found by, for an address in any spelling."""
    return intake.crypto.index.digest("email", normalize_email(address))


def request_message_ids(*, session: Session, intake: Intake, request_id: str) -> set[str]:
    """The Message-IDs of every email Lifeline sent about a request (receipt, codes, staff
    replies): an inbound message naming one in In-Reply-To or References answers it."""
    return thread_message_ids(session=session, intake=intake,
                              request=get_request(session=session, request_id=request_id))

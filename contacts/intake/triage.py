"""Staff triage: the support queue (proof of who is asking first, then priority, then
age), what a request's console page shows beside the conversation (the requester masked,
or revealed with an audited reason; the accounts matching proposed), and staff's actions
on a request: attach it to an account, record a call back, close or reopen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.errors import Conflict, Invalid
from contacts.intake import trust
from contacts.intake.config import Intake
from contacts.intake.conversation import RequestView
from contacts.intake.models import REQUEST_EMAIL, REQUEST_PHONE, RequestCandidate, SupportRequest
from contacts.intake.references import get_request
from contacts.vault import service as vault_service


@dataclass(frozen=True)
class QueueRow:
    request: SupportRequest
    masked_email: str
    account_name: str | None
    candidates: int


VIEWS = {
    "open": "Open requests",
    "unmatched": "Unmatched: no account yet",
    "unverified": "Unverified requesters",
    "closed": "Closed",
}


def support_queue(*, session: Session, intake: Intake, view: str = "open",
                  limit: int = 200) -> list[QueueRow]:
    """Requests in queue order: proof of who is asking first, then priority, then age."""
    query = select(SupportRequest)
    if view == "closed":
        query = query.where(SupportRequest.status == "closed")
    else:
        query = query.where(SupportRequest.status == "open")
    if view == "unmatched":
        query = query.where(col(SupportRequest.account_id).is_(None))
    elif view == "unverified":
        query = query.where(SupportRequest.verification == "unverified")
    requests = list(session.exec(query.order_by(SupportRequest.trust_rank,
                                                SupportRequest.priority,
                                                SupportRequest.received_at).limit(limit)))
    ids = [request.id for request in requests]
    counts = dict(session.exec(select(RequestCandidate.request_id, func.count())
                               .where(col(RequestCandidate.request_id).in_(ids))
                               .group_by(RequestCandidate.request_id)).all()) if ids else {}
    accounts = vault_service.accounts_by_id(
        session=session, ids={request.account_id for request in requests if request.account_id})
    cipher = intake.crypto.cipher
    return [QueueRow(request=request,
                     masked_email=vault_service.mask_email(
                         cipher.decrypt(request.email_encrypted, context=REQUEST_EMAIL)),
                     account_name=accounts[request.account_id].name
                     if request.account_id in accounts else None,
                     candidates=counts.get(request.id, 0))
            for request in requests]


@dataclass(frozen=True)
class Requester:
    """How the console shows who wrote: masked by default, in clear only once revealed."""

    email: str
    phone: str | None
    revealed: bool = False


def masked_requester(view: RequestView) -> Requester:
    phone = view.phone and view.phone[:3] + "*" * max(len(view.phone) - 5, 0) + view.phone[-2:]
    return Requester(email=vault_service.mask_email(view.email), phone=phone or None)


def reveal_requester(*, session: Session, intake: Intake, actor: Actor, request_id: str,
                     reason: str) -> Requester:
    """A staff member reads a requester's address and phone in clear: only with a reason,
    always audited (as the vault's contacts are)."""
    reason = reason.strip()
    if len(reason) < 5:
        raise Invalid("Say why you need to see the requester's address (at least 5 "
                      "characters).")
    request = get_request(session=session, request_id=request_id)
    audit.record(session, actor, "request.requester_revealed", target_kind="request",
                 target_id=request.id, reason=reason[:500])
    cipher = intake.crypto.cipher
    return Requester(
        email=cipher.decrypt(request.email_encrypted, context=REQUEST_EMAIL),
        phone=cipher.decrypt(request.phone_encrypted, context=REQUEST_PHONE)
        if request.phone_encrypted else None, revealed=True)


@dataclass(frozen=True)
class CandidateView:
    account_id: str
    account_name: str
    score: float
    reasons: str


def candidates_of(*, session: Session, request_id: str) -> list[CandidateView]:
    rows = list(session.exec(select(RequestCandidate)
                             .where(RequestCandidate.request_id == request_id)
                             .order_by(col(RequestCandidate.score).desc())))
    accounts = vault_service.accounts_by_id(session=session,
                                            ids={row.account_id for row in rows})
    return [CandidateView(row.account_id, accounts[row.account_id].name
                          if row.account_id in accounts else row.account_id,
                          row.score, row.reasons) for row in rows]


def attach(*, session: Session, intake: Intake, vault: vault_service.Vault, actor: Actor,
           request_id: str, account_id: str) -> SupportRequest:
    request = get_request(session=session, request_id=request_id)
    account = vault_service.get_account(session=session, account_id=account_id)
    request.account_id, request.account_source = account.id, "staff"
    if request.verification == "callback_confirmed":
        request.verification = "email_verified" if request.verified_at else "unverified"
        request.callback_by = request.callback_at = None
    trust.apply_trust(session, intake, vault, request)
    session.add(request)
    audit.record(session, actor, "request.attached", target_kind="request",
                 target_id=request.id, account_id=account.id)
    return request


def record_callback(*, session: Session, actor: Actor, request_id: str, contact_id: str,
                    now: datetime) -> SupportRequest:
    """Staff called a phone number on file for the account, and the person confirmed."""
    request = get_request(session=session, request_id=request_id)
    contact = vault_service.get_contact(session=session, contact_id=contact_id)
    if request.account_id is None:
        raise Conflict("Attach the request to an account before recording a call back.")
    if contact.account_id != request.account_id or contact.deleted_at is not None:
        raise Invalid("Call back a current contact of the request's account.")
    if not contact.phone_encrypted:
        raise Invalid("This contact has no phone number on file.")
    request.verification = "callback_confirmed"
    request.callback_by, request.callback_at = actor.id, now
    request.contact_id, request.contact_role = contact.id, contact.role
    trust.rank(request)
    session.add(request)
    audit.record(session, actor, "request.callback_confirmed", target_kind="request",
                 target_id=request.id, contact_id=contact.id)
    return request


def set_status(*, session: Session, actor: Actor, request_id: str,
               status: str) -> SupportRequest:
    if status not in ("open", "closed"):
        raise Invalid("status must be open or closed")
    request = get_request(session=session, request_id=request_id)
    if request.status != status:
        request.status = status
        session.add(request)
        audit.record(session, actor, f"request.{'closed' if status == 'closed' else 'reopened'}",
                     target_kind="request", target_id=request.id)
    return request

"""Matching a request to an account, and the trust that follows. Matching runs off the
request path (`process_pending`, the intake job; or when the address is proved) and only
proposes; a verified address that is a live contact of the account makes a request
authorized, and trust and severity give its place in the queue (`rank`)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from contacts.intake import matching
from contacts.intake.config import Intake
from contacts.intake.models import (
    REQUEST_COMPANY,
    REQUEST_EMAIL,
    REQUEST_PHONE,
    REQUEST_SITE,
    SEVERITY_PRIORITY,
    RequestCandidate,
    SupportRequest,
)
from contacts.vault import service as vault_service

TRUSTED = ("authorized", "callback_confirmed")


def process_pending(*, session: Session, intake: Intake, vault: vault_service.Vault,
                    now: datetime, limit: int = 200) -> int:
    """Match new requests to accounts (off the request path)."""
    pending = list(session.exec(select(SupportRequest)
                                .where(col(SupportRequest.processed_at).is_(None))
                                .order_by(SupportRequest.received_at).limit(limit)))
    for request in pending:
        match(session, intake, vault, request, now)
    return len(pending)


def match(session: Session, intake: Intake, vault: vault_service.Vault,
          request: SupportRequest, now: datetime) -> None:
    cipher = intake.crypto.cipher

    def opened(value: str | None, context: str) -> str | None:
        return cipher.decrypt(value, context=context) if value else None

    candidates = matching.propose(
        session=session, vault=vault,
        email=cipher.decrypt(request.email_encrypted, context=REQUEST_EMAIL),
        phone=opened(request.phone_encrypted, REQUEST_PHONE),
        site=opened(request.site_encrypted, REQUEST_SITE),
        company=opened(request.company_encrypted, REQUEST_COMPANY))
    for old in session.exec(select(RequestCandidate)
                            .where(RequestCandidate.request_id == request.id)):
        session.delete(old)
    for candidate in candidates:
        session.add(RequestCandidate(request_id=request.id, account_id=candidate.account_id,
                                     score=candidate.score,
                                     reasons="; ".join(candidate.reasons)[:1000]))
    top = candidates[0] if candidates else None
    runner_up = candidates[1].score if len(candidates) > 1 else 0.0
    if (request.account_source != "staff" and top is not None
            and top.score >= intake.propose_score and top.score > runner_up):
        request.account_id = top.account_id
        request.account_source = "match"
    request.processed_at = now
    apply_trust(session, intake, vault, request)
    session.add(request)


def apply_trust(session: Session, intake: Intake, vault: vault_service.Vault,
                request: SupportRequest) -> None:
    """A verified address that is a live contact of the request's account makes the request
    authorized; a claimed address alone never does."""
    request.contact_id = request.contact_role = None
    if request.verification in ("email_verified", "authorized") and request.account_id:
        email = intake.crypto.cipher.decrypt(request.email_encrypted, context=REQUEST_EMAIL)
        for contact in vault_service.find_contacts_by_email(session=session, vault=vault,
                                                            email=email):
            if contact.account_id == request.account_id:
                request.contact_id, request.contact_role = contact.id, contact.role
                break
        request.verification = "authorized" if request.contact_id else "email_verified"
    rank(request)


def rank(request: SupportRequest) -> None:
    priority = SEVERITY_PRIORITY[request.severity]
    if request.verification in TRUSTED:
        request.trust_rank = 0
        if request.contact_role == "site_admin":
            priority = max(1, priority - 1)
    else:
        request.trust_rank = 1 if request.verification == "email_verified" else 2
    request.priority = priority

"""Proof of address: the emailed code (`verify_code`), the one-click link
(`verify_by_link`), a new code (`resend_code`). Every refusal of a code has one text, and
each try, resend and link use is claimed by one conditional UPDATE before anything is
compared, so parallel guesses get `code_attempts` comparisons in all. A proved address
sends the request on to matching and trust (trust.py)."""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col

from contacts.core import audit, links
from contacts.core.audit import Actor
from contacts.core.errors import Invalid, NotFound
from contacts.core.mail import Renderer
from contacts.delivery import outbox
from contacts.intake import codes, threads, trust
from contacts.intake.config import Intake
from contacts.intake.models import REQUEST_EMAIL, SupportRequest
from contacts.intake.references import get_by_reference, normalize_reference
from contacts.intake.writer import code_email_row
from contacts.vault import service as vault_service


def code_refused(intake: Intake) -> str:
    """The one answer to every code that does not verify: wrong, expired, spent, a verified
    request's, an unknown reference's. The same words for all, so the page tells nobody
    whether a reference exists or how many tries it has left."""
    return (f"That code does not work. A code works once, for {intake.code_minutes} minutes "
            f"and {intake.code_attempts} tries; use the one in the latest email, or ask for "
            "a new code below.")


def verify_code(*, session: Session, intake: Intake, vault: vault_service.Vault,
                reference: str, code: str, now: datetime) -> SupportRequest:
    """Prove the address with the emailed code: checked every time, at most `code_attempts`
    tries, before it expires, once. A verified request's code is spent: any code entered for
    it is refused (and counts as a try), so knowing a reference opens nothing. Each try is
    claimed in the database before the code is compared (the right one counts too), so
    parallel guesses from many addresses get `code_attempts` comparisons in all."""
    given = "".join(ch for ch in code if ch.isdigit())
    try:
        request = get_by_reference(session=session, reference=reference)
    except NotFound:
        codes.code_digest(intake, "req_unknown", given)  # the same work as for a real one
        raise Invalid(code_refused(intake)) from None
    digest = codes.code_digest(intake, request.id, given)
    if not _claim(session, request, col(SupportRequest.code_attempts) < intake.code_attempts,
                  code_attempts=col(SupportRequest.code_attempts) + 1):
        raise Invalid(code_refused(intake))
    fresh = request.code_expires_at is not None and request.code_expires_at >= now
    if (request.verification != "unverified" or request.code_digest is None or not fresh
            or not hmac.compare_digest(digest, request.code_digest)):
        audit.record(session, Actor.system("intake"), "request.code_refused",
                     target_kind="request", target_id=request.id,
                     attempts_left=max(0, intake.code_attempts - request.code_attempts))
        raise Invalid(code_refused(intake))
    return _verified(session, intake, vault, request, now, how="code")


LINK_INVALID = "This link is not valid."
LINK_USED = ("This link was already used: the address of this request is confirmed. Follow "
             "your request with the link in the email we sent you.")
LINK_REPLACED = ("This link was replaced by a newer one. Use the link or the code in the "
                 "latest email.")


def verify_by_link(*, session: Session, intake: Intake, vault: vault_service.Vault,
                   reference: str, token: str, now: datetime) -> SupportRequest:
    """Prove the address with the emailed one-click link: signed, single use, expiring.
    Checked every time: a used link says so and opens nothing."""
    payload = links.unseal(intake.secret_key, codes.LINK_PURPOSE, token,
                           max_age=timedelta(minutes=intake.code_minutes),
                           expired="This link has expired. Ask for a new code on your "
                                   "request's page.", invalid=LINK_INVALID)
    if not isinstance(payload, dict) or payload.get("r") != normalize_reference(reference):
        raise Invalid(LINK_INVALID)
    try:
        request = get_by_reference(session=session, reference=reference)
    except NotFound:
        raise Invalid(LINK_INVALID) from None
    if request.verification != "unverified":
        raise Invalid(LINK_USED)
    if request.code_digest is None or not request.code_digest.startswith(
            payload.get("c") or "-"):
        raise Invalid(LINK_REPLACED)
    if not _claim(session, request, col(SupportRequest.verification) == "unverified",
                  col(SupportRequest.code_digest) == request.code_digest, code_digest=None):
        raise Invalid(LINK_USED)  # a click at the same moment verified it first
    return _verified(session, intake, vault, request, now, how="link")


def _claim(session: Session, request: SupportRequest, *still, **values) -> bool:
    """Change `request` in one UPDATE that holds only while the conditions `still` do, and
    reload it; whether it held. Two callers at once cannot both pass a check of the same
    value: the database takes them one after the other (a row lock on PostgreSQL, the write
    lock on SQLite)."""
    claimed = session.execute(
        update(SupportRequest).where(col(SupportRequest.id) == request.id, *still)
        .values(**values).execution_options(synchronize_session=False))
    if claimed.rowcount != 1:
        return False
    session.refresh(request)
    return True


def _verified(session: Session, intake: Intake, vault: vault_service.Vault,
              request: SupportRequest, now: datetime, how: str) -> SupportRequest:
    request.verification = "email_verified"
    request.verified_at = now
    request.code_digest = None  # single use
    audit.record(session, Actor.system("intake"), "request.verified", target_kind="request",
                 target_id=request.id, how=how)
    if request.processed_at is None:
        trust.match(session, intake, vault, request, now)
    else:
        trust.apply_trust(session, intake, vault, request)
    session.add(request)
    return request


def resend_code(*, session: Session, intake: Intake, reference: str, render: Renderer,
                now: datetime) -> None:
    """A new code (the old one and its link stop working). Silent when there is nothing to
    send, so the page cannot be used to probe references."""
    try:
        request = get_by_reference(session=session, reference=reference)
    except NotFound:
        return
    if not _claim(session, request, col(SupportRequest.verification) == "unverified",
                  col(SupportRequest.codes_sent) <= intake.code_resends,
                  codes_sent=col(SupportRequest.codes_sent) + 1, code_attempts=0):
        return
    code = codes.new_code()
    request.code_digest = codes.code_digest(intake, request.id, code)
    request.code_expires_at = now + timedelta(minutes=intake.code_minutes)
    session.add(request)
    email = intake.crypto.cipher.decrypt(request.email_encrypted, context=REQUEST_EMAIL)
    earlier = [threads.code_key(request.reference, number)
               for number in range(2, request.codes_sent)]
    outbox.enqueue_rows(session=session, rows=[code_email_row(
        intake, request_id=request.id, reference=request.reference,
        code_digest=request.code_digest, locale=request.locale, severity=request.severity,
        email=email, code=code, render=render, now=now, kind="request_code",
        key=threads.code_key(request.reference, request.codes_sent),
        earlier_keys=[threads.receipt_key(request.reference), *earlier])])
    audit.record(session, Actor.system("intake"), "request.code_resent",
                 target_kind="request", target_id=request.id)

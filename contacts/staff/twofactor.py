"""The second factor of a staff sign-in: TOTP (RFC 6238) and single-use recovery codes.

The TOTP secret is sealed with the field cipher; a code is accepted for its own 30-second
step or the one before or after (clock drift), and never for a step at or before the last
one accepted, so a code cannot be replayed. Recovery codes are kept as keyed digests.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno
from sqlalchemy import delete, or_, update
from sqlmodel import Session, col, func, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.crypto import Crypto, DecryptionFailed
from contacts.core.db import get_or_404, utcnow
from contacts.core.errors import Conflict, Invalid
from contacts.staff.models import STAFF_EMAIL, STAFF_TOTP_SECRET, RecoveryCode, StaffUser

DRIFT_STEPS = 1  # codes of the step before and after the current one are accepted too
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
RECOVERY_LENGTH = 10  # about 49 bits each
TOTP_CODE = re.compile(r"^[0-9]{6}$")  # ASCII digits: compare_digest refuses other text


@dataclass(frozen=True)
class Enrolment:
    """A secret offered to one enrolment attempt: sealed, for the sign-in in progress to
    keep (it is stored on the account only once a code confirms it), and for the page as
    text and as a QR code (inline SVG)."""

    sealed: str
    secret: str
    uri: str
    qr_svg: str


def is_required(role: str, required_roles: list[str]) -> bool:
    return role in required_roles


def _get(session: Session, staff_id: str) -> StaffUser:
    return get_or_404(session, StaffUser, staff_id, "stf", "no staff account with this ID")


def _offer_context(staff_id: str) -> str:
    """The associated data of an offered secret: it opens for this account only."""
    return f"staff.totp_enrolment\x00{staff_id}"


def _offer(crypto: Crypto, user: StaffUser, secret: str, sealed: str,
           issuer: str) -> Enrolment:
    email = crypto.cipher.decrypt(user.email_encrypted, context=STAFF_EMAIL)
    uri = pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)
    qr = segno.make(uri, error="m").svg_inline(scale=4, border=4, light="#fff",
                                               title="QR code of the two-factor secret")
    return Enrolment(sealed=sealed, secret=secret, uri=uri, qr_svg=qr)


def _open_offer(crypto: Crypto, staff_id: str, sealed: str | None) -> str:
    try:
        return crypto.cipher.decrypt(sealed or "", context=_offer_context(staff_id))
    except DecryptionFailed:
        raise Invalid("The enrolment expired: scan the new code below.") from None


def _unenrolled(session: Session, staff_id: str) -> StaffUser:
    user = _get(session, staff_id)
    if user.has_totp:
        raise Conflict("two-factor sign-in is already set up for this account")
    return user


def begin_enrolment(*, session: Session, crypto: Crypto, actor: Actor, staff_id: str,
                    issuer: str) -> Enrolment:
    """A fresh secret for this enrolment attempt, never shown again once another attempt
    begins. Nothing is stored on the account until `confirm_enrolment`: the caller keeps
    `sealed` with the sign-in in progress (it opens with the field cipher only)."""
    user = _unenrolled(session, staff_id)
    if user.totp_secret_encrypted is not None:  # stored unconfirmed by an older version
        user.totp_secret_encrypted = None
        session.add(user)
    secret = pyotp.random_base32()
    sealed = crypto.cipher.encrypt(secret, context=_offer_context(user.id))
    audit.record(session, actor, "staff.2fa_enrolment_started", target_kind="staff",
                 target_id=user.id)
    return _offer(crypto, user, secret, sealed, issuer)


def offered_enrolment(*, session: Session, crypto: Crypto, staff_id: str, sealed: str | None,
                      issuer: str) -> Enrolment:
    """The secret this attempt was offered, shown again after a wrong code; Invalid when
    `sealed` is missing or not this account's."""
    user = _unenrolled(session, staff_id)
    return _offer(crypto, user, _open_offer(crypto, user.id, sealed), sealed or "", issuer)


def confirm_enrolment(*, session: Session, crypto: Crypto, actor: Actor, staff_id: str,
                      sealed: str | None, code: str, recovery_codes: int,
                      now: datetime | None = None) -> list[str]:
    """Store the offered secret and switch TOTP on once a first code of it matches; returns
    the recovery codes, shown once."""
    user = _unenrolled(session, staff_id)
    secret = _open_offer(crypto, user.id, sealed)
    now = now or utcnow()
    matching = _matching_steps(secret, code, now)
    if not matching:
        raise Invalid("That code does not match. Check the time on your phone and try the "
                      "current code.")
    # One conditional UPDATE: of two attempts confirming at once, only one enrols.
    enrolled = session.execute(
        update(StaffUser).where(col(StaffUser.id) == user.id,
                                col(StaffUser.totp_enrolled_at).is_(None))
        .values(totp_secret_encrypted=crypto.cipher.encrypt(secret, context=STAFF_TOTP_SECRET),
                totp_enrolled_at=now, totp_last_step=matching[0])
        .execution_options(synchronize_session=False))
    session.refresh(user)
    if enrolled.rowcount != 1:
        raise Conflict("two-factor sign-in is already set up for this account")
    codes = _replace_recovery_codes(session, crypto, user, recovery_codes, now)
    audit.record(session, actor, "staff.2fa_enrolled", target_kind="staff", target_id=user.id,
                 recovery_codes=len(codes))
    return codes


def check_second_factor(*, session: Session, crypto: Crypto, staff_id: str, code: str,
                        ip: str | None, now: datetime | None = None) -> str | None:
    """Check a TOTP code or a recovery code; returns which one passed ("totp" or
    "recovery_code"), or None after auditing the failure."""
    user = _get(session, staff_id)
    now = now or utcnow()
    typed = re.sub(r"[\s-]", "", code).lower()
    if TOTP_CODE.match(typed):
        outcome = _accept_totp(session, crypto, user, typed, now) if user.has_totp else "wrong"
        passed = "totp" if outcome == "ok" else None
        reason = "replayed_code" if outcome == "replayed" else "wrong_code"
    else:
        passed = "recovery_code" if _use_recovery_code(session, crypto, user, typed, now) \
            else None
        reason = "wrong_recovery_code"
    if passed is None:
        audit.record(session, Actor("anonymous", None, ip), "staff.login_failed",
                     target_kind="staff", target_id=user.id, reason=reason)
    return passed


def _accept_totp(session: Session, crypto: Crypto, user: StaffUser, code: str,
                 now: datetime) -> str:
    """"ok" once per step, "replayed" for a step already used, else "wrong"."""
    secret = crypto.cipher.decrypt(user.totp_secret_encrypted, context=STAFF_TOTP_SECRET)
    matching = _matching_steps(secret, code, now)
    if not matching:
        return "wrong"
    # One conditional UPDATE: of two requests with the same code, only one moves the step.
    moved = session.execute(
        update(StaffUser).where(col(StaffUser.id) == user.id,
                                or_(col(StaffUser.totp_last_step).is_(None),
                                    col(StaffUser.totp_last_step) < matching[0]))
        .values(totp_last_step=matching[0]).execution_options(synchronize_session=False))
    session.refresh(user, ["totp_last_step"])
    return "ok" if moved.rowcount == 1 else "replayed"


def _matching_steps(secret: str, code: str, now: datetime) -> list[int]:
    """The steps in the accepted window whose code this is (none for anything but 6 ASCII
    digits, spaces and dashes aside)."""
    typed = re.sub(r"[\s-]", "", code)
    if not TOTP_CODE.match(typed):
        return []
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    return [step for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1)
            if secrets.compare_digest(totp.generate_otp(step), typed)]


def _recovery_digest(crypto: Crypto, user_id: str, typed: str) -> str:
    return crypto.index.digest("staff.recovery_code", f"{user_id}\x00{typed}")


def _use_recovery_code(session: Session, crypto: Crypto, user: StaffUser, typed: str,
                       now: datetime) -> bool:
    if not typed or len(typed) > 64:
        return False
    used = session.execute(
        update(RecoveryCode).where(col(RecoveryCode.code_digest) == _recovery_digest(
            crypto, user.id, typed), col(RecoveryCode.staff_id) == user.id,
            col(RecoveryCode.used_at).is_(None))
        .values(used_at=now).execution_options(synchronize_session=False))
    return used.rowcount == 1


def _new_recovery_code() -> str:
    letters = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
    return f"{letters[:5]}-{letters[5:]}"


def _replace_recovery_codes(session: Session, crypto: Crypto, user: StaffUser, count: int,
                            now: datetime) -> list[str]:
    session.execute(delete(RecoveryCode).where(col(RecoveryCode.staff_id) == user.id))
    codes = [_new_recovery_code() for _ in range(count)]
    session.add_all(RecoveryCode(code_digest=_recovery_digest(crypto, user.id,
                                                              code.replace("-", "")),
                                 staff_id=user.id, created_at=now) for code in codes)
    session.flush()
    return codes


def new_recovery_codes(*, session: Session, crypto: Crypto, actor: Actor, staff_id: str,
                       count: int) -> list[str]:
    """New recovery codes for an enrolled account; the old ones stop working."""
    user = _get(session, staff_id)
    if not user.has_totp:
        raise Conflict("set up two-factor sign-in first")
    codes = _replace_recovery_codes(session, crypto, user, count, utcnow())
    audit.record(session, actor, "staff.2fa_recovery_codes_replaced", target_kind="staff",
                 target_id=user.id, recovery_codes=len(codes))
    return codes


def recovery_codes_left(*, session: Session, staff_id: str) -> int:
    query = select(func.count()).select_from(RecoveryCode).where(
        col(RecoveryCode.staff_id) == staff_id, col(RecoveryCode.used_at).is_(None))
    return session.exec(query).one()


def reset(*, session: Session, actor: Actor, staff_id: str) -> None:
    """Forget the account's second factor and end its sessions: its next sign-in enrols
    again (an admin's way back in after a lost phone and lost recovery codes)."""
    user = _get(session, staff_id)
    session.execute(delete(RecoveryCode).where(col(RecoveryCode.staff_id) == user.id))
    had = user.has_totp
    user.totp_secret_encrypted = None
    user.totp_enrolled_at = None
    user.totp_last_step = None
    user.session_version += 1
    session.add(user)
    audit.record(session, actor, "staff.2fa_reset", target_kind="staff", target_id=user.id,
                 was_enrolled=had)

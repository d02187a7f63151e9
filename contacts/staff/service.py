"""Staff accounts, sign-in and API tokens. Called alike by the console, the API and the CLI."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, col, func, select

from contacts.core import audit
from contacts.core.access import ROLES, SCOPES, TokenIdentity
from contacts.core.audit import Actor
from contacts.core.crypto import Crypto
from contacts.core.db import get_or_404, utcnow
from contacts.core.errors import Conflict, Invalid
from contacts.core.ids import new_id
from contacts.staff.models import STAFF_EMAIL, ApiToken, StaffUser

TOKEN_PREFIX = "llt_"  # noqa: S105 (a prefix, not a secret)
# Argon2id at RFC 9106's second recommended setting (3 passes, 64 MiB, 4 lanes), written
# down so that a library upgrade cannot change it silently.
PASSWORD_HASHING = {"time_cost": 3, "memory_cost": 65536, "parallelism": 4}
hasher = PasswordHasher(**PASSWORD_HASHING)
# Verified against when the email is unknown, so both answers take the same time.
_UNKNOWN_USER_HASH = hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class StaffView:
    """What leaves the service about a staff member: decrypted email, no hash."""

    id: str
    email: str
    role: str
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None
    two_factor: bool = False


def _view(user: StaffUser, crypto: Crypto) -> StaffView:
    return StaffView(
        two_factor=user.has_totp,
        id=user.id,
        email=crypto.cipher.decrypt(user.email_encrypted, context=STAFF_EMAIL),
        role=user.role,
        is_active=user.is_active,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
    )


def _checked_email(email: str) -> str:
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise Invalid(f"not a valid email address: {exc}") from None


def _checked_role(role: str) -> str:
    if role not in ROLES:
        raise Invalid(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    return role


def check_password_strength(password: str, min_length: int) -> None:
    if len(password) < min_length:
        raise Invalid(f"the password must be at least {min_length} characters long")
    if len(password) > 1024:
        raise Invalid("the password is longer than 1024 characters")


def create_staff(*, session: Session, crypto: Crypto, actor: Actor, email: str, role: str,
                 password: str, min_password_length: int) -> StaffView:
    email = _checked_email(email)
    role = _checked_role(role)
    check_password_strength(password, min_password_length)
    email_index = crypto.index.email(email)
    exists = session.exec(select(StaffUser.id).where(StaffUser.email_index == email_index)).first()
    if exists:
        raise Conflict("a staff account with this email already exists")
    user = StaffUser(
        id=new_id("stf"),
        email_encrypted=crypto.cipher.encrypt(email, context=STAFF_EMAIL),
        email_index=email_index,
        role=role,
        password_hash=hasher.hash(password),
        created_at=utcnow(),
    )
    session.add(user)
    audit.record(session, actor, "staff.created", target_kind="staff", target_id=user.id,
                 role=role)
    session.flush()
    return _view(user, crypto)


def bootstrap_admin(*, session: Session, crypto: Crypto, email: str, password: str,
                    min_password_length: int) -> StaffView | None:
    """Create the first admin from the environment, only while no admin exists."""
    has_admin = session.exec(select(StaffUser.id).where(StaffUser.role == "admin")).first()
    if has_admin:
        return None
    return create_staff(session=session, crypto=crypto, actor=Actor.system("bootstrap"),
                        email=email, role="admin", password=password,
                        min_password_length=min_password_length)


def email_digest(crypto: Crypto, email: str) -> str:
    """A short keyed digest of a typed email: groups attempts without storing the address."""
    try:
        return crypto.index.email(email)[:16]
    except Invalid:
        return "malformed"


def sign_in_key(user: StaffUser) -> str:
    """The account's `email_digest`, from its stored index."""
    return user.email_index[:16]


def check_password(*, session: Session, crypto: Crypto, email: str, password: str,
                   ip: str | None) -> StaffUser | None:
    """The first step of a sign-in: the account whose password this is, or None (audited).
    The sign-in itself is recorded by `record_sign_in`, after any second factor."""
    try:
        email_index = crypto.index.email(email)
    except Invalid:
        email_index = None
    user = None
    if email_index:
        user = session.exec(select(StaffUser).where(StaffUser.email_index == email_index)).first()
    try:
        hasher.verify(user.password_hash if user else _UNKNOWN_USER_HASH, password)
        password_ok = user is not None
    except (VerificationError, InvalidHashError):
        password_ok = False
    if not password_ok or not user.is_active:
        reason = "unknown_email" if user is None else (
            "inactive" if password_ok else "wrong_password")
        audit.record(session, Actor("anonymous", None, ip), "staff.login_failed",
                     target_kind="staff" if user else None, target_id=user.id if user else None,
                     reason=reason, email_digest=email_digest(crypto, email))
        return None
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
        session.add(user)
    return user


def record_sign_in(*, session: Session, user: StaffUser, ip: str | None,
                   second_factor: str | None) -> None:
    user.last_login_at = utcnow()
    session.add(user)
    audit.record(session, Actor("staff", user.id, ip), "staff.login", target_kind="staff",
                 target_id=user.id, second_factor=second_factor)


def record_logout(*, session: Session, actor: Actor) -> None:
    """End the sign-in on the server: the session version moves on, so the cookie (and a
    copy of it) stops working. Every session of this account ends with it."""
    user = session.get(StaffUser, actor.id)
    if user is not None:
        user.session_version += 1
        session.add(user)
    audit.record(session, actor, "staff.logout", target_kind="staff", target_id=actor.id)


def session_identity(user: StaffUser) -> str:
    return f"{user.id}.{user.session_version}"


def load_signed_in(session: Session, identity: str) -> StaffUser | None:
    user_id, _, version = identity.partition(".")
    user = session.get(StaffUser, user_id)
    if user is None or not user.is_active or str(user.session_version) != version:
        return None
    return user


def signed_in_user(*, session: Session, staff_id: str) -> StaffUser:
    return _get_staff(session, staff_id)


def list_staff(*, session: Session, crypto: Crypto) -> list[StaffView]:
    users = session.exec(select(StaffUser).order_by(col(StaffUser.created_at))).all()
    return [_view(user, crypto) for user in users]


def staff_by_id(*, session: Session, crypto: Crypto, ids: Iterable[str]) -> dict[str, StaffView]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    users = session.exec(select(StaffUser).where(col(StaffUser.id).in_(wanted))).all()
    return {user.id: _view(user, crypto) for user in users}


def get_staff(*, session: Session, crypto: Crypto, staff_id: str) -> StaffView:
    return _view(_get_staff(session, staff_id), crypto)


def _get_staff(session: Session, staff_id: str) -> StaffUser:
    return get_or_404(session, StaffUser, staff_id, "stf", "no staff account with this ID")


def set_active(*, session: Session, actor: Actor, staff_id: str, active: bool) -> None:
    user = _get_staff(session, staff_id)
    if not active and user.id == actor.id:
        raise Conflict("you cannot deactivate your own account")
    if not active and user.role == "admin" and _active_admins(session) <= 1:
        raise Conflict("this is the last active admin; make another admin first")
    if user.is_active == active:
        return
    user.is_active = active
    user.session_version += 1
    session.add(user)
    audit.record(session, actor, "staff.activated" if active else "staff.deactivated",
                 target_kind="staff", target_id=user.id)


def set_role(*, session: Session, actor: Actor, staff_id: str, role: str) -> None:
    user = _get_staff(session, staff_id)
    role = _checked_role(role)
    if user.role == role:
        return
    if user.role == "admin" and user.is_active and _active_admins(session) <= 1:
        raise Conflict("this is the last active admin; make another admin first")
    audit.record(session, actor, "staff.role_changed", target_kind="staff", target_id=user.id,
                 old=user.role, new=role)
    user.role = role
    session.add(user)


def _active_admins(session: Session) -> int:
    query = select(func.count()).select_from(StaffUser).where(
        StaffUser.role == "admin", col(StaffUser.is_active).is_(True))
    return session.exec(query).one()


# -- API tokens ---------------------------------------------------------------------------


def _secret_hash(secret: str) -> str:
    # Token secrets are 256 random bits: a plain SHA-256 is safe and keeps lookup one query.
    return hashlib.sha256(secret.encode()).hexdigest()


def _checked_scopes(scopes: list[str]) -> list[str]:
    cleaned = sorted({scope.strip() for scope in scopes if scope.strip()})
    if not cleaned:
        raise Invalid(f"give at least one scope: {', '.join(SCOPES)}")
    unknown = [scope for scope in cleaned if scope not in SCOPES]
    if unknown:
        raise Invalid(f"unknown scope {unknown[0]!r}: choose from {', '.join(SCOPES)}")
    return cleaned


def create_token(*, session: Session, actor: Actor, name: str, scopes: list[str],
                 expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """Return the token row and its secret; the secret is not kept and cannot be shown again."""
    name = name.strip()
    if not name or len(name) > 100:
        raise Invalid("a token needs a name of 1 to 100 characters")
    if expires_at is not None and expires_at <= utcnow():
        raise Invalid("the expiry must be in the future")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        id=new_id("tok"),
        name=name,
        prefix=secret[: len(TOKEN_PREFIX) + 6],
        secret_hash=_secret_hash(secret),
        scopes=" ".join(_checked_scopes(scopes)),
        created_by=actor.id or actor.kind,
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(token)
    audit.record(session, actor, "token.created", target_kind="token", target_id=token.id,
                 scopes=token.scope_list)
    session.flush()
    return token, secret


def authenticate_token(*, session: Session, secret: str, ip: str | None,
                       endpoint: str) -> TokenIdentity | None:
    token = session.exec(
        select(ApiToken).where(ApiToken.secret_hash == _secret_hash(secret))).first()
    now = utcnow()
    if token is None or not token.is_usable(now):
        if token is not None:
            audit.record(session, Actor("token", token.id, ip), "token.refused",
                         target_kind="token", target_id=token.id, endpoint=endpoint)
        return None
    token.last_used_at = now
    session.add(token)
    audit.record(session, Actor("token", token.id, ip), "token.used", target_kind="token",
                 target_id=token.id, endpoint=endpoint)
    return TokenIdentity(token_id=token.id, scopes=frozenset(token.scope_list))


def list_tokens(*, session: Session) -> list[ApiToken]:
    return list(session.exec(select(ApiToken).order_by(col(ApiToken.created_at).desc())))


def get_token(*, session: Session, token_id: str) -> ApiToken:
    return get_or_404(session, ApiToken, token_id, "tok", "no API token with this ID")


def revoke_token(*, session: Session, actor: Actor, token_id: str) -> ApiToken:
    token = get_token(session=session, token_id=token_id)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.add(token)
        audit.record(session, actor, "token.revoked", target_kind="token", target_id=token.id)
    return token

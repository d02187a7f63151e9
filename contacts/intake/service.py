"""Support requests from people with no login: receive (or spool), prove the address, match to
an account, triage, reply.

The request path does the same work whoever is asking: it never reads the vault, so neither
its answer nor its timing says whether an address is a known contact. Matching runs later,
in a job (`process_pending`), and only proposes; proof of address decides trust.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.crypto import Crypto, normalize_email
from contacts.core.db import bulk_insert, get_or_404, in_chunks, session_scope, utcnow
from contacts.core.errors import Conflict, Invalid, NotFound
from contacts.core.ids import new_id
from contacts.core.mail import SUPPORT_LIST_ID
from contacts.delivery import outbox
from contacts.intake import matching
from contacts.intake.models import (
    MESSAGE_BODY,
    REQUEST_COMPANY,
    REQUEST_EMAIL,
    REQUEST_MESSAGE,
    REQUEST_NAME,
    REQUEST_PHONE,
    REQUEST_SITE,
    SEVERITIES,
    RequestCandidate,
    RequestMessage,
    SupportRequest,
)
from contacts.intake.schemas import RequestIn
from contacts.intake.spool import Spool
from contacts.vault import service as vault_service

log = logging.getLogger(__name__)

REFERENCE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, no 1/I
SEVERITY_PRIORITY = {"critical": 1, "high": 2, "normal": 3, "low": 4}
TRUSTED = ("authorized", "callback_confirmed")

# render(kind, locale, values) -> (subject, text, html): templates/messages/<kind>/
Renderer = Callable[[str, str, dict], tuple[str, str, str]]


@dataclass(frozen=True)
class Intake:
    crypto: Crypto
    secret_key: str
    base_url: str
    code_minutes: int
    code_attempts: int
    code_resends: int
    propose_score: float
    spool: Spool

    @classmethod
    def from_settings(cls, settings, crypto: Crypto) -> Intake:
        return cls(crypto=crypto, secret_key=settings.secrets.secret_key,
                   base_url=settings.app_base_url.rstrip("/"),
                   code_minutes=settings.intake_code_minutes,
                   code_attempts=settings.intake_code_attempts,
                   code_resends=settings.intake_code_resends,
                   propose_score=settings.intake_propose_score,
                   spool=Spool(Path(settings.intake_spool_dir), crypto.cipher))


@dataclass(frozen=True)
class Draft:
    """A request as received, in memory only (and, sealed, in the spool)."""

    id: str
    reference: str
    received_at: datetime
    locale: str
    severity: str
    email: str
    message: str
    name: str | None
    company: str | None
    site: str | None
    phone: str | None
    code: str

    def as_record(self) -> dict:
        return {**asdict(self), "received_at": self.received_at.isoformat()}

    @classmethod
    def from_record(cls, record: dict) -> Draft:
        return cls(**{**record, "received_at": datetime.fromisoformat(record["received_at"])})


def new_reference() -> str:
    """40 random bits as 8 characters of the 32-letter alphabet, from one read of the
    system's random source (eight `secrets.choice` calls were eight reads on the hot path)."""
    value = int.from_bytes(secrets.token_bytes(5))
    letters = "".join([REFERENCE_ALPHABET[(value >> shift) & 31] for shift in range(35, -5, -5)])
    return f"LL-{letters[:4]}-{letters[4:]}"


def normalize_reference(text: str) -> str | None:
    """'ll 7kq2 9xhd' -> 'LL-7KQ2-9XHD'; None when it cannot be a reference."""
    letters = "".join(ch for ch in text.upper() if ch.isalnum()).removeprefix("LL")
    letters = letters.replace("O", "0").replace("I", "1")
    if len(letters) != 8 or any(ch not in REFERENCE_ALPHABET for ch in letters):
        return None
    return f"LL-{letters[:4]}-{letters[4:]}"


def _new_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def draft_request(given: RequestIn, *, locale: str, now: datetime) -> Draft:
    return Draft(id=new_id("req"), reference=new_reference(), received_at=now, locale=locale,
                 severity=given.severity, email=given.email, message=given.message,
                 name=given.name, company=given.company, site=given.site, phone=given.phone,
                 code=_new_code())


# -- receiving: the database, or the spool -------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A request's rows, sealed and rendered, ready for one bulk insert with others."""

    draft: Draft
    request: dict
    email: dict


def prepare(*, intake: Intake, draft: Draft, render: Renderer, now: datetime) -> Prepared:
    """Encrypt and render a request (CPU only), in the caller's thread, so the one writer
    thread only inserts."""
    request = _request_row(intake, draft, now)
    email = _code_email_row(
        intake, reference=draft.reference, code_digest=request["code_digest"],
        locale=draft.locale, severity=draft.severity, email=draft.email, code=draft.code,
        render=render, now=now, kind="request_received",
        key=f"request-received:{draft.reference}")
    return Prepared(draft, request, email)


def receive(*, engine: Engine, intake: Intake, prepared: list[Prepared], render: Renderer,
            now: datetime) -> list[Prepared] | None:
    """Store new requests and queue their verification emails, in one transaction, and
    return them as stored (a reference may have changed, see `store`); when the database
    cannot be written, keep them in the spool instead and return None. Either way the
    requests are safe when this returns."""
    try:
        with session_scope(engine) as session:
            return store(session=session, intake=intake, prepared=prepared, render=render,
                         now=now)
    except SQLAlchemyError as exc:
        log.warning("%d requests could not be stored (%s); kept in the spool", len(prepared),
                    type(exc).__name__)
        for item in prepared:
            intake.spool.put(item.draft.reference, item.draft.as_record())
        return None


def store(*, session: Session, intake: Intake, prepared: list[Prepared], render: Renderer,
          now: datetime) -> list[Prepared]:
    """Write requests and queue their emails, each kind of row in one insert; returns what
    was written. A request already stored under its reference (a spool replay that had
    stored it before stopping) is skipped. A new request whose reference another request
    already holds (40 random bits: it will happen one day) gets a new reference before it
    is written, so the customer is never told a reference that is someone else's."""
    written, pending = [], list(prepared)
    while pending:
        held = dict(session.exec(
            select(SupportRequest.reference, SupportRequest.id).where(
                col(SupportRequest.reference).in_([item.draft.reference for item in pending]))
        ).all())
        renamed = []
        for item in pending:
            owner = held.get(item.draft.reference)
            if owner is None:
                written.append(item)
            elif owner != item.draft.id:
                renamed.append(prepare(intake=intake, render=render, now=now,
                                       draft=replace(item.draft, reference=new_reference())))
        pending = renamed
    if written:
        bulk_insert(session.connection(), SupportRequest.__table__,
                    [item.request for item in written])
        outbox.enqueue_rows(session=session, rows=[item.email for item in written])
    return written


def _request_row(intake: Intake, draft: Draft, now: datetime) -> dict:
    cipher, index = intake.crypto.cipher, intake.crypto.index
    email = normalize_email(draft.email)

    def sealed(value: str | None, context: str) -> str | None:
        return cipher.encrypt(value, context=context) if value else None

    return {
        "id": draft.id, "reference": draft.reference, "received_at": draft.received_at,
        "stored_at": now, "locale": draft.locale, "severity": draft.severity,
        "email_encrypted": cipher.encrypt(draft.email, context=REQUEST_EMAIL),
        "email_index": index.digest("email", email),
        "domain_index": index.digest("domain", email.rpartition("@")[2]),
        "phone_encrypted": sealed(draft.phone, REQUEST_PHONE),
        "name_encrypted": sealed(draft.name, REQUEST_NAME),
        "company_encrypted": sealed(draft.company, REQUEST_COMPANY),
        "site_encrypted": sealed(draft.site, REQUEST_SITE),
        "message_encrypted": cipher.encrypt(draft.message, context=REQUEST_MESSAGE),
        "status": "open", "verification": "unverified", "trust_rank": 2,
        "priority": SEVERITY_PRIORITY[draft.severity], "verified_at": None,
        "code_digest": _code_digest(intake, draft.id, draft.code),
        "code_expires_at": now + timedelta(minutes=intake.code_minutes),
        "code_attempts": 0, "codes_sent": 1, "account_id": None, "account_source": None,
        "contact_id": None, "contact_role": None, "processed_at": None, "callback_by": None,
        "callback_at": None, "changed_at": now}


class RequestWriter:
    """Group commit for the request path: requests arriving together (many threads of one
    process) are written by one thread in one transaction, and each caller returns once its
    request is stored, or spooled. Under a flood this is what keeps the cost per request
    bounded: one commit for many requests, not one each.

    The same thread replays the spool of the process that owns it (any process serving
    requests; never a CLI run): when it starts, after the next successful write, and every
    `retry_seconds` while files wait, so a web-only machine needs neither a restart nor the
    scheduler to store what it spooled."""

    MAX_BATCH = 256

    def __init__(self, *, engine: Engine, intake: Intake, render: Renderer,
                 retry_seconds: float = 5.0):
        self.engine = engine
        self.intake = intake
        self.render = render
        self.retry_seconds = retry_seconds
        self._waiting: queue.SimpleQueue[_Ticket] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._spool_waiting = False  # files wait: retry every retry_seconds
        self._backlog = False  # files not yet tried wait: go on at once, between requests

    def write(self, draft: Draft) -> str | None:
        """The reference the request was stored under, or None when it was spooled."""
        ticket = _Ticket(prepare(intake=self.intake, draft=draft, render=self.render,
                                 now=draft.received_at))
        self.start()
        self._waiting.put(ticket)
        if not ticket.done.wait(timeout=60):  # the writer is stuck: the spool never is
            self.intake.spool.put(draft.reference, draft.as_record())
            self._spool_waiting = True
            return None
        if ticket.error is not None:
            raise ticket.error
        return ticket.reference

    def start(self) -> None:
        """Start the writer thread in this process, if it is not running (cheap when it is)."""
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:  # also after a fork: threads do not survive one
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._waiting = queue.SimpleQueue()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="request-writer",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        self._replay()  # what this machine spooled before this process started
        while True:
            wait = 0 if self._backlog else self.retry_seconds if self._spool_waiting else None
            try:
                first = self._waiting.get(timeout=wait)
            except queue.Empty:
                self._replay()
                continue
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            if self._write(batch):
                self._spool_waiting = True
            elif self._spool_waiting:
                self._replay()  # the database takes writes again

    def _replay(self) -> None:
        """One round of at most MAX_BATCH files, so requests arriving meanwhile wait for one
        round only, never for a whole backlog."""
        stored = 0
        try:
            stored = replay_spool(engine=self.engine, intake=self.intake, render=self.render,
                                  now=utcnow(), limit=self.MAX_BATCH)
        except Exception as exc:  # noqa: BLE001 - still down: the files wait for the next try
            log.info("spooled requests not stored yet (%s)", type(exc).__name__)
        waiting = len(self.intake.spool.pending())
        self._spool_waiting = waiting > 0
        self._backlog = stored > 0 and waiting > len(self.intake.spool.unreadable())

    def _write(self, batch: list[_Ticket]) -> bool:
        """Write a batch; True when it went to the spool instead."""
        try:
            stored = receive(engine=self.engine, intake=self.intake,
                             prepared=[ticket.prepared for ticket in batch], render=self.render,
                             now=utcnow())
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
            log.exception("the request writer failed on a batch of %d", len(batch))
            for ticket in batch:
                ticket.error = exc
                ticket.done.set()
            return False
        references = {item.draft.id: item.draft.reference for item in stored or ()}
        for ticket in batch:
            ticket.reference = references.get(ticket.prepared.draft.id)
            ticket.done.set()
        return stored is None


@dataclass
class _Ticket:
    prepared: Prepared
    done: threading.Event = field(default_factory=threading.Event)
    reference: str | None = None
    error: Exception | None = None


def replay_spool(*, engine: Engine, intake: Intake, render: Renderer, now: datetime,
                 limit: int | None = None) -> int:
    """Store every spooled request (once per reference; at most `limit` files, those not
    known to be unreadable first) and remove its file. Stops at the first failure to write:
    the database is still down, and the files wait for next time. One replay at a time per
    spool folder; a file that cannot be opened stays (see Spool)."""
    stored = 0
    with intake.spool.replaying() as mine:
        if not mine:
            return 0
        unreadable = intake.spool.unreadable()
        paths = sorted(intake.spool.pending(), key=lambda path: path.name in unreadable)
        for path in paths[:limit]:
            record = intake.spool.read(path)
            if record is None:
                continue
            item = prepare(intake=intake, draft=Draft.from_record(record), render=render,
                           now=now)
            with session_scope(engine) as session:
                stored += len(store(session=session, intake=intake, prepared=[item],
                                    render=render, now=now))
            intake.spool.remove(path)
    if stored:
        log.info("%d spooled requests stored", stored)
    return stored


def spool_health(session: Session, *, spool: Spool) -> dict:
    """The /healthz probe of this machine's spool: requests waiting, and how many files this
    process cannot open (damaged, or sealed with other keys), left in place for one that can.
    Counts only: a file's name is a request's reference, so the names go to the log (see
    Spool.read), never to the public page."""
    unreadable = spool.unreadable()
    return {"ok": not unreadable, "waiting": len(spool.pending()),
            "unreadable": len(unreadable)}


# -- links and codes ----------------------------------------------------------------------


def status_token(intake: Intake, reference: str) -> str:
    digest = hmac.digest(intake.secret_key.encode(), f"request-status\x00{reference}".encode(),
                         hashlib.sha256)
    return base64.urlsafe_b64encode(digest[:18]).decode("ascii")


def token_opens(intake: Intake, reference: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(status_token(intake, reference), token or "")


def status_link(intake: Intake, reference: str) -> str:
    return f"{intake.base_url}/requests/{reference}?t={status_token(intake, reference)}"


def _serializer(intake: Intake) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(intake.secret_key, salt="request-verification")


def _code_digest(intake: Intake, request_id: str, code: str) -> str:
    return intake.crypto.index.digest("request-code", f"{request_id}\x00{code}")


def _code_email_row(intake: Intake, *, reference: str, code_digest: str, locale: str,
                    severity: str, email: str, code: str, render: Renderer, now: datetime,
                    kind: str, key: str) -> dict:
    """The outbox row of an email carrying a code and its one-click link."""
    link_token = _serializer(intake).dumps({"r": reference, "c": code_digest[:24]})
    values = {"reference": reference, "code": code, "minutes": intake.code_minutes,
              "verify_link": f"{intake.base_url}/requests/{reference}/confirm/{link_token}",
              "status_link": status_link(intake, reference), "severity": SEVERITIES[severity]}
    subject, text, html = render(kind, locale, values)
    return outbox.email_row(cipher=intake.crypto.cipher, key=key, purpose=kind, now=now,
                            email=outbox.Email(to=email, subject=subject, text=text, html=html,
                                               headers={"List-Id": SUPPORT_LIST_ID}))


def get_by_reference(*, session: Session, reference: str) -> SupportRequest:
    normalized = normalize_reference(reference)
    request = normalized and session.exec(
        select(SupportRequest).where(SupportRequest.reference == normalized)).first()
    if not request:
        raise NotFound("There is no request with this reference.")
    return request


def get_request(*, session: Session, request_id: str) -> SupportRequest:
    return get_or_404(session, SupportRequest, request_id, "req",
                      "There is no request with this ID.")


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
        _code_digest(intake, "req_unknown", given)  # the same work as for a real one
        raise Invalid(code_refused(intake)) from None
    digest = _code_digest(intake, request.id, given)
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
    try:
        payload = _serializer(intake).loads(token, max_age=intake.code_minutes * 60)
    except SignatureExpired:
        raise Invalid("This link has expired. Ask for a new code on your request's "
                      "page.") from None
    except BadSignature:
        raise Invalid(LINK_INVALID) from None
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
        _match(session, intake, vault, request, now)
    else:
        _apply_trust(session, intake, vault, request)
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
    code = _new_code()
    request.code_digest = _code_digest(intake, request.id, code)
    request.code_expires_at = now + timedelta(minutes=intake.code_minutes)
    session.add(request)
    email = intake.crypto.cipher.decrypt(request.email_encrypted, context=REQUEST_EMAIL)
    outbox.enqueue_rows(session=session, rows=[_code_email_row(
        intake, reference=request.reference, code_digest=request.code_digest,
        locale=request.locale, severity=request.severity, email=email, code=code,
        render=render, now=now, kind="request_code",
        key=f"request-code:{request.reference}:{request.codes_sent}")])
    audit.record(session, Actor.system("intake"), "request.code_resent",
                 target_kind="request", target_id=request.id)


# -- matching and trust ----------------------------------------------------------------------


def process_pending(*, session: Session, intake: Intake, vault: vault_service.Vault,
                    now: datetime, limit: int = 200) -> int:
    """Match new requests to accounts (off the request path)."""
    pending = list(session.exec(select(SupportRequest)
                                .where(col(SupportRequest.processed_at).is_(None))
                                .order_by(SupportRequest.received_at).limit(limit)))
    for request in pending:
        _match(session, intake, vault, request, now)
    return len(pending)


def _match(session: Session, intake: Intake, vault: vault_service.Vault,
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
    _apply_trust(session, intake, vault, request)
    session.add(request)


def _apply_trust(session: Session, intake: Intake, vault: vault_service.Vault,
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
    _rank(request)


def _rank(request: SupportRequest) -> None:
    priority = SEVERITY_PRIORITY[request.severity]
    if request.verification in TRUSTED:
        request.trust_rank = 0
        if request.contact_role == "site_admin":
            priority = max(1, priority - 1)
    else:
        request.trust_rank = 1 if request.verification == "email_verified" else 2
    request.priority = priority


# -- staff actions -------------------------------------------------------------------------


def attach(*, session: Session, intake: Intake, vault: vault_service.Vault, actor: Actor,
           request_id: str, account_id: str) -> SupportRequest:
    request = get_request(session=session, request_id=request_id)
    account = vault_service.get_account(session=session, account_id=account_id)
    request.account_id, request.account_source = account.id, "staff"
    if request.verification == "callback_confirmed":
        request.verification = "email_verified" if request.verified_at else "unverified"
        request.callback_by = request.callback_at = None
    _apply_trust(session, intake, vault, request)
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
    _rank(request)
    session.add(request)
    audit.record(session, actor, "request.callback_confirmed", target_kind="request",
                 target_id=request.id, contact_id=contact.id)
    return request


def reply_as_staff(*, session: Session, intake: Intake, actor: Actor, request_id: str,
                   body: str, render: Renderer, now: datetime) -> RequestMessage:
    request = get_request(session=session, request_id=request_id)
    message = _add_message(session, intake, request, "staff", body, now, staff_id=actor.id)
    session.flush()
    email = intake.crypto.cipher.decrypt(request.email_encrypted, context=REQUEST_EMAIL)
    subject, text, html = render("request_reply", request.locale, {
        "reference": request.reference, "reply": body,
        "status_link": status_link(intake, request.reference)})
    outbox.enqueue_email(session=session, cipher=intake.crypto.cipher,
                         key=f"request-reply:{message.id}", purpose="request_reply", now=now,
                         email=outbox.Email(to=email, subject=subject, text=text, html=html,
                                            headers={"List-Id": SUPPORT_LIST_ID}))
    audit.record(session, actor, "request.replied", target_kind="request", target_id=request.id)
    return message


def reply_as_customer(*, session: Session, intake: Intake, reference: str, body: str,
                      now: datetime) -> RequestMessage:
    request = get_by_reference(session=session, reference=reference)
    if request.status == "closed":
        request.status = "open"
        session.add(request)
    return _add_message(session, intake, request, "customer", body, now)


def _add_message(session: Session, intake: Intake, request: SupportRequest, author: str,
                 body: str, now: datetime, staff_id: str | None = None) -> RequestMessage:
    body = body.strip()
    if not body:
        raise Invalid("Write a message first.")
    message = RequestMessage(request_id=request.id, author=author, staff_id=staff_id, at=now,
                             body_encrypted=intake.crypto.cipher.encrypt(body,
                                                                         context=MESSAGE_BODY))
    session.add(message)
    return message


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


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    author: str
    at: datetime
    body: str


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
                          cipher.decrypt(request.message_encrypted, context=REQUEST_MESSAGE))]
    conversation += [Entry(message.author, message.at,
                           cipher.decrypt(message.body_encrypted, context=MESSAGE_BODY))
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
    kind: str  # received (the request itself), customer (wrote again), staff (a reply)
    at: datetime


def exchanges_of_account(*, session: Session, account_id: str,
                         limit: int = 200) -> list[Exchange]:
    """Requests of the account and the replies both ways, newest first."""
    requests = list(session.exec(select(SupportRequest)
                                 .where(SupportRequest.account_id == account_id)
                                 .order_by(col(SupportRequest.received_at).desc())
                                 .limit(limit)))
    by_id = {request.id: request for request in requests}
    found = [Exchange(request.id, request.reference, "received", request.received_at)
             for request in requests]
    if by_id:
        found += [Exchange(message.request_id, by_id[message.request_id].reference,
                           message.author, message.at)
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

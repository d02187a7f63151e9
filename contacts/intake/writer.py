"""Storing a support request, from the public form and POST /api/v1/requests: the draft
made in memory, its sealed row and receipt email (with the code and its one-click link),
and the `RequestWriter` that writes them by group commit, or into the spool when the
database cannot take them, and replays the spool.

The request path does the same work whoever is asking: it never reads the vault, so neither
its answer nor its timing says whether an address is a known contact. Matching runs later,
in a job (`trust.process_pending`), and only proposes; proof of address decides trust.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from contacts.core.crypto import normalize_email
from contacts.core.db import bulk_insert, session_scope, utcnow
from contacts.core.ids import new_id
from contacts.core.mail import SUPPORT_LIST_ID, Renderer
from contacts.delivery import outbox
from contacts.intake import codes, threads
from contacts.intake.config import Intake
from contacts.intake.models import (
    REQUEST_COMPANY,
    REQUEST_EMAIL,
    REQUEST_MESSAGE,
    REQUEST_NAME,
    REQUEST_PHONE,
    REQUEST_SITE,
    SEVERITIES,
    SEVERITY_PRIORITY,
    SupportRequest,
)
from contacts.intake.references import new_reference
from contacts.intake.schemas import RequestIn

log = logging.getLogger(__name__)


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


def draft_request(given: RequestIn, *, locale: str, now: datetime) -> Draft:
    return Draft(id=new_id("req"), reference=new_reference(), received_at=now, locale=locale,
                 severity=given.severity, email=given.email, message=given.message,
                 name=given.name, company=given.company, site=given.site, phone=given.phone,
                 code=codes.new_code())


@dataclass(frozen=True)
class Prepared:
    """A request's rows, sealed and rendered, ready for one bulk insert with others."""

    draft: Draft
    request: dict
    email: dict | None  # the receipt with its code; None: not sent (see intake/mailed.py)


def code_email_row(intake: Intake, *, request_id: str, reference: str, code_digest: str,
                   locale: str, severity: str, email: str, code: str, render: Renderer,
                   now: datetime, kind: str, key: str, earlier_keys: list[str],
                   by_email: bool = False) -> dict:
    """The outbox row of an email carrying a code and its one-click link; answers go to
    the request's reply address, and it names the request's emails before it. `by_email`:
    the request came as an email, so no page showed a code box: the link comes first."""
    values = {"reference": reference, "code": code, "minutes": intake.code_minutes,
              "verify_link": codes.verify_link(intake, reference, code_digest),
              "status_link": codes.status_link(intake, reference),
              "severity": SEVERITIES[severity], "by_email": by_email}
    subject, text, html = render(kind, locale, values)
    return outbox.email_row(cipher=intake.crypto.cipher, key=key, purpose=kind, now=now,
                            topic=outbox.Topic("request", reference, "requester", reference),
                            email=outbox.Email(to=email, subject=subject, text=text, html=html,
                                               headers={"List-Id": SUPPORT_LIST_ID,
                                                        **threads.thread_headers(
                                                            intake, request_id,
                                                            earlier_keys)}))


class RequestWriter:
    """Group commit for the request path: requests arriving together (many threads of one
    process) are written by one thread in one transaction, and each caller returns once its
    request is stored, or spooled. Under a flood this is what keeps the cost per request
    bounded: one commit for many requests, not one each.

    The same thread replays the spool of the process that owns it (any process serving
    requests; never a CLI run): when it starts, after the next successful write, and every
    `retry_seconds` while files wait, so a web-only machine needs neither a restart nor the
    scheduler to store what it spooled.

    Built once, where the `Intake` is (create_app). Its steps also run alone: `prepare`
    (seal and render, in the caller's thread), `receive` (one transaction, or the spool),
    `store`, and `replay_spool` (the intake job's, too)."""

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

    def prepare(self, *, draft: Draft, now: datetime, by_email: bool = False) -> Prepared:
        """Encrypt and render a request (CPU only), in the caller's thread, so the one writer
        thread only inserts."""
        request = self._request_row(draft, now)
        email = code_email_row(
            self.intake, request_id=draft.id, reference=draft.reference,
            code_digest=request["code_digest"], locale=draft.locale, severity=draft.severity,
            email=draft.email, code=draft.code, render=self.render, now=now,
            kind="request_received", key=threads.receipt_key(draft.reference),
            earlier_keys=[], by_email=by_email)
        return Prepared(draft, request, email)

    def receive(self, *, prepared: list[Prepared], now: datetime) -> list[Prepared] | None:
        """Store new requests and queue their verification emails, in one transaction, and
        return them as stored (a reference may have changed, see `store`); when the database
        cannot be written, keep them in the spool instead and return None. Either way the
        requests are safe when this returns."""
        try:
            with session_scope(self.engine) as session:
                return self.store(session=session, prepared=prepared, now=now)
        except SQLAlchemyError as exc:
            log.warning("%d requests could not be stored (%s); kept in the spool", len(prepared),
                        type(exc).__name__)
            for item in prepared:
                self.intake.spool.put(item.draft.reference, item.draft.as_record())
            return None

    def store(self, *, session: Session, prepared: list[Prepared],
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
                    renamed.append(self.prepare(
                        now=now, draft=replace(item.draft, reference=new_reference())))
            pending = renamed
        if written:
            bulk_insert(session.connection(), SupportRequest.__table__,
                        [item.request for item in written])
            outbox.enqueue_rows(session=session,
                                rows=[item.email for item in written if item.email])
        return written

    def _request_row(self, draft: Draft, now: datetime) -> dict:
        intake = self.intake
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
            "channel": "web", "inbound_id": None, "status": "open",
            "verification": "unverified", "trust_rank": 2,
            "priority": SEVERITY_PRIORITY[draft.severity], "verified_at": None,
            "code_digest": codes.code_digest(intake, draft.id, draft.code),
            "code_expires_at": now + timedelta(minutes=intake.code_minutes),
            "code_attempts": 0, "codes_sent": 1, "account_id": None, "account_source": None,
            "contact_id": None, "contact_role": None, "processed_at": None, "callback_by": None,
            "callback_at": None, "changed_at": now}

    def replay_spool(self, *, now: datetime, limit: int | None = None) -> int:
        """Store every spooled request (once per reference; at most `limit` files, those not
        known to be unreadable first) and remove its file. Stops at the first failure to write:
        the database is still down, and the files wait for next time. One replay at a time per
        spool folder; a file that cannot be opened stays (see Spool)."""
        stored, intake = 0, self.intake
        with intake.spool.replaying() as mine:
            if not mine:
                return 0
            unreadable = intake.spool.unreadable()
            paths = sorted(intake.spool.pending(), key=lambda path: path.name in unreadable)
            for path in paths[:limit]:
                record = intake.spool.read(path)
                if record is None:
                    continue
                item = self.prepare(draft=Draft.from_record(record), now=now)
                with session_scope(self.engine) as session:
                    stored += len(self.store(session=session, prepared=[item], now=now))
                intake.spool.remove(path)
        if stored:
            log.info("%d spooled requests stored", stored)
        return stored

    def write(self, draft: Draft) -> str | None:
        """The reference the request was stored under, or None when it was spooled."""
        ticket = _Ticket(self.prepare(draft=draft, now=draft.received_at))
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
            stored = self.replay_spool(now=utcnow(), limit=self.MAX_BATCH)
        except Exception as exc:  # noqa: BLE001 - still down: the files wait for the next try
            log.info("spooled requests not stored yet (%s)", type(exc).__name__)
        waiting = len(self.intake.spool.pending())
        self._spool_waiting = waiting > 0
        self._backlog = stored > 0 and waiting > len(self.intake.spool.unreadable())

    def _write(self, batch: list[_Ticket]) -> bool:
        """Write a batch; True when it went to the spool instead."""
        try:
            stored = self.receive(prepared=[ticket.prepared for ticket in batch], now=utcnow())
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


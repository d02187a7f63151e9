"""The mailbox reader: one pass over a configured mailbox. Each message is fetched whole
(batches of one UID FETCH, BODY.PEEK[]), stored sealed and handed to the router in one
transaction, then moved to `[inbound] done_folder`; one the handler refuses, or one too
large, is recorded as failed and moved to `failed_folder`.

Nothing is processed twice: a message is known by its mailbox, UIDVALIDITY and UID (a
unique key that a second reader's INSERT loses cleanly, ON CONFLICT DO NOTHING) and by
its Message-ID's keyed digest with the same body (a copy delivered twice). A reader that
crashed after a commit and before the move finds the message known at its next pass, and
only moves it."""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session

from contacts.core.crypto import BlindIndex, Crypto
from contacts.core.db import utcnow
from contacts.core.errors import Invalid
from contacts.core.ids import new_id
from contacts.core.mailboxes import Mailbox
from contacts.inbound.imap import IMAP_ERRORS, ImapSession, Listed, MailboxUnavailable, connect
from contacts.inbound.models import InboundMessage, open_raw, seal_raw

log = logging.getLogger(__name__)

# What the router is handed, in the transaction that stored the row: it fills the row's
# columns (outcome first) and makes its own writes; raising rolls all of it back.
Handler = Callable[[Session, InboundMessage, bytes], None]
MESSAGE_ID_PURPOSE = "inbound.message_id"
# The database failing (unreachable, locked): the pass stops and the message stays in the
# folder for the next one; it is no fault of the message.
DATABASE_TROUBLE = (OperationalError, InterfaceError)
# The advisory locks that serialize one Message-ID's messages on PostgreSQL ("INM").
_LOCK_SPACE = 0x494E4D
_HEAD_END = re.compile(rb"\r?\n\r?\n")
# Earlier messages under one Message-ID compared with a new one (each a copy, or a sender
# repeating someone's Message-ID): past these many, the new one is read as new.
MAX_COPIES = 20
_ANGLED = re.compile(r"<[^<>\s]+>")


def store_only(session: Session, row: InboundMessage, raw: bytes) -> None:
    """The handler until the router is wired: keep the message sealed, do nothing else."""
    row.outcome = "stored"


@dataclass(frozen=True)
class MailHandler:
    """The handler every reader of this app uses (the job, the watchers, the CLI), built
    once by create_app from `jobs.inbound_handler`."""

    handle: Handler = store_only


@dataclass(frozen=True)
class ReaderSettings:
    done_folder: str = "Lifeline/Done"
    failed_folder: str = "Lifeline/Failed"
    max_message_bytes: int = 40 * 1024 * 1024
    timeout_seconds: float = 30.0
    # One FETCH brings this many messages, or this many bytes (a larger one comes alone).
    batch_messages: int = 100
    batch_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings) -> ReaderSettings:
        return cls(done_folder=settings.inbound_done_folder,
                   failed_folder=settings.inbound_failed_folder,
                   max_message_bytes=settings.inbound_max_message_bytes,
                   timeout_seconds=float(settings.inbound_timeout_seconds))


@dataclass
class ReadReport:
    mailbox: str
    read: int = 0  # messages of the folder this pass dealt with
    processed: int = 0  # stored and handled
    duplicates: int = 0  # known already (processed before, or by another reader): moved
    failed: int = 0  # too large, or the handler raised: recorded as failed
    seconds: float = 0.0


@dataclass(frozen=True)
class _Verdict:
    kind: str  # processed, duplicate or failed
    folder: str | None  # where the message goes; None: leave it
    row_id: str | None = None  # the row that answers for it (its own, or the first copy's)


def configured_mailbox(settings, name: str) -> Mailbox:
    for mailbox in settings.inbound_mailboxes:
        if mailbox.name.lower() == name.lower():
            return mailbox
    known = ", ".join(mailbox.name for mailbox in settings.inbound_mailboxes) or "none"
    raise Invalid(f"no inbound mailbox named {name!r} (configured: {known})")


def read_mailbox(*, engine: Engine, crypto: Crypto, mailbox: Mailbox, reader: ReaderSettings,
                 handle: Handler = store_only, imap: ImapSession | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 progress: Callable[[int, int], None] | None = None) -> ReadReport:
    """One pass over `mailbox`'s folder: every message there now is processed, or found
    known, or failed, and moved. `imap`: a session to reuse (the IDLE watcher's), else one
    is opened and closed. `progress(done, total)` after each message. MailboxUnavailable
    when the server cannot be reached or drops the connection; a database failure stops
    the pass (what was committed stays, and is moved at the next pass)."""
    started = time.monotonic()
    session = imap or connect(mailbox, timeout=reader.timeout_seconds, ssl_context=ssl_context)
    try:
        report = _Pass(engine, crypto, mailbox, reader, handle, session, progress).run()
    except IMAP_ERRORS as exc:
        raise MailboxUnavailable(f"mailbox {mailbox.name!r}: the connection failed "
                                 f"({type(exc).__name__})") from None
    finally:
        if imap is None:
            session.close()
    report.seconds = time.monotonic() - started
    return report


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID header ("<...@...>"), from the message's head alone."""
    head = _HEAD_END.split(raw, 1)[0]
    value = BytesHeaderParser(policy=compat32).parsebytes(head + b"\r\n\r\n").get("Message-ID")
    value = " ".join(str(value or "").split())
    angled = _ANGLED.search(value)
    return angled.group(0) if angled else (value or None)


def _body_of(raw: bytes) -> bytes:
    """The body, its line ends made plain (a delivery agent may store LF where APPEND kept
    CRLF)."""
    parts = _HEAD_END.split(raw, 1)
    return parts[1].replace(b"\r\n", b"\n").rstrip(b"\n") if len(parts) > 1 else b""


def message_id_digest(index: BlindIndex, message_id: str | None) -> str | None:
    return index.digest(MESSAGE_ID_PURPOSE, message_id) if message_id else None


class _Pass:
    def __init__(self, engine: Engine, crypto: Crypto, mailbox: Mailbox,
                 reader: ReaderSettings, handle: Handler, imap: ImapSession,
                 progress: Callable[[int, int], None] | None):
        self.engine, self.crypto, self.mailbox, self.reader = engine, crypto, mailbox, reader
        self.handle, self.imap, self.progress = handle, imap, progress
        self.report = ReadReport(mailbox=mailbox.name)
        self.postgresql = engine.dialect.name == "postgresql"
        self.insert = (postgresql if self.postgresql else sqlite).insert
        self.validity = 0

    def run(self) -> ReadReport:
        reader = self.reader
        self.imap.ensure_folders(reader.done_folder, reader.failed_folder)
        self.validity, count = self.imap.select(self.mailbox.folder)
        listed = self.imap.list_messages() if count else []
        for batch in self._batches(listed):
            readable = [message.uid for message in batch
                        if message.size <= reader.max_message_bytes]
            fetched = self.imap.fetch(readable) if readable else {}
            moves: dict[str, list[int]] = {reader.done_folder: [], reader.failed_folder: []}
            rows: list[str] = []
            for message in batch:
                if message.size > reader.max_message_bytes:
                    verdict = self._failed(message, None, None, "too large")
                elif message.uid in fetched:
                    verdict = self._process(message, fetched.pop(message.uid))
                else:
                    continue  # moved by another reader since the listing
                self._count(verdict)
                if verdict.folder and verdict.row_id:
                    moves[verdict.folder].append(message.uid)
                    rows.append(verdict.row_id)
                if self.progress:
                    self.progress(self.report.read, len(listed))
            self._move(moves, rows)
        return self.report

    def _move(self, moves: dict[str, list[int]], rows: list[str]) -> None:
        """Move while holding the messages' rows, so another reader that found them too
        moves after us, when they are gone: two MOVEs of one message at once would both
        copy it (Dovecot's MOVE is a copy, then an expunge)."""
        if not rows:
            return
        with Session(self.engine) as db:
            if self.postgresql:
                db.execute(select(InboundMessage.id).where(InboundMessage.id.in_(rows))
                           .order_by(InboundMessage.id).with_for_update())
            else:  # SQLite: any write takes the database's one write lock
                db.execute(text("UPDATE inbound_message SET state = state WHERE id = :id"),
                           {"id": rows[0]})
            self.imap.client.noop()  # what another reader moved meanwhile is gone here too
            for folder, uids in moves.items():
                self.imap.move(uids, folder)
            db.commit()

    def _batches(self, listed: list[Listed]) -> Iterator[list[Listed]]:
        batch: list[Listed] = []
        size = 0
        for message in listed:
            weight = message.size if message.size <= self.reader.max_message_bytes else 0
            if batch and (len(batch) >= self.reader.batch_messages
                          or size + weight > self.reader.batch_bytes):
                yield batch
                batch, size = [], 0
            batch.append(message)
            size += weight
        if batch:
            yield batch

    def _count(self, verdict: _Verdict) -> None:
        report = self.report
        report.read += 1
        if verdict.kind == "processed":
            report.processed += 1
        elif verdict.kind == "failed":
            report.failed += 1
        else:
            report.duplicates += 1

    def _process(self, message: Listed, raw: bytes) -> _Verdict:
        digest = message_id_digest(self.crypto.index, message_id_of(raw))
        values = self._row(message, raw, digest, state="processed")
        with Session(self.engine, expire_on_commit=False) as db:
            if digest and self.postgresql:
                # Two copies of one message read by two workers at once: one at a time.
                db.execute(text("SELECT pg_advisory_xact_lock(:space, :key)"),
                           {"space": _LOCK_SPACE, "key": int(digest[:8], 16) - 2**31})
            if not self._insert(db, values):
                db.rollback()
                return self._known(message)
            first = self._processed_before(db, digest, values["id"], raw) if digest else None
            if first:
                db.rollback()
                return _Verdict("duplicate", self.reader.done_folder, first)
            # The row as inserted, in the session without reading it back: the handler's
            # changes to it are written as one UPDATE at the commit.
            row = InboundMessage(**values)
            make_transient_to_detached(row)
            db.add(row)
            try:
                self.handle(db, row, raw)
                db.commit()
            except DATABASE_TROUBLE:
                db.rollback()
                raise
            except Exception as exc:  # noqa: BLE001 - any refusal of the router is recorded
                db.rollback()
                error = type(exc).__name__
            else:
                return _Verdict("processed", self.reader.done_folder, values["id"])
        log.warning("inbound mailbox %s: the message of UID %d was not handled (%s): moved "
                    "to %s", self.mailbox.name, message.uid, error, self.reader.failed_folder)
        return self._failed(message, raw, digest, error)

    def _failed(self, message: Listed, raw: bytes | None, digest: str | None,
                error: str) -> _Verdict:
        """A failed row in a transaction of its own, then the failed folder."""
        values = self._row(message, raw, digest, state="failed", error=error[:200])
        with Session(self.engine) as db:
            inserted = self._insert(db, values)
            db.commit()
        if not inserted:
            return self._known(message)
        if raw is None:
            log.warning("inbound mailbox %s: the message of UID %d is %s (%d bytes): moved "
                        "to %s", self.mailbox.name, message.uid, error, message.size,
                        self.reader.failed_folder)
        return _Verdict("failed", self.reader.failed_folder, values["id"])

    def _known(self, message: Listed) -> _Verdict:
        """Stored before (a crash before its move, or another reader): moved where its
        row says."""
        with Session(self.engine) as db:
            known = db.execute(select(InboundMessage.id, InboundMessage.state).where(
                InboundMessage.mailbox == self.mailbox.name,
                InboundMessage.uidvalidity == self.validity,
                InboundMessage.uid == message.uid)).first()
        if known is None:
            return _Verdict("duplicate", None)
        failed = known.state == "failed"
        return _Verdict("duplicate", self.reader.failed_folder if failed
                        else self.reader.done_folder, known.id)

    def _processed_before(self, db: Session, digest: str, own_id: str,
                          raw: bytes) -> str | None:
        """The row of a copy of this message processed before: the same Message-ID and the
        same body (the head differs by its trace lines). The Message-ID is the sender's
        choice, so another message that only repeats it is no copy, or a stranger could
        have a customer's email dropped by sending one first."""
        body = _body_of(raw)
        for row_id, sealed in db.execute(select(InboundMessage.id, InboundMessage.raw_encrypted)
                                         .where(InboundMessage.mailbox == self.mailbox.name,
                                                InboundMessage.message_id_digest == digest,
                                                InboundMessage.state == "processed",
                                                InboundMessage.id != own_id)
                                         .order_by(InboundMessage.id).limit(MAX_COPIES)):
            if sealed is not None and _body_of(open_raw(self.crypto.cipher, sealed)) == body:
                return row_id
        return None

    def _insert(self, db: Session, values: dict[str, Any]) -> bool:
        """INSERT that loses a race cleanly: False when the row was there already."""
        statement = self.insert(InboundMessage.__table__).values(**values)
        statement = statement.on_conflict_do_nothing().returning(InboundMessage.__table__.c.id)
        return db.execute(statement).first() is not None

    def _row(self, message: Listed, raw: bytes | None, digest: str | None, *, state: str,
             error: str | None = None) -> dict[str, Any]:
        return {"id": new_id("inm"), "mailbox": self.mailbox.name, "uidvalidity": self.validity,
                "uid": message.uid, "message_id_digest": digest,
                "received_at": message.received_at, "stored_at": utcnow(),
                "size": len(raw) if raw is not None else message.size,
                "raw_encrypted": seal_raw(self.crypto.cipher, raw) if raw is not None else None,
                "state": state, "error": error, "sender_verified": False, "channel": "email"}

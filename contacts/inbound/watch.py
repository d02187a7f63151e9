"""A worker's watch over one mailbox, in a thread: a pass at once, then IMAP IDLE (when the
server offers it and `[inbound] idle` is on) until mail arrives, and another pass at once;
without IDLE, a pass every `[inbound] poll_seconds`. A lost connection or database is
logged (the mailbox by name, nothing it holds) and retried with a growing pause."""

from __future__ import annotations

import logging
import ssl
import threading

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from contacts.core.crypto import Crypto
from contacts.core.mailboxes import Mailbox
from contacts.inbound.imap import IMAP_ERRORS, ImapSession, MailboxUnavailable, connect
from contacts.inbound.mailbox import Handler, ReaderSettings, read_mailbox

log = logging.getLogger(__name__)

# RFC 2177: a client re-issues IDLE well within 29 minutes, or the server may log it out.
IDLE_SECONDS = 25 * 60
MAX_PAUSE_SECONDS = 300.0


class MailboxWatcher:
    """`start()` and `stop()`, as `jobs.background_services` expects of its loops."""

    def __init__(self, *, engine: Engine, crypto: Crypto, mailbox: Mailbox,
                 reader: ReaderSettings, handle: Handler, poll_seconds: float,
                 idle: bool = True, ssl_context: ssl.SSLContext | None = None):
        self.engine, self.crypto, self.mailbox, self.reader = engine, crypto, mailbox, reader
        self.handle, self.poll_seconds, self.idle = handle, poll_seconds, idle
        self.ssl_context = ssl_context
        self.passes = 0  # passes made, for the tests and the logs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"inbound-{mailbox.name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.reader.timeout_seconds + 30)

    def _run(self) -> None:
        pause = 1.0
        while not self._stop.is_set():
            imap = None
            try:
                imap = connect(self.mailbox, timeout=self.reader.timeout_seconds,
                               ssl_context=self.ssl_context)
                while not self._stop.is_set():
                    self._read(imap)
                    pause = 1.0
                    self._wait(imap)
            except MailboxUnavailable as exc:
                log.warning("inbound watch: %s; retrying in %.0f s", exc.message, pause)
            except (*IMAP_ERRORS, SQLAlchemyError) as exc:
                log.warning("inbound watch of mailbox %s: %s; retrying in %.0f s",
                            self.mailbox.name, type(exc).__name__, pause)
            except Exception:  # noqa: BLE001 - the watch goes on; the trace names no content
                log.exception("inbound watch of mailbox %s failed; retrying", self.mailbox.name)
            finally:
                if imap is not None:
                    imap.close()
            self._stop.wait(pause)
            pause = min(pause * 2, MAX_PAUSE_SECONDS)

    def _read(self, imap: ImapSession) -> None:
        report = read_mailbox(engine=self.engine, crypto=self.crypto, mailbox=self.mailbox,
                              reader=self.reader, handle=self.handle, imap=imap)
        self.passes += 1
        if report.read:
            log.info("inbound mailbox %s: %d read, %d processed, %d known, %d failed",
                     self.mailbox.name, report.read, report.processed, report.duplicates,
                     report.failed)

    def _wait(self, imap: ImapSession) -> None:
        """Until mail arrives (IDLE), or poll_seconds (without)."""
        if self.idle and imap.offers_idle:
            imap.wait_for_mail(IDLE_SECONDS, self._stop.is_set)
        else:
            self._stop.wait(self.poll_seconds)

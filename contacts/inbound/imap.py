"""The IMAP session a reader holds, over imap-tools: connected with the mailbox's security
(none, STARTTLS or implicit TLS, certificates checked), the server's capabilities as they
are after login, folder names in the server's own separator, and the few commands the
reader needs: list UIDs with sizes, fetch a batch of whole messages without marking them
read (one UID FETCH of BODY.PEEK[]), move a set of UIDs, wait with IDLE."""

from __future__ import annotations

import imaplib
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted
from imap_tools.errors import UnexpectedCommandStatusError
from imap_tools.utils import encode_folder

from contacts.core.errors import LifelineError
from contacts.core.mailboxes import Mailbox

# What a connection, a login or a command may raise when the server or the network fails.
IMAP_ERRORS = (OSError, imaplib.IMAP4.error, UnexpectedCommandStatusError, ValueError)
_LISTED = re.compile(rb"UID (\d+)|RFC822\.SIZE (\d+)|INTERNALDATE \"([^\"]+)\"")
_UID = re.compile(rb"UID (\d+)")
_LIST_LINE = re.compile(rb'^\(([^)]*)\) (?:"((?:\\.|[^"\\])*)"|NIL) ')


class MailboxUnavailable(LifelineError):
    """A mailbox could not be reached, logged in to or read; the message names the mailbox
    and the reason, never what it holds."""

    status = 503
    code = "mailbox_unavailable"


@dataclass(frozen=True)
class Listed:
    """A message as the folder lists it, before it is fetched."""

    uid: int
    size: int
    received_at: datetime


@dataclass
class ImapSession:
    mailbox: Mailbox
    box: MailBox | MailBoxStartTls | MailBoxUnencrypted
    capabilities: frozenset[str] = frozenset()
    delimiter: str | None = "/"
    created: set[str] = field(default_factory=set)  # folders known to exist

    @property
    def client(self) -> imaplib.IMAP4:
        return self.box.client

    @property
    def offers_idle(self) -> bool:
        return "IDLE" in self.capabilities

    def folder_name(self, path: str) -> str:
        """`Lifeline/Done` in the server's separator (`Lifeline.Done` on many servers)."""
        if not self.delimiter or self.delimiter == "/":
            return path
        return self.delimiter.join(path.split("/"))

    def ensure_folders(self, *paths: str) -> None:
        for path in paths:
            name = self.folder_name(path)
            if name in self.created:
                continue
            if not self.box.folder.exists(name):
                typ, _ = self.client._simple_command("CREATE", encode_folder(name))
                # Another reader may have created it meanwhile: only its absence is an error.
                if typ != "OK" and not self.box.folder.exists(name):
                    raise MailboxUnavailable(f"mailbox {self.mailbox.name!r}: cannot create "
                                             f"the folder {path!r}")
                self.client._simple_command("SUBSCRIBE", encode_folder(name))
            self.created.add(name)

    def select(self, folder: str) -> tuple[int, int]:
        """Select `folder` (read-write); returns its UIDVALIDITY and message count."""
        typ, data = self.client.select(encode_folder(folder))
        if typ != "OK":
            raise MailboxUnavailable(f"mailbox {self.mailbox.name!r}: cannot open its folder "
                                     f"{folder!r}")
        for seen in ("EXISTS", "RECENT"):  # what the count says; later ones are news
            self.client.untagged_responses.pop(seen, None)
        _, validity = self.client.response("UIDVALIDITY")
        if not validity or validity[0] is None:
            raise MailboxUnavailable(f"mailbox {self.mailbox.name!r}: the server gave no "
                                     "UIDVALIDITY")
        return int(validity[-1]), int(data[-1] or 0)

    def list_messages(self) -> list[Listed]:
        """Every message of the selected folder, by UID, with its size and arrival time."""
        typ, data = self.client.uid("FETCH", "1:*", "(UID RFC822.SIZE INTERNALDATE)")
        if typ != "OK":
            raise MailboxUnavailable(f"mailbox {self.mailbox.name!r}: cannot list its folder")
        listed = []
        for line in data or ():
            if isinstance(line, tuple):
                line = line[0]
            if not line:
                continue
            found: dict[int, bytes] = {}
            for match in _LISTED.finditer(line):
                for group in (1, 2, 3):
                    if match.group(group):
                        found[group] = match.group(group)
            if 1 in found and 2 in found:
                listed.append(Listed(int(found[1]), int(found[2]), _internal_date(found.get(3))))
        return sorted(listed, key=lambda message: message.uid)

    def fetch(self, uids: Iterable[int]) -> dict[int, bytes]:
        """Whole messages of these UIDs in one command, marked read by nothing. A message
        another reader moved meanwhile is simply not in the answer."""
        typ, data = self.client.uid("FETCH", uid_set(uids), "(UID BODY.PEEK[])")
        if typ not in ("OK", "NO"):  # NO: some are gone (EXPUNGEISSUED), the rest came
            raise MailboxUnavailable(f"mailbox {self.mailbox.name!r}: fetch refused")
        fetched: dict[int, bytes] = {}
        items = list(data or ())
        for position, item in enumerate(items):
            if not isinstance(item, tuple) or len(item) != 2:
                continue
            header, raw = item
            uid = _UID.search(header)
            if uid is None and position + 1 < len(items) and isinstance(items[position + 1],
                                                                        bytes):
                uid = _UID.search(items[position + 1])  # servers may send UID after the body
            if uid is not None and raw is not None:
                fetched[int(uid.group(1))] = raw
        return fetched

    def move(self, uids: list[int], path: str) -> None:
        """Move these UIDs to the folder `path`: UID MOVE when offered, else COPY, \\Deleted
        and an expunge of those UIDs alone (UID EXPUNGE) where the server has UIDPLUS."""
        if not uids:
            return
        folder = encode_folder(self.folder_name(path))
        if self._move(uid_set(uids), folder) != "OK":
            # Some were moved meanwhile by another reader: move what is still here.
            self.client.noop()
            typ, data = self.client.uid("SEARCH", "UID", uid_set(uids))
            left = [int(uid) for uid in (data[0] or b"").split()] if typ == "OK" else uids
            if left and self._move(uid_set(left), folder) != "OK":
                raise MailboxUnavailable(f"mailbox {self.mailbox.name!r}: cannot move "
                                         f"messages to {path!r}")

    def _move(self, uids: str, folder: bytes | str) -> str:
        if "MOVE" in self.capabilities:
            typ, _ = self.client.uid("MOVE", uids, folder)
            return typ
        typ, _ = self.client.uid("COPY", uids, folder)
        if typ != "OK":
            return typ
        typ, _ = self.client.uid("STORE", uids, "+FLAGS.SILENT", r"(\Deleted)")
        if typ != "OK":
            return typ
        if "UIDPLUS" in self.capabilities:
            typ, _ = self.client.uid("EXPUNGE", uids)
        else:
            typ, _ = self.client.expunge()
        return typ

    def wait_for_mail(self, seconds: float, stopping) -> bool:
        """IDLE up to `seconds` (checking `stopping()` each second); True when the server
        said new mail arrived."""
        # Mail announced in the answer to a command since the pass's SELECT is news too.
        if self.client.untagged_responses.pop("EXISTS", None):
            return True
        self.box.idle.start()
        try:
            waited = 0.0
            while waited < seconds and not stopping():
                step = min(1.0, seconds - waited)
                responses = self.box.idle.poll(timeout=step)
                if any(line.endswith(b" EXISTS") for line in responses):
                    return True
                waited += step
            return False
        finally:
            self.box.idle.stop()

    def close(self) -> None:
        try:
            self.box.logout()
        except (*IMAP_ERRORS, AttributeError):
            try:
                self.client.shutdown()
            except (*IMAP_ERRORS, AttributeError):
                pass


def connect(mailbox: Mailbox, *, timeout: float,
            ssl_context: ssl.SSLContext | None = None) -> ImapSession:
    """Connect and log in; MailboxUnavailable (one line, no secret) when it cannot."""
    where = f"mailbox {mailbox.name!r} at {mailbox.host}:{mailbox.port}"
    context = ssl_context or ssl.create_default_context()
    try:
        if mailbox.security == "tls":
            box = MailBox(mailbox.host, mailbox.port, timeout=timeout, ssl_context=context)
        elif mailbox.security == "starttls":
            box = MailBoxStartTls(mailbox.host, mailbox.port, timeout=timeout,
                                  ssl_context=context)
        else:
            box = MailBoxUnencrypted(mailbox.host, mailbox.port, timeout=timeout)
    except ssl.SSLError as exc:
        raise MailboxUnavailable(f"{where}: TLS failed ({exc.reason or type(exc).__name__})"
                                 ) from None
    except TimeoutError:
        raise MailboxUnavailable(f"{where}: no answer within {timeout:g} s") from None
    except IMAP_ERRORS as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise MailboxUnavailable(f"{where}: unreachable ({reason})") from None
    try:
        box.login(mailbox.username, mailbox.password, initial_folder=None)
    except IMAP_ERRORS:
        _close_quietly(box)
        raise MailboxUnavailable(f"{where}: login refused") from None
    session = ImapSession(mailbox, box)
    try:
        session.capabilities = _capabilities(box.client)
        session.delimiter = _delimiter(box.client)
    except IMAP_ERRORS as exc:
        session.close()
        raise MailboxUnavailable(f"{where}: {type(exc).__name__} after login") from None
    return session


def uid_set(uids: Iterable[int]) -> str:
    """1,2,3,5 -> "1:3,5": the UID set of a command, as short as the UIDs allow."""
    ranges: list[list[int]] = []
    for uid in sorted(set(uids)):
        if ranges and uid == ranges[-1][1] + 1:
            ranges[-1][1] = uid
        else:
            ranges.append([uid, uid])
    return ",".join(f"{low}:{high}" if high > low else str(low) for low, high in ranges)


def _capabilities(client: imaplib.IMAP4) -> frozenset[str]:
    """What the server offers once logged in (imaplib keeps the greeting's)."""
    typ, data = client.capability()
    offered = frozenset(data[-1].decode().upper().split()) if typ == "OK" and data else frozenset()
    client.capabilities = tuple(offered)  # imap-tools' own commands read it too
    return offered


def _delimiter(client: imaplib.IMAP4) -> str | None:
    typ, data = client.list('""', '""')
    for line in (data or ()) if typ == "OK" else ():
        match = _LIST_LINE.match(line if isinstance(line, bytes) else b"")
        if match:
            return match.group(2).decode().replace("\\\\", "\\") if match.group(2) else None
    return "/"


def _internal_date(value: bytes | None) -> datetime:
    if value:
        try:
            return datetime.strptime(value.decode().strip(), "%d-%b-%Y %H:%M:%S %z"
                                     ).astimezone(UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def _close_quietly(box) -> None:
    try:
        box.client.shutdown()
    except (*IMAP_ERRORS, AttributeError):
        pass

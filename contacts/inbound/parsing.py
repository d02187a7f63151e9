"""RFC 5322 bytes to `message.Inbound`: a pure function that never raises, whatever the
bytes. Work is bounded: parts, depth and header sizes are capped (`mime`), a structure past
them is read for its headers and text only, and every value is best effort."""

from __future__ import annotations

import logging
import mimetypes
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime

from contacts.inbound import authentication, autoreplies, content, mime, quoting, reports
from contacts.inbound.message import Attachment, Inbound, Sender

_log = logging.getLogger(__name__)
MAX_TEXT_CHARS = 1_000_000
# Past these many boundary-like lines or attached messages, the structure is not parsed:
# the standard parser would build every part (and recurse into every level) first.
MAX_BOUNDARY_LINES = 5_000
MAX_ATTACHED_MESSAGES = 50
MAX_DECODED_BYTES = 64 * 1024 * 1024
_RECIPIENT_HEADERS = ("to", "cc", "delivered-to", "x-original-to")
_REPORT_PARTS = {"message/delivery-status", "message/global-delivery-status",
                 "message/feedback-report", "text/rfc822-headers", "message/rfc822-headers"}


def parse(raw: bytes, *, trusted_authserv_ids: tuple[str, ...], attachment_max_bytes: int,
          results_below_received: bool = False) -> Inbound:
    """`results_below_received`: the trusted server stamps its Authentication-Results below
    its own Received line (see authentication.py)."""
    try:
        return _parse(bytes(raw or b""), trusted_authserv_ids, attachment_max_bytes,
                      results_below_received)
    except Exception as exc:  # a bug of ours: the message still reaches the router
        # By class only: an exception's message may quote the mail (addresses, text).
        _log.error("inbound message read as bytes only after a parsing error (%s)",
                   type(exc).__name__)
        text = bytes(raw or b"")[:MAX_TEXT_CHARS].decode("utf-8", errors="replace")
        return Inbound(message_id=None, sender=Sender(address=None, name=None, verified=False),
                       recipients=(), subject="", date=None, in_reply_to=(), references=(),
                       text=text, shown=text, html=None, extra={"unparsed": "error"})


def _parse(raw: bytes, trusted_authserv_ids: tuple[str, ...], attachment_max_bytes: int,
           below: bool) -> Inbound:
    message, notes = _message_of(raw)
    from_addresses, from_name = _from(message)
    sender_address = from_addresses[0] if from_addresses else None
    domains = [address.rpartition("@")[2] for address in from_addresses]
    if len(from_addresses) > 1:
        notes["from_addresses"] = str(len(from_addresses))
    verified, how = authentication.sender_verified(message, domains, trusted_authserv_ids,
                                                   below)
    subject = mime.decoded_text("subject", mime.raw_header(message, "subject"))
    body = _Body(message, attachment_max_bytes, structured="unparsed" not in notes)
    report = _or(reports.ReadReport(), reports.read_report, message, sender_address)
    automatic = None if report.report_type else _or(
        None, autoreplies.why_automatic, message, subject)
    if body.truncated:
        notes["truncated"] = "parts"
    return Inbound(
        message_id=mime.first_message_id(mime.raw_header(message, "message-id")),
        sender=Sender(address=sender_address, name=from_name, verified=verified, how=how,
                      refuted=not verified and authentication.sender_refuted(
                          message, domains, trusted_authserv_ids, below)),
        recipients=_recipients(message),
        subject=subject,
        date=_date(mime.raw_header(message, "date")),
        in_reply_to=mime.message_ids(mime.raw_header(message, "in-reply-to")),
        references=mime.message_ids(" ".join(mime.raw_headers(message, "references"))),
        text=body.text,
        shown=_or(body.text, quoting.shown, body.text),
        html=body.html,
        attachments=tuple(body.attachments),
        automatic=automatic,
        report_type=report.report_type,
        reports=report.reports,
        reported_message_id=report.reported_message_id,
        reported_return_path=report.reported_return_path,
        envelope_sender=_envelope_sender(mime.raw_header(message, "return-path")),
        extra=notes,
    )


def _or(default, read, *args):
    """What `read` makes of `args`, or `default` (logged) when it fails: one reader's bug
    costs that value only."""
    try:
        return read(*args)
    except Exception as exc:
        _log.error("inbound message: %s failed (%s)", getattr(read, "__qualname__", "a reader"),
                   type(exc).__name__)
        return default


def _message_of(raw: bytes) -> tuple[Message, dict[str, str]]:
    """The parsed message, or (for a structure past the caps, or one the parser fails on)
    its headers with the rest as a plain text body."""
    notes: dict[str, str] = {}
    header_end = _header_end(raw)
    body = raw[header_end:]
    too_many = body.count(b"\n--") > MAX_BOUNDARY_LINES \
        or len(re.findall(rb"(?i)message/(?:rfc822|global)\b", body)) > MAX_ATTACHED_MESSAGES
    parsed = None if too_many else _parsed(raw, headers_only=False)
    if parsed is not None:
        return parsed, notes
    notes["unparsed"] = "structure"
    message = _parsed(raw[:header_end], headers_only=True) or EmailMessage()
    try:
        del message["content-type"]
        del message["content-transfer-encoding"]
        message.set_payload(body[:MAX_TEXT_CHARS].decode("utf-8", errors="replace"))
    except Exception:
        message = EmailMessage()
    return message, notes


def _parsed(raw: bytes, *, headers_only: bool) -> Message | None:
    try:
        return BytesParser(policy=policy.default).parsebytes(raw, headersonly=headers_only)
    except Exception:  # RecursionError (a nesting bomb) included
        return None


def _header_end(raw: bytes) -> int:
    found = [index for index in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if index >= 0]
    if not found:
        return len(raw)
    index = min(found)
    return index + (4 if raw[index:index + 4] == b"\r\n\r\n" else 2)


class _Body:
    """The text, sanitized HTML and attachments of a message, in one bounded walk."""

    def __init__(self, message: Message, attachment_max_bytes: int, *, structured: bool):
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.attachments: list[Attachment] = []
        self.truncated = False
        self.decoded = 0
        in_report = mime.content_type(message) == "multipart/report"
        parts = list(mime.walk(message)) if structured else [(message, 0)]
        self.truncated = len(parts) >= mime.MAX_PARTS
        for part, _ in parts:
            self._read(part, attachment_max_bytes, in_report)
        plain = "\n\n".join(text for text in self.texts if text.strip())[:MAX_TEXT_CHARS]
        html = "\n".join(self.htmls)
        self.text = plain if plain.strip() else content.text_of_html(html)[:MAX_TEXT_CHARS]
        cleaned = content.sanitized_html(html) if html.strip() else ""
        self.html = cleaned or None

    def _read(self, part: Message, attachment_max_bytes: int, in_report: bool) -> None:
        kind = mime.content_type(part)
        if kind.startswith("multipart/"):
            return
        if in_report and (kind in _REPORT_PARTS or kind in ("message/rfc822", "message/global")):
            return  # what the report says is read by `reports`, not shown or stored
        if not mime.is_attachment(part) and kind in ("text/plain", "text/html"):
            budget = MAX_TEXT_CHARS - sum(len(text) for text in self.texts + self.htmls)
            if budget > 0:
                (self.texts if kind == "text/plain" else self.htmls).append(
                    mime.text_of(part, budget))
            return
        self._attach(part, kind, attachment_max_bytes)

    def _attach(self, part: Message, kind: str, attachment_max_bytes: int) -> None:
        if kind in ("message/rfc822", "message/global"):
            data = _attached_message_bytes(part)
        else:
            data = mime.payload_bytes(part)
        self.decoded += len(data)
        size = len(data)
        keep = size <= attachment_max_bytes and self.decoded <= MAX_DECODED_BYTES
        name = mime.filename(part) or _default_name(kind, len(self.attachments) + 1)
        self.attachments.append(Attachment(filename=name, content_type=kind, size=size,
                                           data=data if keep else None))


def _attached_message_bytes(part: Message) -> bytes:
    inner = mime.subparts(part)
    try:
        return inner[0].as_bytes(policy=policy.default) if inner else mime.payload_bytes(part)
    except Exception:  # a message the generator cannot write back is kept as nothing
        return b""


def _default_name(kind: str, number: int) -> str:
    extension = ".eml" if kind.startswith("message/") else (
        mimetypes.guess_extension(kind, strict=False) or ".bin")
    return f"attachment-{number}{extension}"


def _addresses(name: str, raw: str | None) -> tuple[list[tuple[str, str]], bool]:
    """(display name, address) of each address readable in a header, and whether some
    address in it could not be read."""
    header = mime.decoded(name, raw)
    try:
        groups = header.addresses if header is not None else ()
    except Exception:
        return [], True
    found, unreadable = [], False
    unfolded = mime.one_line(raw or "", mime.MAX_HEADER_CHARS).lower()
    for address in groups:
        normal = _address(address, unfolded)
        if normal is None:
            unreadable = True
            continue
        found.append((mime.one_line(str(address.display_name or ""), 200), normal))
    return found, unreadable


def _address(address: object, unfolded_raw: str) -> str | None:
    """`local@domain`, domain lower-cased in IDNA form; None for an address that is not
    plainly written in the header (an encoded word decoded into the local part, say)."""
    try:
        local, domain = str(address.username), str(address.domain)
        spec = str(address.addr_spec)
    except Exception:
        return None
    if not local or not domain or "@" in local or "@" in domain \
            or any(char in local + domain for char in " \t<>,;()[]\\\"") \
            or "=?" in local or "=?" in domain:
        return None
    written = f"{local}@{domain}".lower()
    if written not in unfolded_raw and spec.lower() not in unfolded_raw:
        return None
    try:
        ascii_domain = domain.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    return f"{local}@{ascii_domain}"


def _from(message: Message) -> tuple[list[str], str | None]:
    addresses: list[str] = []
    name = None
    for raw in mime.raw_headers(message, "from")[:5]:
        found, _ = _addresses("from", raw)
        for display_name, address in found:
            if name is None:
                name = display_name or None
            addresses.append(address)
    return addresses, name


def _recipients(message: Message) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for header in _RECIPIENT_HEADERS:
        for raw in mime.raw_headers(message, header)[:20]:
            for _, address in _addresses("to", raw)[0]:
                if len(seen) < 500:
                    seen.setdefault(address, None)
    return tuple(seen)


def _envelope_sender(raw: str | None) -> str | None:
    """The topmost Return-Path (the delivering server's): "" for <>, else its address."""
    if raw is None:
        return None
    return mime.one_line(raw, 500).strip().strip("<>").strip().lower()


def _date(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(mime.one_line(raw, 200))
    except Exception:
        return None
    if when is None:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)

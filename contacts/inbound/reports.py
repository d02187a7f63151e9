"""Reports about mail Lifeline sent: delivery status notifications (RFC 3464) and abuse
reports (ARF, RFC 5965), read from their machine-readable parts; the common bounces that
only name their failed recipients in `X-Failed-Recipients` are read too."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from contacts.inbound import mime
from contacts.inbound.message import Report

MAX_RECIPIENTS = 100  # entries of one report kept
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID_LINE = re.compile(r"(?im)^message-id:[ \t]*(<[^<>\s]{1,500}>)")
_ACTIONS = {"failed": "failed", "failure": "failed", "delayed": "delayed", "delay": "delayed",
            "delivered": "delivered", "relayed": "relayed", "expanded": "expanded"}
_DAEMON = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.IGNORECASE)


@dataclass(frozen=True)
class ReadReport:
    report_type: str | None = None
    reports: tuple[Report, ...] = ()
    reported_message_id: str | None = None
    # The envelope sender the reported message was sent with, when the report says it (an
    # abuse report's Original-Mail-From): Lifeline's VERP return path names the message.
    reported_return_path: str | None = None


def read_report(message: Message, sender_address: str | None) -> ReadReport:
    """What `message` reports, if it is a report: its type, one `Report` per recipient (or
    the complaint), and the Message-ID of the message it is about."""
    report = _find_report(message)
    if report is not None:
        kind = mime.param(report, "report-type")
        if kind == "delivery-status":
            return _delivery_status(report)
        if kind == "feedback-report":
            return _feedback_report(report)
    return _failed_recipients(message, sender_address)


def _find_report(message: Message) -> Message | None:
    for part, _ in mime.walk(message):
        if mime.content_type(part) == "multipart/report":
            return part
    return None


def _children(report: Message, *kinds: str) -> list[Message]:
    return [part for part in mime.subparts(report) if mime.content_type(part) in kinds]


def _delivery_status(report: Message) -> ReadReport:
    entries: list[Report] = []
    original_id = None
    for status in _children(report, "message/delivery-status", "message/global-delivery-status"):
        blocks = _field_blocks(status)
        if blocks:
            original_id = original_id or mime.first_message_id(
                mime.raw_header(blocks[0], "x-original-message-id"))
        for block in blocks:
            entry = _recipient_entry(block)
            if entry is not None and len(entries) < MAX_RECIPIENTS:
                entries.append(entry)
    if not entries:
        return ReadReport()
    return ReadReport("delivery-status", tuple(entries),
                      _reported_message_id(report) or original_id)


def _field_blocks(part: Message) -> list[Message]:
    """The groups of fields of a delivery-status or feedback-report part: parsed by the
    standard parser as messages of headers, or (encoded, say) read here from its text."""
    blocks = mime.subparts(part)
    if blocks:
        return blocks
    text = mime.text_of(part, 200_000)
    chunks = re.split(r"\n[ \t]*\n", text)[:MAX_RECIPIENTS + 1]
    return [block for block in map(_headers_of, chunks) if block is not None]


def _headers_of(text: str) -> Message | None:
    try:
        return HeaderParser().parsestr(text.strip() + "\n", headersonly=True)
    except Exception:  # unreadable headers tell nothing
        return None


def _recipient_entry(block: Message) -> Report | None:
    action_raw = mime.raw_header(block, "action")
    recipient = _address_field(mime.raw_header(block, "final-recipient")) \
        or _address_field(mime.raw_header(block, "original-recipient"))
    if action_raw is None and recipient is None:
        return None  # the per-message group (Reporting-MTA, Arrival-Date)
    words = mime.one_line(action_raw or "", 100).lower().split()
    action = _ACTIONS.get(words[0], words[0][:20]) if words else "failed"
    status_raw = mime.raw_header(block, "status") or ""
    status = _STATUS.search(status_raw)
    diagnostic = mime.raw_header(block, "diagnostic-code")
    return Report(action=action, recipient=recipient,
                  status=".".join(status.groups()) if status else None,
                  diagnostic=mime.one_line(diagnostic, 1000) if diagnostic else None)


def _address_field(value: str | None) -> str | None:
    """The address of `rfc822; anne.person@dom.ain` (the type before the semicolon)."""
    if not value:
        return None
    value = mime.one_line(value, 500)
    if ";" in value:
        value = value.split(";", 1)[1]
    value = value.strip().strip("<>").strip()
    return _address(value)


def _address(value: str) -> str | None:
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or any(c in value for c in " <>,;\"'"):
        return None
    try:
        domain = domain.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        domain = domain.rstrip(".").casefold()
    return f"{local}@{domain}"


def _feedback_report(report: Message) -> ReadReport:
    feedback = _children(report, "message/feedback-report")
    if not feedback:
        return ReadReport()
    blocks = _field_blocks(feedback[0])
    fields = blocks[0] if blocks else Message()
    feedback_type = mime.one_line(mime.raw_header(fields, "feedback-type") or "", 40).lower()
    recipient = None
    for name in ("original-rcpt-to", "removal-recipient"):
        recipient = recipient or _address_field(mime.raw_header(fields, name))
    if recipient is None:
        for attached in _attached_messages(report):
            recipient = _first_address(mime.raw_header(attached, "to"))
            if recipient:
                break
    entry = Report(action="complaint", recipient=recipient,
                   feedback_type=feedback_type or None)
    return ReadReport("feedback-report", (entry,), _reported_message_id(report),
                      _address_field(mime.raw_header(fields, "original-mail-from")))


def _first_address(raw: str | None) -> str | None:
    header = mime.decoded("to", raw)
    try:
        addresses = header.addresses if header is not None else ()
        return _address(addresses[0].addr_spec) if addresses else None
    except Exception:  # an unreadable To names nobody
        return None


def _attached_messages(report: Message) -> list[Message]:
    messages = []
    for part in _children(report, "message/rfc822", "message/global"):
        messages.extend(mime.subparts(part)[:1])
    for part in _children(report, "text/rfc822-headers", "message/rfc822-headers"):
        headers = _headers_of(mime.text_of(part, 200_000))
        if headers is not None:
            messages.append(headers)
    return messages


def _reported_message_id(report: Message) -> str | None:
    for attached in _attached_messages(report):
        found = mime.first_message_id(mime.raw_header(attached, "message-id"))
        if found:
            return found
    # An attached message the parser could not split (an mbox "From " line first, say).
    for part in _children(report, "message/rfc822", "text/rfc822-headers", "message/global"):
        text = _as_text(part)
        match = _MESSAGE_ID_LINE.search(text)
        if match:
            return match.group(1)
    return None


def _as_text(part: Message) -> str:
    inner = mime.subparts(part)
    source = inner[0] if inner else part
    try:
        if inner:
            body = source.get_payload()
            return "\n".join(f"{key}: {value}" for key, value in source.raw_items()) \
                + "\n" + (body[:200_000] if isinstance(body, str) else "")
        return mime.text_of(part, 200_000)
    except Exception:
        return ""


def _failed_recipients(message: Message, sender_address: str | None) -> ReadReport:
    """A bounce that is no RFC 3464 report but comes from a mailer daemon and lists its
    failed recipients in `X-Failed-Recipients` (Exim, older Gmail)."""
    if not sender_address or not _DAEMON.match(sender_address):
        return ReadReport()
    entries = []
    for value in mime.raw_headers(message, "x-failed-recipients"):
        for item in mime.one_line(value, 5000).split(","):
            address = _address(item.strip().strip("<>"))
            if address and len(entries) < MAX_RECIPIENTS:
                entries.append(Report(action="failed", recipient=address))
    if not entries:
        return ReadReport()
    return ReadReport("delivery-status", tuple(entries), _returned_message_id(message))


def _returned_message_id(message: Message) -> str | None:
    """The Message-ID line of the returned message quoted in a plain-text bounce."""
    for part, _ in mime.walk(message, into_messages=True):
        if mime.content_type(part) in ("text/plain", "message/rfc822", "text/rfc822-headers"):
            match = _MESSAGE_ID_LINE.search(_as_text(part))
            if match:
                return match.group(1)
    return None

"""An inbound email as the rest of Lifeline sees it, once parsed (`parsing.parse`): plain
values, no database, nothing sealed yet (the router seals what it stores)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int  # bytes, decoded
    data: bytes | None  # None: over `[inbound] attachment_max_bytes`, dropped


@dataclass(frozen=True)
class Report:
    """One recipient's entry of a delivery status notification (RFC 3464), or one abuse
    report (ARF, RFC 5965: action "complaint")."""

    action: str  # failed, delayed, delivered, relayed, expanded, complaint
    recipient: str | None  # Final-Recipient (or Original-Recipient), an address
    status: str | None = None  # "5.1.1"
    diagnostic: str | None = None  # Diagnostic-Code, as given
    feedback_type: str | None = None  # ARF: abuse, fraud, ...


@dataclass(frozen=True)
class Sender:
    """Who sent it, and whether the receiving server vouches for it."""

    address: str | None  # From:, lower-cased domain, None when unreadable
    name: str | None
    # DMARC pass for the From domain, or an aligned DKIM pass, from a trusted authserv-id.
    verified: bool
    how: str | None = None  # "dmarc", "dkim" or None
    # DMARC fail for the From domain, from a trusted authserv-id: a forged From, so
    # nothing is sent to it (no receipt to an address that never wrote).
    refuted: bool = False


@dataclass(frozen=True)
class Inbound:
    message_id: str | None  # "<...@...>", as in the header
    sender: Sender
    # To, Cc, Delivered-To, X-Original-To: every address it reached us at.
    recipients: tuple[str, ...]
    subject: str
    date: datetime | None  # aware
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    text: str  # the whole text (text/plain, else the HTML's text)
    shown: str  # the text without quoted history and signature, for display
    html: str | None  # sanitized for display (nh3), no remote images
    attachments: tuple[Attachment, ...] = ()
    # Why it is an automatic message (RFC 3834 Auto-Submitted, X-Autoreply, Precedence,
    # an out-of-office subject), None for a person's.
    automatic: str | None = None
    # "delivery-status" (RFC 3464) or "feedback-report" (ARF) for reports, else None.
    report_type: str | None = None
    reports: tuple[Report, ...] = ()
    # The Message-ID of the message a report is about (its attached headers), if given.
    reported_message_id: str | None = None
    # The envelope sender of the message a report is about, if it says (ARF's
    # Original-Mail-From): Lifeline's VERP return path, which names the outbox message.
    reported_return_path: str | None = None
    # The envelope sender the delivering server recorded (the topmost Return-Path): "" for
    # the null one (<>) that delivery reports are sent with, None when there is none.
    envelope_sender: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

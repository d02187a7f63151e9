"""An inbound email at rest: what the router keeps of a parsed message, sealed like every
other piece of personal data (the subject, the text as written and as shown, the sanitized
HTML, each attachment), with the sender found by a keyed digest only; and what staff pages
read back: one message whole, an attachment (audited by the caller), an account's mail."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from contacts.core.crypto import FieldCipher
from contacts.core.db import get_or_404
from contacts.core.errors import NotFound
from contacts.inbound.message import Inbound
from contacts.inbound.models import (
    ATTACHMENT_DATA,
    ATTACHMENT_FILENAME,
    INBOUND_HTML,
    INBOUND_SHOWN,
    INBOUND_SUBJECT,
    INBOUND_TEXT,
    InboundAttachment,
    InboundMessage,
)

SUBJECT_MAX = 998  # characters: a header line's length


def seal(session: Session, row: InboundMessage, message: Inbound, *, cipher: FieldCipher,
         sender_index: str | None) -> list[InboundAttachment]:
    """Fill the row from the parsed message and add its attachments (those over the cap
    as a note of their name and size, without their bytes)."""
    row.sender_index = sender_index
    row.sender_verified = message.sender.verified
    row.automatic = (message.automatic or None) and message.automatic[:24]
    row.subject_encrypted = cipher.encrypt(message.subject[:SUBJECT_MAX],
                                           context=INBOUND_SUBJECT)
    row.text_encrypted = cipher.encrypt(message.text, context=INBOUND_TEXT)
    row.shown_encrypted = cipher.encrypt(message.shown, context=INBOUND_SHOWN)
    row.html_encrypted = cipher.encrypt(message.html, context=INBOUND_HTML) \
        if message.html else None
    session.add(row)
    session.flush()  # the message's row before its attachments'
    attachments = [InboundAttachment(
        message_id=row.id, content_type=attachment.content_type[:127], size=attachment.size,
        filename_encrypted=cipher.encrypt(attachment.filename or "attachment",
                                          context=ATTACHMENT_FILENAME),
        dropped=attachment.data is None,
        data_encrypted=None if attachment.data is None else cipher.encrypt(
            base64.b64encode(attachment.data).decode("ascii"), context=ATTACHMENT_DATA))
        for attachment in message.attachments]
    session.add_all(attachments)
    return attachments


def dropped_lately(*, session: Session, sender_index: str, since: datetime,
                   other_than: str) -> bool:
    """Whether another email of this sender since `since` had an attachment dropped (and
    so its sender a note about it)."""
    return session.exec(select(InboundMessage.id).join(
        InboundAttachment, col(InboundAttachment.message_id) == col(InboundMessage.id)).where(
        InboundMessage.sender_index == sender_index, InboundMessage.id != other_than,
        col(InboundMessage.stored_at) >= since, col(InboundAttachment.dropped).is_(True),
        col(InboundMessage.outcome).in_(("reply", "request"))).limit(1)).first() is not None


@dataclass(frozen=True)
class Attached:
    number: int  # its row ID, for the download link
    filename: str
    content_type: str
    size: int
    dropped: bool


@dataclass(frozen=True)
class MessageView:
    """One inbound email as a staff page shows it."""

    row: InboundMessage
    subject: str
    text: str
    shown: str
    html: str | None
    attachments: list[Attached]


def message_view(*, session: Session, cipher: FieldCipher, message_id: str) -> MessageView:
    row = get_or_404(session, InboundMessage, message_id, "inm",
                     "There is no inbound email with this ID.")

    def opened(value: str | None, context: str) -> str:
        return cipher.decrypt(value, context=context) if value else ""

    attachments = [Attached(item.id, opened(item.filename_encrypted, ATTACHMENT_FILENAME),
                            item.content_type, item.size, item.dropped)
                   for item in session.exec(select(InboundAttachment)
                                            .where(InboundAttachment.message_id == row.id)
                                            .order_by(InboundAttachment.id))]
    return MessageView(row, opened(row.subject_encrypted, INBOUND_SUBJECT),
                       opened(row.text_encrypted, INBOUND_TEXT),
                       opened(row.shown_encrypted, INBOUND_SHOWN),
                       opened(row.html_encrypted, INBOUND_HTML) or None, attachments)


def attachment_bytes(*, session: Session, cipher: FieldCipher, message_id: str,
                     number: int) -> tuple[str, str, bytes]:
    """(file name, content type, bytes) of a stored attachment of a message."""
    item = session.get(InboundAttachment, number)
    if item is None or item.message_id != message_id or item.data_encrypted is None:
        raise NotFound("There is no such attachment on this email.")
    return (cipher.decrypt(item.filename_encrypted, context=ATTACHMENT_FILENAME), item.content_type,
            base64.b64decode(cipher.decrypt(item.data_encrypted, context=ATTACHMENT_DATA)))


@dataclass(frozen=True)
class Received:
    """An inbound email on an account's timeline: what it was and where it went."""

    id: str
    at: datetime
    outcome: str | None
    thread_kind: str | None
    thread_id: str | None
    request_id: str | None
    item_id: str | None
    from_party: bool | None


def account_mail(*, session: Session, account_id: str, limit: int = 200) -> list[Received]:
    return [Received(row.id, row.stored_at, row.outcome, row.thread_kind, row.thread_id,
                     row.request_id, row.item_id, row.sender_is_party)
            for row in session.exec(select(InboundMessage)
                                    .where(InboundMessage.account_id == account_id)
                                    .order_by(col(InboundMessage.stored_at).desc())
                                    .limit(limit))]

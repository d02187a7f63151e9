"""An item's emails to its requester contact, as one thread: each keyed by the history event
it carries (a reply, or the status event of a resolution that tells them), so its Message-ID
is computed from the item's events with no lookup; answers go to the item's signed reply
address, and each email names the item's earlier ones (In-Reply-To, References). An item
born of a request answers through the request's own thread instead (intake)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, or_, select

from contacts.core.audit import Actor
from contacts.core.errors import NotFound
from contacts.core.mail import SUPPORT_LIST_ID
from contacts.delivery import outbox
from contacts.escalations.desk import SupportDesk
from contacts.escalations.models import EVENT_MESSAGE_REF, ItemEvent, WorkItem
from contacts.vault import service as vault_service

# The first email and the latest ones are named (RFC 5322 3.6.4 lets References be trimmed).
REFERENCES_KEPT = 10
RESOLVED = "-> resolved"


def reply_key(item_id: str, event_id: int) -> str:
    return f"item-reply:{item_id}:{event_id}"


def thread_events(session: Session, item_id: str) -> list[int]:
    """The IDs of the item's events that may have emailed its requester contact, oldest
    first: its replies and its resolutions (a resolution tells the requester when it came
    with a note; keys of emails never sent name nothing and are harmless)."""
    return list(session.exec(select(ItemEvent.id).where(
        ItemEvent.item_id == item_id,
        or_(ItemEvent.kind == "reply",
            (ItemEvent.kind == "status") & col(ItemEvent.detail).endswith(RESOLVED)
            & col(ItemEvent.body_encrypted).is_not(None)))
        .order_by(col(ItemEvent.id))))


def thread_message_ids(*, session: Session, desk: SupportDesk, item: WorkItem) -> set[str]:
    """The Message-IDs Lifeline made for the emails of an item to its requester contact."""
    return {outbox.message_id_for(reply_key(item.id, event_id), desk.mail_domain)
            for event_id in thread_events(session, item.id)}


def customer_ids(session: Session, desk: SupportDesk, item_id: str,
                 before: int) -> list[tuple[int, str]]:
    """(event ID, Message-ID) of the requester's emails on the item before an event."""
    return [(event_id, desk.open(sealed, EVENT_MESSAGE_REF)) for event_id, sealed in session.exec(
        select(ItemEvent.id, ItemEvent.message_ref_encrypted).where(
            ItemEvent.item_id == item_id, ItemEvent.kind == "customer_reply",
            col(ItemEvent.message_ref_encrypted).is_not(None), ItemEvent.id < before))]


def thread_headers(desk: SupportDesk, item: WorkItem, earlier: list[int],
                   theirs: list[tuple[int, str]] = ()) -> dict[str, str]:
    """Reply-To naming the item; In-Reply-To/References naming the item's earlier emails
    (Lifeline's, by event, and the requester's own `theirs`), in the order they came."""
    headers = {"Reply-To": desk.mail.reply_address("item", item.id)}
    named = [message_id for _, message_id in sorted(
        [(event_id, outbox.message_id_for(reply_key(item.id, event_id), desk.mail_domain))
         for event_id in earlier] + list(theirs))]
    if named:
        kept = named[:1] + named[1:][-(REFERENCES_KEPT - 1):]
        headers |= {"In-Reply-To": kept[-1], "References": " ".join(kept)}
    return headers


def tell_requester(session: Session, desk: SupportDesk, actor: Actor, item: WorkItem,
                   body: str, now: datetime, event: ItemEvent) -> None:
    """Email `body` to the item's requester: through its request when it has one, else to
    its requester contact, keyed by `event` (the history event that records it)."""
    if item.request_id:
        desk.neighbours.reply_to_request(session, actor, item.request_id, body, now)
        return
    try:
        contact = vault_service.get_contact(session=session,
                                            contact_id=item.requester_contact_id)
    except NotFound:  # purged from the vault since: nobody left to tell
        return
    if contact.deleted_at is not None:
        return
    if event.id is None:
        session.flush()
    earlier = [event_id for event_id in thread_events(session, item.id) if event_id < event.id]
    theirs = customer_ids(session, desk, item.id, event.id)
    view = vault_service.contact_view(session=session, vault=desk.vault, contact=contact)
    subject, text, html = desk.render("item_reply", view.locale, {
        "item_id": item.id, "reply": body,
        "contact_link": f"{desk.base_url}/contact"})
    outbox.enqueue_email(session=session, cipher=desk.crypto.cipher,
                         key=reply_key(item.id, event.id), purpose="item_reply",
                         topic=outbox.Topic("item", item.id, "contact", contact.id,
                                            item.account_id),
                         now=now,
                         email=outbox.Email(to=view.email, subject=subject, text=text,
                                            html=html, headers={
                                                "List-Id": SUPPORT_LIST_ID,
                                                **thread_headers(desk, item, earlier,
                                                                 theirs)}))

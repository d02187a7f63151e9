"""Email subscriptions from the public status page (double opt-in): the signed confirm and
stop links, subscribing, and following a link; the one-click unsubscribe link (RFC 8058) of
the emails a subscriber receives, and its headers."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from contacts.core import links
from contacts.core.crypto import Crypto, normalize_email
from contacts.core.errors import Invalid, NotFound
from contacts.delivery import outbox
from contacts.incidents.desk import CommsDesk
from contacts.incidents.messages import language_of
from contacts.incidents.models import SUBSCRIBER_EMAIL, Subscriber

SUBSCRIPTION_DAYS = 7
# A one-click unsubscribe link works this long after its email was queued: longer than
# anyone keeps acting on an old update, short enough that a leaked link dies.
UNSUBSCRIBE_DAYS = 365
UNSUBSCRIBE_PURPOSE = "status-one-click-unsubscribe"


ACTIONS = ("confirm", "stop")


def _purpose(action: str) -> str:
    return f"status-subscription-{action}"


def subscription_link(desk: CommsDesk, subscriber_id: int, action: str) -> str:
    token = links.seal(desk.secret_key, _purpose(action), subscriber_id)
    return f"{desk.base_url}/status/subscription/{action}/{token}"


def unsubscribe_link(desk: CommsDesk, subscriber_id: int) -> str:
    """The URL of `List-Unsubscribe` and of the stop link in the bodies: a GET shows a
    button, a POST (the mailbox provider's, or the button's) unsubscribes."""
    token = links.seal(desk.secret_key, UNSUBSCRIBE_PURPOSE, subscriber_id)
    return f"{desk.base_url}/status/unsubscribe/{subscriber_id}/{token}"


def unsubscribe_headers(link: str) -> dict[str, str]:
    """RFC 8058 one-click: the https link only. No mailto: nothing reads mail sent to us."""
    return {"List-Unsubscribe": f"<{link}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def check_unsubscribe_token(desk: CommsDesk, subscriber_id: int, token: str) -> None:
    """Invalid unless `token` is this subscriber's one-click token and not too old."""
    sealed_for = links.unseal(
        desk.secret_key, UNSUBSCRIBE_PURPOSE, token, max_age=timedelta(days=UNSUBSCRIBE_DAYS),
        expired="This link has expired. Use the link of a recent email, or subscribe "
                "and stop again from the status page.",
        invalid="This link is not valid.")
    if sealed_for != subscriber_id:
        raise Invalid("This link is not valid.")


def unsubscribe_in_one_click(*, session: Session, desk: CommsDesk, subscriber_id: int,
                             token: str, now: datetime) -> None:
    """Stop the subscription the token was made for; again is a no-op (providers retry)."""
    check_unsubscribe_token(desk, subscriber_id, token)
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise Invalid("This subscription no longer exists.")
    if subscriber.unsubscribed_at is None:
        subscriber.unsubscribed_at = now
        session.add(subscriber)


def subscriber_of(*, session: Session, crypto: Crypto, address: str) -> int | None:
    """The subscriber with this address (by its keyed digest, in any spelling), if any."""
    try:
        index = crypto.index.digest("subscriber", normalize_email(address))
    except Invalid:
        return None
    return session.exec(select(Subscriber.id).where(Subscriber.email_index == index)).first()


def stop_after_complaint(*, session: Session, subscriber_id: int, now: datetime) -> bool:
    """A subscriber whose mailbox provider reported our email as abuse (an ARF report) is
    sent nothing more, as after a one-click unsubscribe. True when it was still subscribed."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.unsubscribed_at is not None:
        return False
    subscriber.unsubscribed_at = now
    session.add(subscriber)
    return True


def subscribe(*, session: Session, desk: CommsDesk, email: str, locale: str,
              now: datetime) -> None:
    """Email the address once a day at most: a confirmation link for a new, pending or
    stopped subscription (nothing else is sent until it is followed), the stop link for one
    already confirmed. Either way one email is queued, so the page's answer, and the work
    behind it (the same sealing, the same one upsert, the same outbox row), do not tell
    whether the address was subscribed."""
    subscriber_id, confirmed_at, unsubscribed_at = _touch_subscriber(
        session, desk, email=email, locale=locale, now=now)
    subscribed = confirmed_at is not None and unsubscribed_at is None
    headers = {}
    if subscribed:
        stop = unsubscribe_link(desk, subscriber_id)
        headers = unsubscribe_headers(stop)
        purpose, text = "subscription_reminder", (
            "Someone (we hope you) asked to receive incident updates at this address. It "
            "already receives them: nothing changes.\n"
            f"To stop them: {stop}\n\n"
            "If it was not you, ignore this email.\n")
    else:
        purpose, text = "subscription_confirm", (
            "Someone (we hope you) asked to receive incident updates at this address.\n"
            f"Confirm within {SUBSCRIPTION_DAYS} days: "
            f"{subscription_link(desk, subscriber_id, 'confirm')}\n\n"
            "If it was not you, ignore this email: nothing else will be sent.\n")
    outbox.enqueue_email(
        session=session, cipher=desk.crypto.cipher, purpose=purpose, now=now,
        key=f"subscribe:{subscriber_id}:{now.date().isoformat()}",
        topic=outbox.Topic("subscription", str(subscriber_id), "subscriber", str(subscriber_id)),
        email=outbox.Email(to=email, subject="Incident updates by email", text=text,
                           headers=headers))


def _touch_subscriber(session: Session, desk: CommsDesk, *, email: str, locale: str,
                      now: datetime) -> tuple[int, datetime | None, datetime | None]:
    """The address's subscriber row, added if new, in one INSERT ... ON CONFLICT that
    returns it either way (a known address's row is left as it was): its id and state."""
    index = desk.crypto.index.digest("subscriber", normalize_email(email))
    table = Subscriber.__table__
    dialect = session.get_bind().dialect.name
    upsert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table).values(
        email_index=index, locale=language_of(locale), created_at=now,
        email_encrypted=desk.crypto.cipher.encrypt(email, context=SUBSCRIBER_EMAIL))
    upsert = upsert.on_conflict_do_update(
        index_elements=[table.c.email_index],
        set_={"email_index": upsert.excluded.email_index},  # a no-op: the same write
    ).returning(table.c.id, table.c.confirmed_at, table.c.unsubscribed_at)
    subscriber_id, confirmed_at, unsubscribed_at = session.execute(upsert).one()
    return subscriber_id, confirmed_at, unsubscribed_at


def follow_subscription_link(*, session: Session, desk: CommsDesk, action: str, token: str,
                             now: datetime) -> None:
    """Confirm a subscription (links last a week) or end one (links last forever)."""
    if action not in ACTIONS:
        raise NotFound("There is nothing at this address.")
    subscriber_id = links.unseal(
        desk.secret_key, _purpose(action), token,
        max_age=timedelta(days=SUBSCRIPTION_DAYS) if action == "confirm" else None,
        expired="This link has expired. Subscribe again on the status page.",
        invalid="This link is not valid.")
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise Invalid("This subscription no longer exists.")
    if action == "confirm":
        subscriber.confirmed_at, subscriber.unsubscribed_at = now, None
    else:
        subscriber.unsubscribed_at = now
    session.add(subscriber)

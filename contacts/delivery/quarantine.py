"""Webhook quarantine: an endpoint a message failed to for good (after every retry) stops
receiving messages until staff save it again."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.delivery import outbox
from contacts.delivery.models import AccountWebhook


def quarantine_failing_webhooks(*, session: Session, now: datetime) -> list[str]:
    """Endpoints a message failed for good to (after every retry) stop receiving updates
    until staff save them again; returns their account IDs."""
    quarantined = []
    active = list(session.exec(select(AccountWebhook).where(
        col(AccountWebhook.quarantined_at).is_(None))))
    if not active:
        return quarantined
    failed = outbox.failed_since(session=session, channel="webhook",
                                 since=min(webhook.created_at for webhook in active))
    for webhook in active:
        if any(message.key.endswith(f":{webhook.account_id}:webhook")
               and message.created_at >= webhook.created_at for message in failed):
            webhook.quarantined_at = now
            session.add(webhook)
            audit.record(session, Actor.system("delivery"), "webhook.quarantined",
                         target_kind="account", target_id=webhook.account_id)
            quarantined.append(webhook.account_id)
    return quarantined

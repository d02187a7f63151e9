"""Webhook quarantine: an endpoint a message failed to for good (after every retry) stops
receiving messages until staff save it again."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.delivery import ledger
from contacts.delivery.models import AccountWebhook


def quarantine_failing_webhooks(*, session: Session, now: datetime) -> list[str]:
    """Endpoints a message failed for good to (after every retry) stop receiving updates
    until staff save them again; returns their account IDs."""
    quarantined = []
    active = list(session.exec(select(AccountWebhook).where(
        col(AccountWebhook.quarantined_at).is_(None))))
    if not active:
        return quarantined
    failed = ledger.failed_to_webhooks_since(
        session=session, since=min(webhook.created_at for webhook in active))
    for webhook in active:
        if any(account_id == webhook.account_id and created_at >= webhook.created_at
               for account_id, created_at in failed):
            webhook.quarantined_at = now
            session.add(webhook)
            audit.record(session, Actor.system("delivery"), "webhook.quarantined",
                         target_kind="account", target_id=webhook.account_id)
            quarantined.append(webhook.account_id)
    return quarantined

"""Webhook quarantine: an endpoint a message failed to for good (after every retry) stops
receiving messages until staff save it again."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.delivery import ledger
from contacts.delivery.models import WebhookEndpoint


def quarantine_failing_webhooks(*, session: Session, now: datetime) -> list[str]:
    """Endpoints a message failed for good to (after every retry) since they were saved stop
    receiving updates until staff save them again; returns their account IDs."""
    quarantined = []
    active = list(session.exec(select(WebhookEndpoint).where(
        col(WebhookEndpoint.quarantined_at).is_(None))))
    if not active:
        return quarantined
    failed = ledger.last_webhook_failures(
        session=session, since=min(endpoint.created_at for endpoint in active))
    for endpoint in active:
        if endpoint.id in failed and failed[endpoint.id] >= endpoint.created_at:
            endpoint.quarantined_at = now
            session.add(endpoint)
            audit.record(session, Actor.system("delivery"), "webhook.quarantined",
                         target_kind="account", target_id=endpoint.account_id,
                         endpoint=endpoint.id)
            quarantined.append(endpoint.account_id)
    return quarantined

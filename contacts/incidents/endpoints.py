"""Accounts' webhook endpoints: register (the URL checked: public internet only), list,
rotate the signing secret, and ping; for the console and the API alike. A secret is
returned once, when made; the table holds it sealed."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from contacts.core import audit
from contacts.core.audit import Actor
from contacts.core.db import in_chunks
from contacts.core.errors import NotFound
from contacts.core.ids import new_id, parse_id
from contacts.delivery import webhook_client, webhook_lane
from contacts.delivery.models import WEBHOOK_SECRET, WebhookEndpoint
from contacts.delivery.webhook import WebhookFailed, check_endpoint
from contacts.incidents.desk import CommsDesk
from contacts.vault import service as vault_service


@dataclass(frozen=True)
class Ping:
    delivered: bool
    error: str | None  # what the attempt met, in the words the outbox would record


def register_endpoint(*, session: Session, desk: CommsDesk, actor: Actor, account_id: str,
                      url: str, now: datetime) -> tuple[WebhookEndpoint, str]:
    """A new endpoint for the account, or the account's endpoint at this very URL saved
    again (a new secret, out of quarantine); returns it and its secret, shown once. A URL
    that is not on the public internet is refused (RefusedEndpoint, an Invalid naming why)."""
    account = vault_service.get_account(session=session, account_id=account_id)
    url = url.strip()
    check_endpoint(url, desk.webhooks)
    endpoint = session.exec(select(WebhookEndpoint).where(
        WebhookEndpoint.account_id == account.id, WebhookEndpoint.url == url)).first()
    if endpoint is None:
        endpoint = WebhookEndpoint(id=new_id("whk"), account_id=account.id, url=url,
                                   secret_encrypted="", created_by="", created_at=now)
    secret = _new_secret(desk, endpoint)
    endpoint.created_by, endpoint.created_at = actor.id or actor.kind, now
    endpoint.quarantined_at = None
    session.add(endpoint)
    audit.record(session, actor, "webhook.set", target_kind="account", target_id=account.id,
                 endpoint=endpoint.id)
    return endpoint, secret


def _new_secret(desk: CommsDesk, endpoint: WebhookEndpoint) -> str:
    secret = webhook_lane.new_secret()
    endpoint.secret_encrypted = desk.crypto.cipher.encrypt(secret, context=WEBHOOK_SECRET)
    return secret


def endpoints(*, session: Session, account_id: str | None = None) -> list[WebhookEndpoint]:
    """Every endpoint, or one account's (an unknown account: NotFound)."""
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.account_id,
                                             WebhookEndpoint.created_at, WebhookEndpoint.id)
    if account_id is not None:
        account = vault_service.get_account(session=session, account_id=account_id)
        query = query.where(WebhookEndpoint.account_id == account.id)
    return list(session.exec(query))


def get_endpoint(*, session: Session, account_id: str, endpoint_id: str) -> WebhookEndpoint:
    """The account's endpoint; another account's reads as one that does not exist."""
    account_id, endpoint_id = parse_id(account_id, "acc"), parse_id(endpoint_id, "whk")
    endpoint = session.exec(select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.account_id == account_id)).first()
    if endpoint is None:
        raise NotFound("no webhook endpoint with this ID for this account")
    return endpoint


def rotate_secret(*, session: Session, desk: CommsDesk, actor: Actor, account_id: str,
                  endpoint_id: str, now: datetime) -> tuple[WebhookEndpoint, str]:
    """A new secret signs every attempt from now on, retries of earlier messages included
    (each attempt is signed when it is sent); the old one signs nothing more."""
    endpoint = get_endpoint(session=session, account_id=account_id, endpoint_id=endpoint_id)
    secret = _new_secret(desk, endpoint)
    endpoint.rotated_at = now
    session.add(endpoint)
    audit.record(session, actor, "webhook.secret_rotated", target_kind="account",
                 target_id=endpoint.account_id, endpoint=endpoint.id)
    return endpoint, secret


def ping_body(endpoint: WebhookEndpoint, now: datetime) -> str:
    return json.dumps({"type": "webhook.ping", "sent_at": now.isoformat(),
                       "endpoint": {"id": endpoint.id, "account_id": endpoint.account_id}},
                      sort_keys=True)


def ping(*, session: Session, desk: CommsDesk, actor: Actor, account_id: str,
         endpoint_id: str, now: datetime) -> Ping:
    """Send a signed `webhook.ping` now, through the lane's transport (same checks, same
    deadline), quarantined or not; what happened is answered, not retried."""
    endpoint = get_endpoint(session=session, account_id=account_id, endpoint_id=endpoint_id)
    secret = desk.crypto.cipher.decrypt(endpoint.secret_encrypted, context=WEBHOOK_SECRET)
    audit.record(session, actor, "webhook.pinged", target_kind="account",
                 target_id=endpoint.account_id, endpoint=endpoint.id)
    try:
        webhook_lane.deliver(client=webhook_client.client_for(desk.webhooks), url=endpoint.url,
                             secret=secret, message_id="msg_" + secrets.token_hex(16),
                             body=ping_body(endpoint, now))
    except WebhookFailed as exc:
        return Ping(delivered=False, error=exc.message)
    return Ping(delivered=True, error=None)


def active_endpoints(*, session: Session, account_ids: list[str]) -> list[WebhookEndpoint]:
    """The endpoints of these accounts updates go to (not quarantined), in order."""
    found = []
    for chunk in in_chunks(account_ids):
        found += session.exec(select(WebhookEndpoint).where(
            col(WebhookEndpoint.account_id).in_(chunk),
            col(WebhookEndpoint.quarantined_at).is_(None)))
    return sorted(found, key=lambda endpoint: endpoint.id)


def accounts_with_endpoints(*, session: Session, accounts) -> list[str]:
    """Of the accounts a query selects, those with an endpoint not in quarantine."""
    return list(session.exec(select(WebhookEndpoint.account_id).distinct().where(
        col(WebhookEndpoint.quarantined_at).is_(None),
        col(WebhookEndpoint.account_id).in_(accounts))).all())

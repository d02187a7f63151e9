"""The escalations' desk: what they need from settings and from the other areas, built once
per app; and an item's history, one event per change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from contacts.core.audit import Actor
from contacts.core.crypto import Crypto
from contacts.core.errors import ConfigError, Invalid
from contacts.core.mail import Renderer
from contacts.core.mailtokens import MailTokens
from contacts.escalations import sla
from contacts.escalations.models import EVENT_BODY, ItemEvent, WorkItem
from contacts.escalations.neighbours import Neighbours
from contacts.escalations.shifts import Rota
from contacts.vault import service as vault_service


@dataclass(frozen=True)
class SupportDesk:
    """What the escalations need from settings and the other domains, built once per app."""

    crypto: Crypto
    vault: vault_service.Vault
    neighbours: Neighbours
    render: Renderer
    policies: dict[int, sla.Policy]
    default_hours: str
    default_timezone: str
    at_risk_fraction: float
    rota: Rota
    handoff_idle: timedelta
    base_url: str
    # Reply-To tokens naming an item; `[mail] domain`, of the Message-IDs its emails name.
    mail: MailTokens
    mail_domain: str

    @classmethod
    def from_settings(cls, settings, crypto: Crypto, *, vault: vault_service.Vault,
                      neighbours: Neighbours, render: Renderer) -> SupportDesk:
        try:  # refuse a bad default at startup, not at the first item
            sla.BusinessHours.parse(settings.escalations_business_hours,
                                    settings.escalations_timezone)
        except Invalid as exc:
            raise ConfigError(f"escalations: {exc.message}") from None
        return cls(crypto=crypto, vault=vault,
                   neighbours=neighbours, render=render,
                   policies=sla.policies_from_settings(settings),
                   default_hours=settings.escalations_business_hours,
                   default_timezone=settings.escalations_timezone,
                   at_risk_fraction=settings.escalations_at_risk_fraction,
                   rota=Rota.parse(settings.escalations_regions,
                                   settings.escalations_region_leads),
                   handoff_idle=timedelta(minutes=settings.escalations_handoff_idle_minutes),
                   base_url=settings.app_base_url.rstrip("/"),
                   mail=MailTokens.from_settings(settings), mail_domain=settings.mail_domain)

    def seal(self, value: str, context: str) -> str:
        return self.crypto.cipher.encrypt(value, context=context)

    def open(self, value: str | None, context: str) -> str | None:
        return self.crypto.cipher.decrypt(value, context=context) if value else None


def record_event(session: Session, desk: SupportDesk, item: WorkItem, actor: Actor, kind: str,
                 now: datetime, detail: str = "", body: str | None = None) -> ItemEvent:
    event = ItemEvent(item_id=item.id, at=now, actor=actor.id or actor.kind, kind=kind,
                      detail=detail[:500],
                      body_encrypted=desk.seal(body, EVENT_BODY) if body else None)
    session.add(event)
    return event


def worked(item: WorkItem, actor: Actor, now: datetime) -> None:
    item.updated_at = now
    if actor.kind in ("staff", "token"):
        item.last_worked_at = now

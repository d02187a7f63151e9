"""The incidents' settings: what the incident modules need from configuration (stages,
links, secrets, cadence, the webhook policy), built once by the app."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from contacts.core.crypto import Crypto
from contacts.core.mailtokens import MailTokens
from contacts.delivery.webhook import WebhookPolicy


@dataclass(frozen=True)
class CommsDesk:
    """What the incident service needs from settings."""

    stages: tuple[str, ...]
    restored_stage: str
    support_url: str
    base_url: str
    secret_key: str
    default_cadence_hours: float
    templates_dir: Path
    crypto: Crypto
    webhooks: WebhookPolicy  # which endpoints an account's webhook may be set to
    # Reply-To tokens naming the contact an update was sent to (contacts' updates only).
    mail: MailTokens
    # A scheduled update goes out this long before the time it promised (never more than
    # half a cadence), so that the scheduler's run makes it on time.
    cadence_lead: timedelta = timedelta(seconds=60)
    # `[mail] domain`: the Message-IDs an update's `References` name are the mailer's.
    mail_domain: str = "lifeline"

    @classmethod
    def from_settings(cls, settings, crypto: Crypto, templates_dir: Path) -> CommsDesk:
        return cls(webhooks=WebhookPolicy.from_settings(settings),
                   stages=tuple(settings.incidents_stages),
                   restored_stage=settings.incidents_restored_stage,
                   support_url=settings.incidents_support_url,
                   base_url=settings.app_base_url.rstrip("/"),
                   secret_key=settings.secrets.secret_key,
                   default_cadence_hours=settings.incidents_default_cadence_hours,
                   templates_dir=templates_dir, crypto=crypto, mail_domain=settings.mail_domain,
                   mail=MailTokens.from_settings(settings),
                   cadence_lead=timedelta(
                       seconds=max(0, settings.incidents_cadence_lead_seconds)))

    def restored(self, stage: str) -> bool:
        return self.stages.index(stage) >= self.stages.index(self.restored_stage)

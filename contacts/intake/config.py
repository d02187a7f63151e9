"""What every intake step is given: the `Intake` (keys, base URL, code limits, the spool),
built once from the settings where the app is built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contacts.core.crypto import Crypto
from contacts.core.mailtokens import MailTokens
from contacts.intake.spool import Spool


@dataclass(frozen=True)
class Intake:
    crypto: Crypto
    secret_key: str
    base_url: str
    code_minutes: int
    code_attempts: int
    code_resends: int
    propose_score: float
    spool: Spool
    # Reply-To tokens naming a request; `[mail] domain`, of the Message-IDs its emails name.
    mail: MailTokens
    mail_domain: str

    @classmethod
    def from_settings(cls, settings, crypto: Crypto) -> Intake:
        return cls(crypto=crypto, secret_key=settings.secrets.secret_key,
                   base_url=settings.app_base_url.rstrip("/"),
                   code_minutes=settings.intake_code_minutes,
                   code_attempts=settings.intake_code_attempts,
                   code_resends=settings.intake_code_resends,
                   propose_score=settings.intake_propose_score,
                   spool=Spool(Path(settings.intake_spool_dir), crypto.cipher),
                   mail=MailTokens.from_settings(settings), mail_domain=settings.mail_domain)


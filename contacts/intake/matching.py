"""Which account a request is about: evidence from the vault, each piece with a weight and a
reason, combined into a score. Matching proposes; only proof of address (or staff) decides.

Weights are independent pieces of evidence combined as 1 - (1 - w1)(1 - w2)...: an exact
email of a contact is near-certain on its own; a shared email domain or a site name that
resembles the one remembered only adds up with other signs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from sqlmodel import Session

from contacts.core.errors import Invalid
from contacts.vault import service as vault_service

EMAIL = 0.95
PHONE = 0.8
SITE_HOSTNAME = 0.7
EMAIL_DOMAIN = 0.5
SITE_NAME = 0.6  # times the similarity
COMPANY_NAME = 0.4  # times the similarity
LEAST_SIMILARITY = 0.75
MOST_CANDIDATES = 5

# Addresses at these domains say nothing about which customer someone works for.
PUBLIC_EMAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "hotmail.fr", "live.com",
    "live.fr", "msn.com", "yahoo.com", "yahoo.fr", "ymail.com", "icloud.com", "me.com",
    "mac.com", "aol.com", "proton.me", "protonmail.com", "pm.me", "gmx.com", "gmx.de",
    "gmx.fr", "gmx.net", "web.de", "mail.com", "zoho.com", "yandex.com", "yandex.ru",
    "orange.fr", "wanadoo.fr", "free.fr", "laposte.net", "sfr.fr", "fastmail.com",
    "hey.com", "tutanota.com", "qq.com", "163.com", "naver.com",
})
WORD = re.compile(r"[a-z0-9]{3,}")


@dataclass
class Candidate:
    account_id: str
    weights: list[float] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        remaining = 1.0
        for weight in self.weights:
            remaining *= 1 - weight
        return round(1 - remaining, 3)

    def add(self, weight: float, reason: str) -> None:
        if reason not in self.reasons:
            self.weights.append(weight)
            self.reasons.append(reason)


def is_public_email_domain(domain: str) -> bool:
    return domain.lower() in PUBLIC_EMAIL_DOMAINS


def _words(text: str) -> list[str]:
    return sorted(set(WORD.findall(text.lower())) - {"www", "http", "https", "com", "net",
                                                    "org", "the"})[:8]


def _similarity(given: str, known: str) -> float:
    return SequenceMatcher(None, given.lower().strip(), known.lower().strip()).ratio()


def propose(*, session: Session, vault: vault_service.Vault, email: str, phone: str | None,
            site: str | None, company: str | None) -> list[Candidate]:
    """The accounts a request may be about, best first, at most five."""
    found: dict[str, Candidate] = {}

    def evidence(account_id: str, weight: float, reason: str) -> None:
        found.setdefault(account_id, Candidate(account_id)).add(weight, reason)

    for contact in _contacts(session, vault, email=email):
        evidence(contact.account_id, EMAIL, f"email is a {contact.role.replace('_', ' ')} "
                                            "contact of this account")
    if phone:
        for contact in _contacts(session, vault, phone=phone):
            evidence(contact.account_id, PHONE, "phone is a contact's phone")
    domain = email.rpartition("@")[2].lower()
    if not is_public_email_domain(domain):
        for contact in _contacts(session, vault, domain=domain):
            evidence(contact.account_id, EMAIL_DOMAIN, "email domain is a contact's domain")
    if site and site.strip():
        by_host = vault_service.sites_by_hostname(session=session, value=site)
        for known in by_host:
            evidence(known.account_id, SITE_HOSTNAME, f"site hostname {known.hostname}")
        if not by_host:
            for known in vault_service.sites_named_like(session=session, words=_words(site)):
                best = max(_similarity(site, known.name or ""),
                           _similarity(site, known.hostname or ""))
                if best >= LEAST_SIMILARITY:
                    evidence(known.account_id, SITE_NAME * best,
                             f"site {known.name or known.hostname!r} resembles the one given")
    if company and company.strip():
        for account in vault_service.accounts_named_like(session=session,
                                                         words=_words(company)):
            similarity = _similarity(company, account.name)
            if similarity >= LEAST_SIMILARITY:
                evidence(account.id, COMPANY_NAME * similarity,
                         "company resembles the account's name")
    ranked = sorted(found.values(), key=lambda candidate: (-candidate.score,
                                                           candidate.account_id))
    return ranked[:MOST_CANDIDATES]


def _contacts(session: Session, vault: vault_service.Vault, **given: str):
    try:
        return vault_service.find_contacts(session=session, vault=vault, **given)
    except Invalid:  # a phone that is no phone number, say: no evidence, not an error
        return []

"""The keys of the intake's rate limits. Every spelling of one mailbox is one key, and every
host under one registrable domain is one key, so a second spelling or a subdomain buys no
new budget. Keys are keyed digests: neither the limiter's storage nor its log lines hold an
address or a domain.

What is folded, for the per-email key: the address mail is sent to (email-validator's
normalized form) in Unicode compatibility form (NFKC: a decomposed `é` is the composed one,
fullwidth `ｊ` is `j`), case (the whole address, `JOSÉ` is `josé`), a plus-tag
(`same.person+x@` is `same.person@`), the domain's IDNA form and trailing dot, and for Gmail
only (gmail.com, googlemail.com) the dots of the local part, as Gmail delivers `s.a.m.e@`
to `same@`. Other providers treat dots as significant, so they are kept there. The
per-domain key is the registrable domain from the Public Suffix List (tldextract's bundled
snapshot, never fetched): `a.b.bigcorp.co.uk` is `bigcorp.co.uk`; a name under no known
suffix (`sub1.bigcorp.example`) counts by its last two labels.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import tldextract
from email_validator import EmailNotValidError, validate_email

from contacts.core.crypto import Crypto

GMAIL = ("gmail.com", "googlemail.com")
# No URL: the snapshot shipped with tldextract, no network at run time, no cache on disk.
# Private suffixes (github.io, ...) count as suffixes: their subdomains are different owners.
_SUFFIXES = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None,
                                  include_psl_private_domains=True)


def ascii_domain(domain: str) -> str:
    """The domain in lower-case IDNA (ASCII) form, without a trailing dot; as typed, folded,
    when it has no IDNA form (the key must still group its spellings)."""
    domain = domain.strip().rstrip(".")
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return domain.casefold()


def mailbox(address: str) -> str | None:
    """'Same.Person+x@ACME.example.' -> 'same.person@acme.example'; None with no address.
    Folded from the address mail goes to (validated, normalized), or, for one the intake will
    refuse anyway, from the address as typed."""
    address = address.strip()
    try:
        address = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        pass
    local, at, domain = unicodedata.normalize("NFKC", address).rpartition("@")
    if not at or not local or not domain:
        return None
    domain = ascii_domain(domain)
    local = unicodedata.normalize("NFKC", local.casefold())
    local = local.split("+", 1)[0] or local
    if domain in GMAIL:
        local, domain = local.replace(".", "") or local, GMAIL[0]
    return f"{local}@{domain}"


def registrable_domain(domain: str) -> str:
    """'sub1.bigcorp.co.uk' -> 'bigcorp.co.uk'; under no known suffix, the last two labels."""
    domain = ascii_domain(domain)
    found = _SUFFIXES(domain)
    if found.domain and found.suffix:
        return f"{found.domain}.{found.suffix}"
    return ".".join(domain.split(".")[-2:])


@dataclass(frozen=True)
class LimitKeys:
    email: str  # "intake-email:<digest of the folded mailbox>"
    domain: str  # "intake-domain:<digest of the registrable domain>"
    registrable_domain: str  # in memory only, for the webmail exemption


def limit_keys(crypto: Crypto, address: str) -> LimitKeys | None:
    """The per-email and per-domain keys of a claimed address; None with no address."""
    folded = mailbox(address)
    if folded is None:
        return None
    domain = registrable_domain(folded.rpartition("@")[2])
    return LimitKeys(email="intake-email:" + _digest(crypto, "email", folded),
                     domain="intake-domain:" + _digest(crypto, "domain", domain),
                     registrable_domain=domain)


def _digest(crypto: Crypto, kind: str, value: str) -> str:
    # Its own purpose: a limiter key never equals a blind index stored in the database.
    return crypto.index.digest(f"rate-limit-{kind}", value)[:32]

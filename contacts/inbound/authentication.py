"""Whether the receiving server vouches for the From address: its Authentication-Results
(RFC 8601, parsed with authres) say DMARC pass for the From domain, or DKIM pass for a
domain aligned with it.

Which headers count (RFC 8601 §5: a header claiming a trusted authserv-id may have come
with the message from outside; the receiving server prepends its own above everything it
received):
- By default (`[inbound] results_below_received = false`) only the headers above the
  topmost `Received:` stamped by a trusted host count: there the server puts its own
  verdict (opendkim and opendmarc milters, rspamd, Gmail, Microsoft 365 insert at the top),
  and nothing the sender wrote can be above it. Without any `Received:` by a trusted host,
  nothing counts.
- With `results_below_received`, for a server that stamps below its own `Received:`: the
  receiving side's headers end at the first `Received:` stamped by a host other than a
  trusted authserv-id below the trusted one (that is where the message came from outside);
  a server that stamped above its own `Received:` is still read only above it. Such a
  server must remove the copies of its authserv-id that arrive with a message (RFC 8601
  §5), or a sender connecting to it directly could write its own verdict there.
- Within them, only A-R headers with a trusted authserv-id count, and for each method only
  the first such header that reports it: a copy the sender placed right below the server's
  own is never read. This assumes, as opendkim/opendmarc, rspamd, Gmail and Microsoft 365
  do, that the trusted server stamps its DKIM and DMARC results on every message.
"""

from __future__ import annotations

import re
from email.message import Message

import authres
import tldextract

from contacts.inbound import mime

MAX_RESULTS_HEADERS = 50
# The Public Suffix List shipped with tldextract, never fetched; private suffixes count as
# suffixes, so two github.io sites are two organizations, never aligned.
_SUFFIXES = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None,
                                  include_psl_private_domains=True)
_COMMENT = re.compile(r"\([^()]*\)")
_BY = re.compile(r"\bby\s+\[?([A-Za-z0-9.:_-]+)\]?", re.IGNORECASE)


def sender_verified(message: Message, from_domains: list[str],
                    trusted_authserv_ids: tuple[str, ...],
                    below: bool = False) -> tuple[bool, str | None]:
    """(True, "dmarc" or "dkim") when a trusted result vouches for the one From domain;
    (False, None) otherwise, and always for none or several From addresses."""
    if len(from_domains) != 1 or not trusted_authserv_ids:
        return False, None
    try:
        return _verdict(message, _ascii(from_domains[0]), trusted_authserv_ids, below)
    except Exception:  # results we cannot read vouch for nobody
        return False, None


def sender_refuted(message: Message, from_domains: list[str],
                   trusted_authserv_ids: tuple[str, ...], below: bool = False) -> bool:
    """True when a trusted result says DMARC fail for the one From domain: the domain's
    owner disowns the message, so its From names someone who did not write it."""
    if len(from_domains) != 1 or not trusted_authserv_ids:
        return False
    try:
        domain = _ascii(from_domains[0])
        return any((result.result or "").lower() == "fail"
                   and _property(result, "header", "from") == domain
                   for result in _first_by_method(message, trusted_authserv_ids, below)
                   .get("dmarc", []))
    except Exception:  # results we cannot read refute nobody
        return False


def _first_by_method(message: Message, trusted_authserv_ids: tuple[str, ...], below: bool
                     ) -> dict[str, list[authres.core.AuthenticationResult]]:
    trusted = {_ascii(name) for name in trusted_authserv_ids}
    first_by_method: dict[str, list[authres.core.AuthenticationResult]] = {}
    for header in _receiving_side_results(message, trusted, below):
        methods = {(result.method or "").lower() for result in header.results}
        for method in methods - first_by_method.keys():
            first_by_method[method] = [result for result in header.results
                                       if (result.method or "").lower() == method]
    return first_by_method


def _verdict(message: Message, domain: str, trusted_authserv_ids: tuple[str, ...],
             below: bool) -> tuple[bool, str | None]:
    first_by_method = _first_by_method(message, trusted_authserv_ids, below)
    for result in first_by_method.get("dmarc", []):
        if (result.result or "").lower() == "pass" \
                and _property(result, "header", "from") == domain:
            return True, "dmarc"
    for result in first_by_method.get("dkim", []):
        if (result.result or "").lower() != "pass":
            continue
        signer = _property(result, "header", "d") or _property(result, "header", "i")
        if signer and _aligned(signer.rpartition("@")[2], domain):
            return True, "dkim"
    return False, None


def _receiving_side_results(message: Message, trusted: set[str],
                            below: bool) -> list[authres.AuthenticationResultsHeader]:
    found = []
    entered = False  # passed the topmost Received by a trusted host
    try:
        items = list(message.raw_items())[: mime.MAX_HEADERS]
    except Exception:  # no readable header block, no result
        return []
    for name, value in items:
        name = str(name).lower()
        if name == "received":
            host = _stamped_by(str(value))
            if host in trusted:
                if not entered and (found or not below):
                    return found  # what the server stamped above its own Received
                entered = True
            elif entered:
                break
        elif name == "authentication-results" and len(found) < MAX_RESULTS_HEADERS:
            header = _parsed(str(value))
            if header is not None and _ascii(header.authserv_id or "") in trusted:
                found.append(header)
    return found if entered else []


def _stamped_by(received: str) -> str | None:
    text = mime.one_line(received, 2000)
    for _ in range(3):  # comments nest rarely; three passes remove what matters
        text = _COMMENT.sub(" ", text)
    match = _BY.search(text.split(";", 1)[0])
    return _ascii(match.group(1)) if match else None


def _parsed(value: str) -> authres.AuthenticationResultsHeader | None:
    try:
        return authres.AuthenticationResultsHeader.parse_value(
            mime.one_line(value, mime.MAX_HEADER_CHARS))
    except Exception:  # a header authres cannot read vouches for nothing
        return None


def _property(result: authres.core.AuthenticationResult, kind: str, name: str) -> str | None:
    for prop in result.properties:
        if (prop.type or "").lower() == kind and (prop.name or "").lower() == name:
            value = str(prop.value or "").strip()
            if kind == "header" and name == "from" and "@" in value:
                value = value.rpartition("@")[2]
            return _ascii(value) if value else None
    return None


def _aligned(signer: str, domain: str) -> bool:
    """Relaxed alignment (RFC 7489 §3.1.1): the same organizational domain."""
    signer = _ascii(signer)
    return bool(signer) and _organizational(signer) == _organizational(domain)


def _organizational(domain: str) -> str:
    try:
        registered = _SUFFIXES(domain).top_domain_under_public_suffix
    except Exception:  # a name tldextract cannot split counts by its last two labels
        registered = ""
    return registered or ".".join(domain.split(".")[-2:])


def _ascii(domain: str) -> str:
    domain = domain.strip().strip(".").lower()
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return domain

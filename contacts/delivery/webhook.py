"""Which webhook endpoints may be called: public internet addresses only, checked when an
endpoint is saved and again, after one lookup, when a connection to it is made
(`webhook_client.py` makes that connection, to the checked address, within one deadline).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

from contacts.core.errors import Invalid

Address = IPv4Address | IPv6Address

# How much of an endpoint's answer is read: its status is what counts.
ANSWER_BYTES = 4096
# What a delivery report says of an endpoint refused at send time, unreachable, timed out or
# too slow: one text, so that the outbox says nothing of what lives inside the network.
UNREACHABLE = "the endpoint could not be reached or did not answer in time"

# Never reachable, whatever `is_global` of this Python version says.
_NEVER = tuple(ipaddress.ip_network(network) for network in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/96", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
    "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"))
# IPv6 prefixes that carry an IPv4 address the packets end up at: judged by that address.
_NAT64 = IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = IPv6Network("2002::/16")
_HOST_CHARACTERS = re.compile(r"^[a-z0-9_.-]+$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_FORBIDDEN_IN_URL = re.compile(r"[\x00-\x20\x7f\\]")


class RefusedEndpoint(Invalid):
    """A webhook URL that may not be called. `message` names the reason and never what a
    name resolved to."""


@dataclass(frozen=True)
class WebhookPolicy:
    """What the webhook transport is allowed: the deadline of one call, https only
    (production), and the exact private "address:port" pairs tests and local receivers use."""

    deadline_seconds: float = 10.0
    https_only: bool = False
    allow_private: frozenset[str] = frozenset()
    # Trust for https endpoints; None is the system's (tests give their own authority).
    tls: ssl.SSLContext | None = field(default=None, compare=False)

    @classmethod
    def from_settings(cls, settings) -> WebhookPolicy:
        return cls(deadline_seconds=settings.webhooks_deadline_seconds,
                   https_only=settings.is_production,
                   allow_private=frozenset(settings.webhooks_allow_private_hosts))

    def allows(self, address: Address, port: int) -> bool:
        return is_public(address) or host_port(address, port) in self.allow_private


def host_port(address: Address, port: int) -> str:
    """The "address:port" spelling of the allowance (IPv6 in brackets)."""
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def is_public(address: Address) -> bool:
    """An address on the public internet: not loopback, private, link-local, unique-local,
    multicast, unspecified, shared (CGNAT) or reserved, nor an IPv6 spelling of one."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    if any(address in network for network in _NEVER if network.version == address.version):
        return False
    return address.is_global and not (
        address.is_multicast or address.is_private or address.is_loopback
        or address.is_link_local or address.is_unspecified or address.is_reserved
        or (isinstance(address, IPv6Address) and address.is_site_local))


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFF_FFFF)
    if address in _SIX_TO_FOUR:
        return address.sixtofour
    return None


@dataclass(frozen=True)
class Endpoint:
    """A webhook URL taken apart: the host as it is looked up and named to the server (ASCII,
    no trailing dot), the port, the request target, and the address when the URL gives one."""

    scheme: str
    host: str
    port: int
    target: str
    literal: Address | None


def endpoint_for(url: str, policy: WebhookPolicy) -> Endpoint:
    """Parse a webhook URL the one way it is called; refuse what could be read two ways."""
    if _FORBIDDEN_IN_URL.search(url):
        raise RefusedEndpoint("the webhook URL must not contain spaces, control characters "
                              "or backslashes")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname or ""
    except ValueError:  # brackets that do not close, characters that normalize to "/"...
        raise RefusedEndpoint("the webhook URL's host is not a valid host name or address") \
            from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        raise RefusedEndpoint("the webhook URL must be an http:// or https:// address")
    if policy.https_only and scheme != "https":
        raise RefusedEndpoint("the webhook URL must be an https:// address")
    if "@" in parts.netloc:
        raise RefusedEndpoint("the webhook URL must not carry a user name or password")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise RefusedEndpoint("the webhook URL's port is not a valid port") from None
    host, literal = _host(parts.netloc, hostname)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Endpoint(scheme=scheme, host=host, port=port, target=target, literal=literal)


def _host(netloc: str, hostname: str) -> tuple[str, Address | None]:
    invalid = RefusedEndpoint("the webhook URL's host is not a valid host name or address")
    if netloc.startswith("["):
        if "%" in hostname:  # a zone ("%25eth0") names an interface of ours
            raise invalid
        try:
            return hostname, IPv6Address(hostname)
        except ValueError:
            raise invalid from None
    try:  # IDNA: what the resolver would be asked for (full-width digits become digits)
        host = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise invalid from None
    host = host[:-1] if host.endswith(".") else host
    if not host or not _HOST_CHARACTERS.match(host) or ".." in host:
        raise invalid  # percent-encoding, brackets, spaces: spellings a resolver may reread
    try:  # every spelling the C library reads as IPv4: 127.1, 0x7f000001, 2130706433, 0177.0.0.1
        return host, IPv4Address(socket.inet_aton(host))
    except OSError:
        pass
    if _NUMERIC_LABEL.match(host.rsplit(".", 1)[-1]):
        raise invalid  # looks like an address to some parsers and not to others
    return host, None


def check_endpoint(url: str, policy: WebhookPolicy) -> Endpoint:
    """Refuse at save time a URL that may not be called, naming why; a name is looked up and
    refused when any of its addresses is not public (or it resolves to none: the same
    answer, so that the refusal tells nothing of the names inside the network)."""
    endpoint = endpoint_for(url.strip(), policy)
    if endpoint.literal is not None:
        if not policy.allows(endpoint.literal, endpoint.port):
            raise RefusedEndpoint(f"the webhook URL's address is {_kind(endpoint.literal)}, "
                                  "not a public internet address")
        return endpoint
    try:
        addresses = resolve(endpoint, deadline=Deadline(policy.deadline_seconds))
    except OSError:
        addresses = []
    if not addresses or not all(policy.allows(address, endpoint.port)
                                for address in addresses):
        raise RefusedEndpoint("the webhook URL's host must resolve to public internet "
                              "addresses only")
    return endpoint


def _kind(address: Address) -> str:
    if isinstance(address, IPv6Address) and _embedded_ipv4(address) is not None:
        return f"{_kind(_embedded_ipv4(address))} (IPv4 inside IPv6)"
    for kind, test in (("unspecified", "is_unspecified"), ("loopback", "is_loopback"),
                       ("link-local", "is_link_local"), ("multicast", "is_multicast")):
        if getattr(address, test):
            return kind
    if isinstance(address, IPv6Address) and address in IPv6Network("fc00::/7"):
        return "unique-local"
    if address in IPv4Network("100.64.0.0/10"):
        return "shared (carrier-grade NAT)"
    return "private" if address.is_private else "reserved"


def resolve(endpoint: Endpoint, *, deadline: Deadline) -> list[Address]:
    """The endpoint's addresses, looked up once (in a thread, so the deadline bounds a slow
    resolver too)."""
    if endpoint.literal is not None:
        return [endpoint.literal]
    found: list = []

    def look_up() -> None:
        try:
            found.append(socket.getaddrinfo(endpoint.host, endpoint.port,
                                            type=socket.SOCK_STREAM))
        except OSError as exc:
            found.append(exc)

    worker = threading.Thread(target=look_up, name="webhook-resolve", daemon=True)
    worker.start()
    worker.join(deadline.remaining())
    if not found:
        raise TimeoutError("the name was not resolved in time")
    if isinstance(found[0], OSError):
        raise found[0]
    addresses: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in found[0]:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class WebhookFailed(Exception):
    """A call that failed; `permanent` when no retry could succeed (the endpoint is gone)."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message, self.permanent = message, permanent


class Deadline:
    """One delivery's time in all: every step (the lookup, the connection, TLS, each read and
    write) is given what is left of it, and none starts once it has passed, so an endpoint
    that trickles a byte a second cannot stretch the call."""

    def __init__(self, seconds: float):
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError("the webhook deadline passed")
        return left

"""Webhook transport: which endpoints may be called (public internet addresses only, checked
when an endpoint is saved and again, after one lookup, when it is called) and the signed POST
itself, to the checked address, bounded by one deadline and never redirected.

http.client rather than urllib or httpx: it lets us open the socket ourselves, to the
address we checked (the Host header and the TLS name check still use the host name), and
shut it down when the deadline passes whatever phase the call is in. urllib and httpx only
know timeouts per read, which a byte a second never trips, and would resolve the name again.
"""

from __future__ import annotations

import http.client
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
    deadline = _Deadline(policy.deadline_seconds)
    try:
        addresses = resolve(endpoint, deadline=deadline)
    except OSError:
        addresses = []
    finally:
        deadline.close()
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


def resolve(endpoint: Endpoint, *, deadline: _Deadline) -> list[Address]:
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
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def post(*, url: str, body: bytes, headers: dict[str, str], policy: WebhookPolicy) -> None:
    """POST `body` to the endpoint: one lookup, every address checked, the connection made
    to a checked address, all of it within the policy's deadline; a 3xx is a failure (the
    signature never goes anywhere else). Raises WebhookFailed."""
    try:
        endpoint = endpoint_for(url, policy)
    except RefusedEndpoint as exc:
        raise WebhookFailed(exc.message) from None
    deadline = _Deadline(policy.deadline_seconds)
    try:
        addresses = resolve(endpoint, deadline=deadline)
        if not addresses or not all(policy.allows(a, endpoint.port) for a in addresses):
            raise WebhookFailed(UNREACHABLE)  # refused reads as unreachable: nothing mapped
        status = _send(endpoint, addresses, body, headers, policy, deadline)
    except (OSError, http.client.HTTPException, ValueError):
        raise WebhookFailed(UNREACHABLE) from None
    finally:
        deadline.close()
    if 300 <= status < 400:
        raise WebhookFailed(f"the endpoint answered {status}; redirects are not followed")
    if not 200 <= status < 300:
        raise WebhookFailed(f"the endpoint answered {status}")


def _send(endpoint: Endpoint, addresses: list[Address], body: bytes, headers: dict[str, str],
          policy: WebhookPolicy, deadline: _Deadline) -> int:
    error: OSError = OSError("no address")
    for address in addresses:
        connection = _PinnedConnection(endpoint, address, deadline, policy.tls)
        try:
            try:
                connection.connect()
            except OSError as exc:  # the next checked address, if there is time
                error = exc
                continue
            connection.request("POST", endpoint.target, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read(ANSWER_BYTES)
            deadline.check()  # a socket shut down by the deadline may read as a short answer
            return answer.status
        finally:
            connection.close()
    raise error


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to an address already checked, never to what the host name
    resolves to now; the Host header, SNI and the certificate check use the host name."""

    def __init__(self, endpoint: Endpoint, address: Address, deadline: _Deadline,
                 tls: ssl.SSLContext | None):
        super().__init__(endpoint.host, endpoint.port, timeout=deadline.remaining())
        self.address, self.deadline = address, deadline
        self.tls = (tls or ssl.create_default_context()) if endpoint.scheme == "https" else None
        self.default_port = 443 if self.tls else 80  # the Host header names other ports

    def connect(self) -> None:
        family = socket.AF_INET6 if self.address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.deadline.watch(sock)
            sock.settimeout(self.deadline.remaining())
            sock.connect((str(self.address), self.port))
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _Deadline:
    """One delivery's time in all. When it passes, the connection's socket is shut down,
    whatever the call is doing (connecting, the TLS handshake, sending, reading an answer
    that trickles in): timeouts per read alone let a byte a second go on for ever."""

    def __init__(self, seconds: float):
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._watched: socket.socket | None = None
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError("the webhook deadline passed")
        return left

    def check(self) -> None:
        if self.expired:
            raise TimeoutError("the webhook deadline passed")

    def watch(self, sock: socket.socket) -> None:
        """Shut this socket down at the deadline (a duplicate of it: the same connection,
        still reachable once TLS has wrapped the original)."""
        with self._lock:
            self.check()
            self._forget()
            self._watched = sock.dup()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._watched is not None:
                try:
                    self._watched.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _forget(self) -> None:
        if self._watched is not None:
            self._watched.close()
            self._watched = None

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._forget()

"""The webhook lane's HTTP client: httpx, with its connections pooled and reused, each made
by our own network backend to an address `webhook.py` checked (never what the name resolves
to later; the Host header, SNI and the certificate check still use the name), every call
bounded by one deadline in all, and no redirect followed.

The deadline holds because every socket operation of a call (connect, TLS handshake, each
send and each receive) is given only what is left of the call's time, and none starts after
it: per-read timeouts alone would let a byte a second go on for ever.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import ssl
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpcore
import httpx

from contacts.delivery.webhook import (
    ANSWER_BYTES,
    UNREACHABLE,
    Deadline,
    Endpoint,
    RefusedEndpoint,
    WebhookFailed,
    WebhookPolicy,
    endpoint_for,
    resolve,
)

# Idle connections kept for reuse (in all), and for how long.
KEEP_ALIVE_CONNECTIONS = 200
KEEP_ALIVE_SECONDS = 30.0
# Clients kept, one per policy (a process has one; tests make many).
_CLIENTS_KEPT = 8

# httpx logs every request's URL at INFO: an endpoint's URL may carry the customer's own
# token in its query, and our logs hold no such thing. What we log, the outbox says.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

_calls = threading.local()


@dataclass(frozen=True)
class _Call:
    endpoint: Endpoint
    deadline: Deadline


def _current() -> _Call:
    call = getattr(_calls, "current", None)
    if call is None:
        raise httpcore.ConnectError("a webhook connection outside a webhook call")
    return call


def _left(timeout: float | None) -> float:
    """What a socket operation may take: the rest of the call's deadline, or less."""
    left = _current().deadline.remaining()  # TimeoutError once it has passed
    return left if timeout is None else min(timeout, left)


@contextmanager
def _mapped(timed_out: type[Exception], failed: type[Exception]) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise timed_out(str(exc)) from exc
    except OSError as exc:
        raise failed(str(exc)) from exc


def url_host(endpoint: Endpoint) -> str:
    """The host as it goes in the URL we hand httpx: an address in its one spelling."""
    if endpoint.literal is None:
        return endpoint.host
    return f"[{endpoint.literal}]" if endpoint.literal.version == 6 else str(endpoint.literal)


def _same_host(asked: str, endpoint: Endpoint) -> bool:
    if endpoint.literal is None:
        return asked.lower() == endpoint.host
    try:
        return ipaddress.ip_address(asked.strip("[]")) == endpoint.literal
    except ValueError:
        return False


class _PinnedStream(httpcore.NetworkStream):
    """A connection's socket, each operation held to the current call's deadline."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(_left(timeout))
            return self._sock.recv(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            view = memoryview(buffer)
            while view:  # each send its own share of what is left: a slow reader stops too
                self._sock.settimeout(_left(timeout))
                view = view[self._sock.send(view):]

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            try:  # the handshake as a whole within what is left (CPython bounds it so)
                self._sock.settimeout(_left(timeout))
                wrapped = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
            except BaseException:
                self._sock.close()
                raise
        return _PinnedStream(wrapped)

    def get_extra_info(self, info: str):
        if info == "ssl_object":
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":  # an idle connection the server closed is not reused
            return self._sock.fileno() == -1 or bool(select.select([self._sock], [], [], 0)[0])
        return None


class _PinnedBackend(httpcore.NetworkBackend):
    """Opens each new connection to the current call's endpoint: its name looked up once,
    every address checked against the policy, the socket connected to a checked one."""

    def __init__(self, policy: WebhookPolicy):
        self.policy = policy

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options=None) -> httpcore.NetworkStream:
        call = _current()
        endpoint = call.endpoint
        if port != endpoint.port or not _same_host(host, endpoint):
            raise httpcore.ConnectError("a connection to another host than the one checked")
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            addresses = resolve(endpoint, deadline=call.deadline)
            if not addresses or not all(self.policy.allows(address, endpoint.port)
                                        for address in addresses):
                raise httpcore.ConnectError(UNREACHABLE)
            error: OSError = OSError("no address")
            for address in addresses:
                family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    sock.settimeout(_left(timeout))
                    sock.connect((str(address), port))
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError as exc:  # the next checked address, if there is time
                    sock.close()
                    error = exc
                    continue
                return _PinnedStream(sock)
            raise error

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options=None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are never sent to a local socket")

    def sleep(self, seconds: float) -> None:
        raise httpcore.ConnectError("webhook calls are never retried by the transport")


class WebhookClient:
    """POSTs to webhook endpoints over a shared pool of pinned connections; thread-safe."""

    def __init__(self, policy: WebhookPolicy):
        self.policy = policy
        transport = httpx.HTTPTransport(trust_env=False)
        # httpx names no network backend for its pool: the pool it would use is replaced by
        # one that makes every connection through ours (httpx and httpcore are pinned ==).
        transport._pool = httpcore.ConnectionPool(
            ssl_context=policy.tls or ssl.create_default_context(), max_connections=None,
            max_keepalive_connections=KEEP_ALIVE_CONNECTIONS,
            keepalive_expiry=KEEP_ALIVE_SECONDS, network_backend=_PinnedBackend(policy))
        self._http = httpx.Client(transport=transport, trust_env=False, follow_redirects=False)

    def post(self, *, url: str, body: bytes, headers: dict[str, str]) -> None:
        """POST `body`; a 3xx is a failure (the signature never goes anywhere else). Raises
        WebhookFailed: at send time a refusal reads as any unreachable endpoint."""
        try:
            endpoint = endpoint_for(url, self.policy)
        except RefusedEndpoint as exc:
            raise WebhookFailed(exc.message) from None
        if endpoint.literal is not None and not self.policy.allows(endpoint.literal,
                                                                   endpoint.port):
            raise WebhookFailed(UNREACHABLE)
        deadline = Deadline(self.policy.deadline_seconds)
        _calls.current = _Call(endpoint, deadline)
        try:
            status = self._send(endpoint, body, headers, deadline)
        except (httpx.HTTPError, httpcore.ConnectError, OSError, ValueError):
            raise WebhookFailed(UNREACHABLE) from None
        finally:
            _calls.current = None
        if 300 <= status < 400:
            raise WebhookFailed(f"the endpoint answered {status}; redirects are not followed")
        if not 200 <= status < 300:
            raise WebhookFailed(f"the endpoint answered {status}")

    def _send(self, endpoint: Endpoint, body: bytes, headers: dict[str, str],
              deadline: Deadline) -> int:
        request = self._http.build_request(
            "POST", f"{endpoint.scheme}://{url_host(endpoint)}:{endpoint.port}{endpoint.target}",
            content=body, headers=headers, timeout=httpx.Timeout(deadline.remaining()))
        answer = self._http.send(request, stream=True)
        try:
            read = 0
            for chunk in answer.iter_raw():  # its status is what counts: 4 KB at most
                read += len(chunk)
                if read >= ANSWER_BYTES:
                    break
        finally:
            answer.close()  # a body left unread closes the connection rather than reusing it
        return answer.status_code

    def close(self) -> None:
        self._http.close()


_clients: OrderedDict[tuple, WebhookClient] = OrderedDict()
_clients_lock = threading.Lock()


def client_for(policy: WebhookPolicy) -> WebhookClient:
    """The process's client for a policy (its trust store included), made once."""
    key = (policy, id(policy.tls))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = WebhookClient(policy)
            while len(_clients) > _CLIENTS_KEPT:
                _clients.popitem(last=False)[1].close()
        _clients.move_to_end(key)
        return client


def post(*, url: str, body: bytes, headers: dict[str, str], policy: WebhookPolicy) -> None:
    client_for(policy).post(url=url, body=body, headers=headers)

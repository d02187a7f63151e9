"""A webhook receiver as a customer would write one: a real HTTP server on 127.0.0.1 that
checks every delivery with the `standardwebhooks` package (signature and the five-minute
timestamp window) against the secret it was given, and answers as the test scripts it."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool  # with the secret the receiver held when it arrived
    error: str | None
    # Whether a call to a hanging path was being held when this one arrived.
    hang_held: bool = False

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class StandardReceiver:
    """`secrets[path]` is the secret an endpoint's path is checked with (or `secret` for any
    path); `fail[path]` calls to that path answer 503 first; a path in `hang` is never
    answered (held until the caller hangs up: `released` is then set); `delay` seconds pass
before each answer. `most_at_once` is the most calls it held at the same time."""

    def __init__(self, secret: str | None = None, delay: float = 0.0):
        self.secret, self.delay = secret, delay
        self.secrets: dict[str, str] = {}
        self.fail: dict[str, int] = {}
        self.hang: set[str] = set()
        self.deliveries: list[Delivery] = []
        self.held, self.released = threading.Event(), threading.Event()
        self.in_flight = self.most_at_once = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers answer

            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    status = receiver._receive(self.path, dict(self.headers), body)
                    if status is None:
                        receiver._hold(self.connection)
                        self.close_connection = True
                        return
                finally:
                    with receiver.lock:
                        receiver.in_flight -= 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self.host_port = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hooks") -> str:
        return f"http://{self.host_port}{path}"

    def _receive(self, path: str, headers: dict[str, str], body: bytes) -> int | None:
        secret = self.secrets.get(path, self.secret)
        verified, error = False, "no secret"
        if secret is not None:
            try:
                Webhook(secret).verify(body, headers)
                verified, error = True, None
            except WebhookVerificationError as exc:
                error = str(exc)
        with self.lock:
            self.in_flight += 1
            self.most_at_once = max(self.most_at_once, self.in_flight)
            held = self.held.is_set() and not self.released.is_set()
            self.deliveries.append(Delivery(path, headers, body, verified, error, held))
            failing = self.fail.get(path, 0) > 0
            if failing:
                self.fail[path] -= 1
        if path in self.hang:
            return None
        if self.delay:
            time.sleep(self.delay)
        return 503 if failing else 204

    def _hold(self, connection) -> None:
        """Answer nothing until the caller closes its end (or the test ends)."""
        self.held.set()
        connection.settimeout(0.2)
        while not self._stop.is_set():
            try:
                if connection.recv(1) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        self.released.set()

    def to(self, path: str) -> list[Delivery]:
        with self.lock:
            return [delivery for delivery in self.deliveries if delivery.path == path]

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

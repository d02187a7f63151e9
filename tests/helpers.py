"""Helpers shared by the tests: the test password, a CSRF-aware sign-in helper that gives
the second factor too (TOTP codes computed with pyotp)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
import redis
from sqlalchemy import text

from contacts.core.services import services

IN_CI = os.environ.get("CI") == "true"
REDIS_URL = "redis://127.0.0.1:6379/15"  # the tests' Redis database


def require_redis(url: str = REDIS_URL):
    """A client of the tests' Redis; fails the test in CI when Redis is unreachable, skips it
    elsewhere."""

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        if IN_CI:
            pytest.fail("Redis unreachable on 127.0.0.1:6379", pytrace=False)
        pytest.skip("Redis unreachable on 127.0.0.1:6379")
    return client
PASSWORD = "correct horse battery staple"
ARTIFACTS = Path(__file__).parent / "artifacts"


@dataclass
class StaffAccount:
    id: str
    email: str
    role: str
    password: str = PASSWORD
    totp_secret: str | None = None  # set once enrolled (the staff factory enrols)
    recovery_codes: list[str] = field(default_factory=list)
    last_step: int = 0  # the last TOTP step this helper gave the server

    def code(self) -> str:
        """A TOTP code the server accepts now and has not used: of the step before the
        current one (while it stays in the server's window for 10 s more: a test may hold
        the code to replay it), the current one or the next one; the server accepts each
        once, in order. Three sign-ins fit in a step (the enrolment helper leaves them
        free); a fourth waits for the step to turn."""
        assert self.totp_secret, f"{self.id} has no second factor enrolled"
        totp = pyotp.TOTP(self.totp_secret)
        while True:
            now = time.time()
            current = totp.timecode(now)
            left = totp.interval - now % totp.interval
            steps = (current - 1, current, current + 1) if left > 10 else (current, current + 1)
            for step in steps:
                if step > self.last_step:
                    self.last_step = step
                    return totp.generate_otp(step)
            time.sleep(left + 0.05)


def enrol_two_factor(app, account: StaffAccount, *, reset: bool = False) -> StaffAccount:
    """Enrol TOTP through the service, as the enrolment page does. The confirming code is
    one of a minute ago, so the steps before, at and after the current one stay free for
    sign-ins."""
    from contacts.core.audit import Actor
    from contacts.core.db import session_scope
    from contacts.staff import twofactor

    confirmed_at = datetime.now(UTC) - timedelta(seconds=60)
    crypto = services(app).crypto
    with session_scope(services(app).engine) as session:
        if reset:
            twofactor.reset(session=session, actor=Actor.system("test"), staff_id=account.id)
        enrolment = twofactor.begin_enrolment(session=session, crypto=crypto,
                                              actor=Actor.system("test"), staff_id=account.id,
                                              issuer="Lifeline")
        totp = pyotp.TOTP(enrolment.secret)
        account.recovery_codes = twofactor.confirm_enrolment(
            session=session, crypto=crypto, actor=Actor.system("test"), staff_id=account.id,
            sealed=enrolment.sealed, code=totp.at(confirmed_at), recovery_codes=10,
            now=confirmed_at)
    account.totp_secret = enrolment.secret
    account.last_step = totp.timecode(confirmed_at)
    return account


CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token_from(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "the page has no CSRF token field"
    return match.group(1)


class Auth:
    """Sign in and out through the real login form, CSRF token included. An enrolled
    account's sign-in goes on to the code page with the account's next TOTP code; the
    answer returned is the last one (302 to the console when signed in)."""

    def __init__(self, client):
        self.client = client

    def csrf(self, path: str = "/login") -> str:
        return csrf_token_from(self.client.get(path).get_data(as_text=True))

    def login(self, account: StaffAccount, password: str | None = None,
              next: str | None = None):
        data = {"email": account.email, "password": password or account.password,
                "csrf_token": self.csrf()}
        if next is not None:
            data["next"] = next
        response = self.client.post("/login", data=data)
        if (response.status_code == 302 and response.headers["Location"] == "/login/code"
                and account.totp_secret):
            return self.second_factor(account.code())
        return response

    def second_factor(self, code: str):
        return self.client.post("/login/code", data={
            "code": code, "csrf_token": self.csrf("/login/code")})

    def logout(self):
        return self.client.post("/logout", data={"csrf_token": self.csrf("/console/")})


def give_second_factor(page, account: StaffAccount) -> None:
    """In a browser, after the password: type the account's next TOTP code."""
    page.get_by_label("Authentication code").fill(account.code())
    page.get_by_role("button", name="Verify").click()


@contextmanager
def smtp_server_with(handler, **smtp_parameters) -> Iterator[int]:
    """A real SMTP server (aiosmtpd) with `handler` on a free port of 127.0.0.1; yields the
    port. `smtp_parameters` go to aiosmtpd (for example enable_SMTPUTF8=False)."""
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port, **smtp_parameters)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def stored_bytes(engine) -> bytes:
    """Everything the database holds, as bytes: the SQLite file and its WAL after a
    checkpoint, or a pg_dump of the PostgreSQL database. Plaintext scans grep this."""
    url = engine.url
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        files = [Path(url.database), Path(url.database + "-wal")]
        return b"".join(path.read_bytes() for path in files if path.exists())
    return subprocess.run(["pg_dump", "-h", url.host, "-p", str(url.port), "-U", url.username,
                           url.database], capture_output=True, check=True, timeout=120).stdout


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of a real server, that a test can cut (every
    connection closed, new ones refused) and restore on the same port: a database that
    becomes unreachable without touching the machine's shared server."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener = None
        self._sockets: list = []
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.close()
                except OSError:
                    pass

    def cut(self) -> None:
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread in accept()
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

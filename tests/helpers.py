"""Helpers shared by the tests: the test password, a CSRF-aware sign-in helper."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

IN_CI = os.environ.get("CI") == "true"
PASSWORD = "correct horse battery staple"
ARTIFACTS = Path(__file__).parent / "artifacts"


@dataclass
class StaffAccount:
    id: str
    email: str
    role: str
    password: str = PASSWORD


CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token_from(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "the page has no CSRF token field"
    return match.group(1)


class Auth:
    """Sign in and out through the real login form, CSRF token included."""

    def __init__(self, client):
        self.client = client

    def csrf(self, path: str = "/login") -> str:
        return csrf_token_from(self.client.get(path).get_data(as_text=True))

    def login(self, account: StaffAccount, password: str | None = None):
        return self.client.post("/login", data={
            "email": account.email, "password": password or account.password,
            "csrf_token": self.csrf()})

    def logout(self):
        return self.client.post("/logout", data={"csrf_token": self.csrf("/console/")})


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

"""Helpers shared by the tests: the test password, a CSRF-aware sign-in helper."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

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

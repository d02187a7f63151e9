"""HTTP as the drill speaks it: the JSON API with a bearer token, and the public pages as a
browser without JavaScript would use them (cookies, the form's CSRF token)."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

CSRF_FIELD = re.compile(rb'name="csrf_token"[^>]*value="([^"]+)"')


class DrillHttpError(RuntimeError):
    """Lifeline answered an API call the drill relies on with an error."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    location: str | None = None

    def json(self):
        return json.loads(self.body or b"null")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Client:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 60):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _open(self, opener, method: str, path: str, *, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> Answer:
        request = urllib.request.Request(  # noqa: S310 - base_url is http(s), from the CLI
            self.base_url + path, data=body, method=method, headers=headers or {})
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return Answer(response.status, response.read(), response.headers.get("Location"))
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.read(), error.headers.get("Location"))

    def call(self, method: str, path: str, payload=None, *, client_ip: str | None = None,
             authenticated: bool = True) -> Answer:
        """One JSON call; the answer whatever its status."""
        headers = {"Accept": "application/json"}
        body = None
        if payload is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(payload).encode()
        if authenticated and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if client_ip:
            headers["X-Forwarded-For"] = client_ip
        return self._open(urllib.request.build_opener(_NoRedirect), method, path, body=body,
                          headers=headers)

    def api(self, method: str, path: str, payload=None, *, expect: tuple[int, ...] = (200,)):
        """A JSON call that must succeed: its decoded body."""
        answer = self.call(method, path, payload)
        if answer.status not in expect:
            raise DrillHttpError(f"{method} {path} answered {answer.status}: "
                                 f"{answer.body[:300].decode(errors='replace')}")
        return answer.json()

    def visitor(self, client_ip: str) -> Visitor:
        return Visitor(self, client_ip)


class Visitor:
    """One person's browser: keeps cookies, sends the form's CSRF token back."""

    def __init__(self, client: Client, client_ip: str):
        self.client = client
        self.client_ip = client_ip
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect)

    def get(self, path: str) -> Answer:
        return self.client._open(self.opener, "GET", path,
                                 headers={"X-Forwarded-For": self.client_ip})

    def submit(self, path: str, fields: dict[str, str]) -> Answer:
        """GET the page, then POST its form with `fields` and the page's CSRF token."""
        page = self.get(path)
        token = CSRF_FIELD.search(page.body)
        form = dict(fields, csrf_token=token.group(1).decode() if token else "")
        return self.client._open(
            self.opener, "POST", path, body=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "X-Forwarded-For": self.client_ip})

"""The outsider probe of issue 16: attacks a running Lifeline over HTTP only (and reads the
mail it sends to the probe's SMTP sink) and exits 0 only when every attack is refused.

    python -m tests.security.probe --url http://127.0.0.1:8000 --token <every scope> \\
        --smtp-port 1025 [--webhook-receiver 127.0.0.1:8099] \\
        [--staff-email admin@example.com --staff-password ... [--totp-secret ...]]

Without --url it starts a Lifeline of its own on a scratch database (SQLite, or a new
PostgreSQL database on --database-url's server), its mail sent to the probe's sink, with
small intake limits, the webhook allowance for the probe's slow receiver, an API token and
an admin made through the CLI; it stops it at the end. A running Lifeline must send its mail
to --smtp-port on 127.0.0.1, trust one proxy hop (server.proxy_hops = 1, so each probe
request comes from its own X-Forwarded-For address), and, for the slow-webhook probe, allow
--webhook-receiver (the setting named by harness.ALLOWANCE_VARIABLE).

Each probe prints PASS, FAIL or SKIP with one line of reason on standard output, then
`N passed, N failed`; progress goes to standard error. The URLs of the SSRF probe are only
ever sent to Lifeline as data: the probe itself connects to nothing but Lifeline, its sink
and its receiver, all on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from contacts.drill.client import Answer, Client
from contacts.incidents.messages import REQUIRED
from contacts.vault.importer import CSV_COLUMNS
from tests.security.harness import (
    ALLOWANCE_VARIABLE,
    Console,
    MailSink,
    ProbeLifeline,
    Receiver,
    client_ips,
    code_of,
    confirm_path_of,
    send,
)

DEFAULTS = Path(__file__).resolve().parents[2] / "config" / "default.toml"
ATOM = "{http://www.w3.org/2005/Atom}"
# The local Lifeline's intake limits: small, so the limit probes need a few requests.
LOCAL_LIMITS = {"LIFELINE_INTAKE_RATE_LIMIT_PER_EMAIL": "4 per hour",
                "LIFELINE_INTAKE_RATE_LIMIT_PER_DOMAIN": "10 per hour"}
MAIL_SECONDS = 30.0  # how long a code email may take when nothing is in its way
EMAIL_BEHIND_WEBHOOK_SECONDS = 5.0
TEMPLATE_SECONDS = 5.0
WEBHOOK_GIVES_UP_SECONDS = 15.0  # the total deadline is 10 s by default (issue 16, item 4)


class SetupError(RuntimeError):
    """A step a probe stands on did not work, so the probe could not be tried."""


@dataclass(frozen=True)
class Outcome:
    verdict: str  # PASS, FAIL or SKIP
    group: str
    name: str
    reason: str


@dataclass(frozen=True)
class Limits:
    per_email: int
    per_domain: int
    intake_body: int
    server_body: int


@dataclass
class Probe:
    base_url: str
    api: Client
    sink: MailSink
    limits: Limits
    console: Console | None
    console_problem: str
    receiver: Receiver | None
    run: str = field(default_factory=lambda: secrets.token_hex(3))
    outcomes: list[Outcome] = field(default_factory=list)
    group: str = ""
    started: float = field(default_factory=time.monotonic)
    credentials: tuple[str, str] | None = None
    ips: Iterator[str] = field(default_factory=client_ips)

    # -- reporting ----------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f} s] {self.group}: {text}",
              file=sys.stderr, flush=True)

    def record(self, name: str, passed: bool, reason: str) -> None:
        self._add("PASS" if passed else "FAIL", name, reason)

    def skip(self, name: str, reason: str) -> None:
        self._add("SKIP", name, reason)

    def _add(self, verdict: str, name: str, reason: str) -> None:
        outcome = Outcome(verdict, self.group, name, " ".join(reason.split()))
        self.outcomes.append(outcome)
        print(f"{verdict} [{outcome.group}] {name}: {outcome.reason}", flush=True)

    # -- HTTP ---------------------------------------------------------------------------
    def ip(self) -> str:
        return next(self.ips)

    def call(self, method: str, path: str, payload=None, *, public: bool = False,
             timeout: float = 30) -> Answer:
        self.api.timeout = timeout
        try:
            return self.api.call(method, path, payload, client_ip=self.ip(),
                                 authenticated=not public)
        except OSError as exc:
            return Answer(0, f"no answer: {type(exc).__name__}".encode())
        finally:
            self.api.timeout = 30

    def need(self, answer: Answer, what: str, *expected: int) -> Answer:
        if answer.status not in expected:
            raise SetupError(f"{what} answered {answer.status}: {snippet(answer.body)}")
        return answer

    def raw(self, path: str, body: bytes, *, chunked: bool = False,
            content_type: str = "application/json", token: bool = False,
            timeout: float = 30) -> Answer:
        headers = {"X-Forwarded-For": self.ip()}
        if token:
            headers["Authorization"] = f"Bearer {self.api.token}"
        return send(self.base_url, "POST", path, body, content_type=content_type,
                    chunked=chunked, headers=headers, timeout=timeout)

    def page(self, path: str, fields: dict[str, str]) -> Answer:
        """A form posted from a fresh browser (its own cookies and address)."""
        return self.api.visitor(self.ip()).submit(path, fields)

    # -- fixtures over HTTP ---------------------------------------------------------------
    def support_request(self, local: str, domain: str = "example.org") -> tuple[str, str]:
        """A request through the API; its reference and the address it came from."""
        email = f"{local}.{self.run}@{domain}"
        answer = self.need(self.call("POST", "/api/v1/requests", {
            "email": email, "message": "Our site is gone."}, public=True),
            "POST /api/v1/requests", 202)
        return answer.json()["reference"], email

    def code_email(self, email: str, reference: str):
        letter = self.sink.wait_for_letter(email, reference, timeout=MAIL_SECONDS)
        if letter is None:
            raise SetupError(f"no email for {reference} reached the sink within "
                             f"{MAIL_SECONDS:g} s")
        if code_of(letter) is None or confirm_path_of(letter) is None:
            raise SetupError(f"the email for {reference} carries no code or no link")
        return letter

    def account(self, kind: str) -> tuple[str, str]:
        """An account with one site and one contact (mail to the sink); its Lifeline ID and
        its site's external ID."""
        external = f"probe-{kind}-{self.run}"
        email = f"admin.{kind}.{self.run}@example.org"
        self.need(self.call("POST", "/api/v1/sync", {"accounts": [{
            "external_id": external, "name": f"Probe {kind} {self.run}",
            "sites": [{"external_id": external + "-site", "url": f"https://{external}.example",
                       "name": f"{kind} site"}],
            "contacts": [{"external_id": external + "-admin", "name": f"Admin {kind}",
                          "email": email, "role": "admin", "locale": "en",
                          "timezone": "UTC", "sites": [external + "-site"]}]}]}),
            "POST /api/v1/sync", 200)
        found = self.need(self.call("GET", "/api/v1/contacts/lookup?email="
                                    + quote(email, safe="")), "the contact lookup", 200)
        matches = found.json()["matches"]
        if not matches:
            raise SetupError(f"the synced contact of {external} is not found")
        return matches[0]["account_id"], external + "-site"

    def incident(self, title: str, site: str) -> str:
        answer = self.need(self.call("POST", "/api/v1/incidents", {
            "title": title, "severity": "major"}), "POST /api/v1/incidents", 201)
        incident_id = answer.json()["id"]
        self.need(self.call("POST", f"/api/v1/incidents/{incident_id}/sites",
                            {"sites": [site]}), "adding the affected site", 200, 201)
        return incident_id

    def publish(self, incident_id: str, what_happened: str = "A script deleted sites.",
                timeline: str = "Restored within the hour.") -> Answer:
        return self.call("POST", f"/api/v1/incidents/{incident_id}/updates",
                         update_draft(what_happened, timeline), timeout=30)

    def updates_of(self, incident_id: str) -> list[dict]:
        answer = self.call("GET", f"/api/v1/incidents/{incident_id}")
        return answer.json()["updates"] if answer.status == 200 else []


def update_draft(what_happened: str, timeline: str) -> dict:
    return {"state": "identified", "what_happened": what_happened, "timeline": timeline,
            "data_loss": "Changes of the last 5 minutes.", "confidence_timeline": "medium",
            "confidence_restore": "high", "confidence_data_loss": "high",
            "next_update_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}


def snippet(body: bytes, size: int = 160) -> str:
    text = body[:4000].decode("utf-8", errors="replace")
    errors = form_errors(body)
    if errors:
        return "; ".join(errors)[:size]
    return " ".join(re.sub(r"<[^>]+>", " ", text).split())[:size]


def form_errors(body: bytes) -> list[str]:
    return [html.unescape(" ".join(found.split())) for found in re.findall(
        r'<p class="error"[^>]*>(.*?)</p>', body.decode("utf-8", errors="replace"), re.S)]


def error_shape_problem(answer: Answer) -> str:
    """'' when the body is {"error": {"code": str, "message": str}}, else what is wrong."""
    try:
        error = json.loads(answer.body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"the body is not the error shape: {snippet(answer.body, 80)!r}"
    if not (isinstance(error, dict) and isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str)):
        return "the error lacks a code or a message"
    return ""


def mask(text: str | None) -> str:
    return re.sub(r"([?&])t=[^&\s]+", r"\1t=<token>", text or "")


# -- 1. request-page takeover -----------------------------------------------------------------


STATUS_TOKEN = re.compile(r"/requests/LL-[0-9A-Z]{4}-[0-9A-Z]{4}\?[^\s\"'<>]*?\bt=")


def opens_the_page(answer: Answer) -> str:
    """'' when the answer hands out nothing of the private page; else what it handed out."""
    if answer.location and STATUS_TOKEN.search(answer.location):
        return f"answered {answer.status} to {mask(answer.location)}"
    if STATUS_TOKEN.search(answer.body.decode("utf-8", errors="replace")) or (
            b'name="t"' in answer.body):
        return f"answered {answer.status} with the status link or the reply form"
    return ""


def same_reading(one: Answer, one_ref: str, other: Answer, other_ref: str) -> str:
    """'' when both answers read the same once their references and CSRF tokens are
    removed; else how they differ."""
    def normal(answer: Answer, reference: str) -> str:
        text = answer.body.decode("utf-8", errors="replace").replace(reference, "LL-XXXX-XXXX")
        return re.sub(r'(name="csrf_token"[^>]*value=")[^"]+', r"\1", text)

    if one.status != other.status:
        return f"{one.status} for one, {other.status} for the other"
    if normal(one, one_ref) != normal(other, other_ref):
        return (f"the pages differ: {'; '.join(form_errors(one.body))!r} vs "
                f"{'; '.join(form_errors(other.body))!r}")
    return ""


def unknown_reference() -> str:
    alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    letters = "".join(secrets.choice(alphabet) for _ in range(8))
    return f"LL-{letters[:4]}-{letters[4:]}"


def request_page_takeover(p: Probe) -> None:
    p.say("a request verified by its one-click link")
    by_link, email = p.support_request("takeover.link")
    link = confirm_path_of(p.code_email(email, by_link))
    p.need(p.page(link, {}), "the right one-click link", 303)

    again = p.page(link, {})
    handed = opens_the_page(again)
    p.record("a used one-click link opens nothing and says it was used",
             not handed and again.status < 500 and b"used" in again.body.lower(),
             handed or (f"answered {again.status}: {snippet(again.body)}"))

    wrong = {}
    for code in ("111111", "000000", "99999"):
        wrong[code] = p.page(f"/requests/{by_link}/verify", {"code": code})
    opened = {code: opens_the_page(answer) for code, answer in wrong.items()}
    first = next(((code, why) for code, why in opened.items() if why), None)
    p.record("a wrong code on a verified request opens nothing",
             first is None and all(a.status < 500 for a in wrong.values()),
             f"code {first[0]}: {first[1]}" if first else
             "answers " + ", ".join(f"{code}: {a.status}" for code, a in wrong.items()))

    p.say("a request verified by its code")
    by_code, email = p.support_request("takeover.code")
    letter = p.code_email(email, by_code)
    p.need(p.page(f"/requests/{by_code}/verify", {"code": code_of(letter)}),
           "the right code", 303)
    wrong_after_right = p.page(f"/requests/{by_code}/verify", {"code": "111111"})
    handed = opens_the_page(wrong_after_right)
    p.record("a wrong code after the right one opens nothing", not handed
             and wrong_after_right.status < 500,
             handed or f"answered {wrong_after_right.status}")
    unknown = unknown_reference()
    none = p.page(f"/requests/{unknown}/verify", {"code": "111111"})
    differs = same_reading(wrong_after_right, by_code, none, unknown)
    p.record("a wrong code on a verified request reads like one on an unknown reference",
             not differs, differs or f"both {none.status}, same page")
    answer = p.page(confirm_path_of(letter), {})
    handed = opens_the_page(answer)
    p.record("the link of a request verified by its code opens nothing", not handed
             and answer.status < 500, handed or f"answered {answer.status}")

    for ref in (by_link, by_code):
        bare = p.api.visitor(p.ip()).get(f"/requests/{ref}")
        forged = p.api.visitor(p.ip()).get(f"/requests/{ref}?t=AAAAAAAAAAAAAAAAAAAAAAAA")
        if bare.status != 404 or forged.status != 404:
            p.record("the private page needs its token", False,
                     f"{ref}: {bare.status} without a token, {forged.status} with a forged one")
            break
    else:
        p.record("the private page needs its token", True,
                 "404 without a token and with a forged one")

    p.say("a first wrong code on a waiting request and on an unknown reference")
    waiting, _ = p.support_request("takeover.waiting")
    unknown = unknown_reference()
    real = p.page(f"/requests/{waiting}/verify", {"code": "111111"})
    none = p.page(f"/requests/{unknown}/verify", {"code": "111111"})
    differs = same_reading(real, waiting, none, unknown)
    p.record("a wrong code on an unverified request reads like one on an unknown reference",
             not differs, differs or f"both {real.status}, same page")


# -- 2. SSRF ------------------------------------------------------------------------------------

INSIDE_URLS = (
    "http://127.1/", "http://0x7f000001/", "http://2130706433/", "http://017700000001/",
    "http://0177.0.0.1/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/",
    "http://[::1]/", "http://0.0.0.0/", "http://0/", "http://[::]/",
    "http://169.254.169.254/latest/meta-data", "http://localhost/", "http://localhost./",
    "http://LOCALHOST/", "https://localhost/", "http://10.0.0.1/", "http://172.16.0.1/",
    "http://192.168.1.1/", "http://[fd00::1]/", "http://[fe80::1]/", "http://user@127.0.0.1/",
    "http://user:pass@10.0.0.1/", "http://100.64.0.1/", "http://224.0.0.1/",
    "http://240.0.0.1/", "http://255.255.255.255/", "http://198.18.0.1/",
)
CSRF_REFUSAL = re.compile(rb"CSRF (session )?token is", re.IGNORECASE)


def console_or_skip(p: Probe, name: str) -> Console | None:
    if p.console is None:
        p.skip(name, f"needs a console session: {p.console_problem}")
    return p.console


def save_webhook(console: Console, account_id: str, url: str):
    return console.submit("/console/webhooks", {"account_id": account_id, "url": url})


def webhooks_to_inside_addresses(p: Probe) -> None:
    name = f"{len(INSIDE_URLS)} inside addresses are refused at save"
    console = console_or_skip(p, name)
    if console is None:
        return
    account_id, _site = p.account("ssrf")  # never added to an incident: nothing is sent
    if p.receiver is not None:
        control = f"http://{p.receiver.receiver}/control"
        answer, _ = save_webhook(console, account_id, control)
        if answer.status != 200:
            raise SetupError(f"the allowed receiver {control} was refused "
                             f"({answer.status}: {snippet(answer.body)}); is "
                             f"{ALLOWANCE_VARIABLE} set?")
    accepted, broken = [], []
    for url in INSIDE_URLS:
        answer, _ = save_webhook(console, account_id, url)
        if CSRF_REFUSAL.search(answer.body):
            raise SetupError("the console refused the form's CSRF token")
        if answer.status < 400:
            accepted.append(url)
        elif answer.status >= 500 or answer.status == 0:
            broken.append(f"{url} ({answer.status})")
    p.say(f"{len(INSIDE_URLS)} URLs tried")
    p.record(name, not accepted and not broken,
             (f"accepted: {', '.join(accepted)}" if accepted else "")
             + (f" server errors: {', '.join(broken)}" if broken else "")
             or f"each answered 4xx ({len(INSIDE_URLS)} spellings)")


# -- 3. a slow webhook endpoint --------------------------------------------------------------


def slow_webhook_and_email(p: Probe) -> None:
    name = (f"a code email arrives within {EMAIL_BEHIND_WEBHOOK_SECONDS:g} s while a webhook "
            "endpoint trickles")
    if p.receiver is None:
        p.skip(name, "no --webhook-receiver given for the slow endpoint")
        return
    console = console_or_skip(p, name)
    if console is None:
        return
    account_id, site = p.account("slow")
    url = f"http://{p.receiver.receiver}/hook"
    answer, _ = save_webhook(console, account_id, url)
    if answer.status != 200:
        raise SetupError(f"the allowed receiver {url} was refused ({answer.status}: "
                         f"{snippet(answer.body)}); is {ALLOWANCE_VARIABLE} set?")
    incident_id = p.incident(f"Slow endpoint {p.run}", site)
    try:
        p.need(p.publish(incident_id), "publishing the update", 201)
        p.say("update published; waiting for the webhook to reach the trickling endpoint")
        call = wait_for_call(p.receiver, "/hook", 20)
        if call is None:
            raise SetupError("the webhook never reached the receiver within 20 s")
        time.sleep(1.0)  # the endpoint has the connection and trickles
        p.say("webhook held by the endpoint; sending a support request")
        started = time.monotonic()
        reference, email = p.support_request("behind.webhook")
        letter = p.sink.wait_for_letter(email, reference,
                                        timeout=EMAIL_BEHIND_WEBHOOK_SECONDS + 3)
        took = letter.at - started if letter else None
        p.record(name, took is not None and took <= EMAIL_BEHIND_WEBHOOK_SECONDS,
                 f"arrived after {took:.1f} s" if took is not None else
                 f"not arrived after {EMAIL_BEHIND_WEBHOOK_SECONDS + 3:g} s: the webhook "
                 "holds the email back")
        p.say("waiting for Lifeline to give up on the trickling endpoint")
        deadline = call.at + WEBHOOK_GIVES_UP_SECONDS
        while call.closed_at is None and time.monotonic() < deadline:
            time.sleep(0.2)
        held = (call.closed_at or time.monotonic()) - call.at
        p.record(f"a webhook gives up on a trickling endpoint within "
                 f"{WEBHOOK_GIVES_UP_SECONDS:g} s", call.closed_at is not None,
                 f"hung up after {held:.1f} s" if call.closed_at is not None else
                 f"still reading after {held:.1f} s")
    finally:
        p.receiver.stop_trickling()


def wait_for_call(receiver: Receiver, path: str, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        calls = receiver.calls_to(path)
        if calls:
            return calls[0]
        time.sleep(0.2)
    return None


def webhook_redirects(p: Probe) -> None:
    name = "a webhook does not follow a redirect to another inside address"
    if p.receiver is None:
        p.skip(name, "no --webhook-receiver given")
        return
    console = console_or_skip(p, name)
    if console is None:
        return
    catcher = Receiver()  # not in the allowance: only a redirect could lead there
    catcher.start()
    try:
        p.receiver.redirect_to = f"http://127.0.0.1:{catcher.port}/stolen"
        account_id, site = p.account("redirect")
        url = f"http://{p.receiver.receiver}/redirect"
        answer, _ = save_webhook(console, account_id, url)
        if answer.status != 200:
            raise SetupError(f"the allowed receiver {url} was refused ({answer.status})")
        incident_id = p.incident(f"Redirect {p.run}", site)
        p.need(p.publish(incident_id), "publishing the update", 201)
        if wait_for_call(p.receiver, "/redirect", 20) is None:
            raise SetupError("the webhook never reached the receiver within 20 s")
        wait_for_call(catcher, "/stolen", 3)
        stolen = catcher.calls_to("/stolen")
        signed = any(b"x-lifeline-signature" in call.head.lower() for call in stolen)
        p.record(name, not stolen,
                 f"followed to 127.0.0.1:{catcher.port}"
                 + (" with the signature header" if signed else "") if stolen
                 else "the redirect was not followed")
    finally:
        catcher.stop()


# -- 4. template bombs ------------------------------------------------------------------------

NESTED = ("{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
          "{{ a }}{% endfor %}{% endfor %}{% endfor %}")
# Each is saved inside an otherwise valid text template. Ordered so that the ones that may
# hold the server on a vulnerable version come last; the division one is saved before it can
# be published.
BOMBS = (
    ("include", "{% include 'x' %}"),
    ("import", "{% import 'x' as y %}"),
    ("extends", "{% extends 'x' %}"),
    ("format_map", "{{ '{0}'.format_map({}) }}"),
    ("__class__", "{{ ''.__class__ }}"),
    ("lipsum", "{{ lipsum() }}"),
    ("division by number - 2", "{{ 1 // (number - 2) }}"),
    ("string times 200,000,000", "{{ 'a' * 200000000 }}"),
    ("list times 20,000,000", "{{ ([1] * 20000000) | length }}"),
    ("10 ** 10000000", "{{ 10 ** 10000000 }}"),
    ("nested loops over range(100000) x3", NESTED),
)


def plain_template() -> str:
    return "\n".join(f"{name}: {{{{ {name} }}}}" for name in REQUIRED)


def save_template(console: Console, body: str, timeout: float = TEMPLATE_SECONDS + 1):
    return console.submit("/console/templates", {"kind": "text", "locale": "en", "body": body},
                          timeout=timeout)


def template_bombs(p: Probe) -> None:
    console = console_or_skip(p, "template bombs are refused at save, fast")
    if console is None:
        return
    _account_id, site = p.account("templates")
    incident_id = p.incident(f"Templates {p.run}", site)
    p.need(p.publish(incident_id), "publishing update 1 with the default template", 201)
    answer, _ = save_template(console, plain_template(), timeout=30)
    p.need(answer, "saving a plain template with every field", 303)
    try:
        for name, bomb in BOMBS:
            p.say(f"saving a template with {name}")
            answer, took = save_template(console, plain_template() + "\n" + bomb)
            saved = 300 <= answer.status < 400
            if name.startswith("division") and saved:
                p.record(f"template with {name}", *publish_after_division(p, incident_id))
                save_template(console, plain_template(), timeout=30)
                continue
            refused = 400 <= answer.status < 500
            missing_fields = any("leaves out" in error for error in form_errors(answer.body))
            p.record(f"template with {name}", refused and took <= TEMPLATE_SECONDS
                     and not missing_fields, bomb_answer(answer, took, saved))
            if saved:
                save_template(console, plain_template(), timeout=30)
        p.say("publishing after the bombs")
        started = time.monotonic()
        answer = p.publish(incident_id, what_happened=f"After the bombs {p.run}.")
        took = time.monotonic() - started
        numbers = [update["number"] for update in p.updates_of(incident_id)
                   if update["what_happened"] == f"After the bombs {p.run}."]
        p.record("an update publishes after the template bombs",
                 answer.status == 201 and bool(numbers) and took <= TEMPLATE_SECONDS,
                 f"{answer.status} after {took:.1f} s, "
                 f"{'stored as update ' + str(numbers[0]) if numbers else 'not stored'}")
    finally:
        save_template(console, plain_template(), timeout=30)


def bomb_answer(answer: Answer, took: float, saved: bool) -> str:
    if answer.status == 0:
        return f"no answer within {took:.1f} s"
    if saved:
        return f"saved ({answer.status}) after {took:.1f} s"
    return f"{answer.status} after {took:.1f} s: {snippet(answer.body, 100)}"


def publish_after_division(p: Probe, incident_id: str) -> tuple[bool, str]:
    """Saved: the updates numbered 2 and 3 must still publish (the default template stands
    in for the failing one) and be stored."""
    answers = [p.publish(incident_id, what_happened=f"Division {number} {p.run}.")
               for number in (2, 3)]
    stored = {update["what_happened"] for update in p.updates_of(incident_id)}
    lost = [number for number in (2, 3) if f"Division {number} {p.run}." not in stored]
    ok = all(answer.status == 201 for answer in answers) and not lost
    return ok, (f"saved; publishing answered {[a.status for a in answers]}"
                + (f", updates lost: {lost}" if lost else ", every update stored"))


# -- 5. the Atom feed -----------------------------------------------------------------------

HOSTILE_TITLE = ("Outage & <script>alert(1)</script> </entry><entry><title>x</title> ]]> "
                 "\x01\x0b \U0001f6a8 \U0001d11e")
HOSTILE_TEXT = ("Sites & data <b>gone</b></content></entry><entry><title>injected</title>"
                "<link href='https://evil.example/'/><content>x ]]> <![CDATA[ \x01\x0b\x1f "
                "\U0001f600 &amp; &#0; &bogus;")


def atom_feed(p: Probe) -> None:
    import feedparser

    _account_id, site = p.account("feed")
    answer = p.call("POST", "/api/v1/incidents", {"title": HOSTILE_TITLE, "severity": "major"})
    title, note = HOSTILE_TITLE, ""
    if 400 <= answer.status < 500:  # refusing control characters at input is fine too
        title = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "", HOSTILE_TITLE)
        note = " (the title's control characters were refused at input)"
        answer = p.call("POST", "/api/v1/incidents", {"title": title, "severity": "major"})
    incident_id = p.need(answer, "POST /api/v1/incidents", 201).json()["id"]
    p.need(p.call("POST", f"/api/v1/incidents/{incident_id}/sites", {"sites": [site]}),
           "adding the affected site", 200, 201)
    text = HOSTILE_TEXT
    answer = p.publish(incident_id, what_happened=text, timeline=text)
    if 400 <= answer.status < 500:
        text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "", HOSTILE_TEXT)
        note += " (the update's control characters were refused at input)"
        answer = p.publish(incident_id, what_happened=text, timeline=text)
    p.need(answer, "publishing the hostile update", 201)
    feed = p.api.visitor(p.ip()).get(f"/status/{incident_id}/feed.atom")
    p.need(feed, "GET the feed", 200)

    try:
        root = ET.fromstring(feed.body)  # noqa: S314 - our own server's feed, a test
    except ET.ParseError as exc:
        root = None
        p.record("the feed is well-formed XML", False, f"xml.etree: {exc}")
    else:
        p.record("the feed is well-formed XML", True, "xml.etree parsed it" + note)
    parsed = feedparser.parse(feed.body,
                              response_headers={"content-type": "application/atom+xml"})
    p.record("feedparser reads the feed cleanly (bozo 0)", not parsed.bozo,
             f"bozo: {parsed.get('bozo_exception')}" if parsed.bozo else "bozo 0")
    titles = [entry.get("title", "") for entry in parsed.entries]
    injected = [t for t in titles if t.strip() in ("x", "injected")]
    p.record("the feed holds exactly the published entry", len(titles) == 1 and not injected,
             f"feedparser found {len(titles)} entries: {titles[:4]}")
    if root is None:
        p.record("markup in the title and text is kept as text", False,
                 "the feed does not parse")
        return
    shown = root.findtext(f"{ATOM}title") or ""
    content = root.findtext(f"{ATOM}entry/{ATOM}content") or ""
    kept = shown.startswith("Outage & <script>") and "</entry><entry>" in content
    p.record("markup in the title and text is kept as text", kept,
             f"title {shown[:60]!r}, content {content[:60]!r}")


# -- 6. bad input ----------------------------------------------------------------------------


def bad_input(p: Probe) -> None:
    digits = "9" * 5000
    request = '{"email": "n.%s@example.info", "message": "x", "severity": %s}'
    sync = '{"accounts": [{"external_id": "probe-number", "name": %s}]}'
    nested = b"[" * 100_000
    under_cap = b"[" * min(20_000, p.limits.intake_body // 2)
    valid = json.dumps({"email": f"pad.{p.run}@example.info", "message": "padded"}).encode()
    sync_doc = json.dumps({"accounts": []}).encode()
    cases = [  # (name, path, body, chunked, content type, token, statuses)
        ("5,000-digit number on POST /api/v1/requests", "/api/v1/requests",
         (request % (p.run, digits)).encode(), False, "application/json", False, None),
        ("5,000-digit negative number on POST /api/v1/requests", "/api/v1/requests",
         (request % (p.run, "-" + digits)).encode(), False, "application/json", False, None),
        ("5,000-digit number on POST /api/v1/sync", "/api/v1/sync",
         (sync % digits).encode(), False, "application/json", True, None),
        ("5,000-digit number on POST /api/v1/sync, chunked", "/api/v1/sync",
         (sync % digits).encode(), True, "application/json", True, None),
        ("100,000 nested [ on /api/v1/sync", "/api/v1/sync", nested, False,
         "application/json", True, None),
        ("100,000 nested [ on /api/v1/sync, chunked", "/api/v1/sync", nested, True,
         "application/json", True, None),
        ("100,000 nested [ on /api/v1/requests, chunked", "/api/v1/requests", nested, True,
         "application/json", False, None),
        (f"{len(under_cap):,} nested [ under the cap on /api/v1/requests", "/api/v1/requests",
         under_cap, False, "application/json", False, None),
        (f"{len(under_cap):,} nested [ on /api/v1/requests, chunked", "/api/v1/requests",
         under_cap, True, "application/json", False, None),
        ("chunked body over the intake cap is 413", "/api/v1/requests",
         valid[:-1] + b" " * (p.limits.intake_body + 1024) + b"}", True, "application/json",
         False, (413,)),
        ("chunked body over the server cap is 413", "/api/v1/sync",
         sync_doc[:-1] + b" " * (p.limits.server_body + 16384) + b"}", True,
         "application/json", True, (413,)),
        ("chunked text/plain body on /api/v1/requests is 415", "/api/v1/requests", valid,
         True, "text/plain", False, (415,)),
        ("text/plain body on /api/v1/requests is 415", "/api/v1/requests", valid, False,
         "text/plain", False, (415,)),
        ("chunked text/plain body on /api/v1/sync is 415", "/api/v1/sync", sync_doc, True,
         "text/plain", True, (415,)),
    ]
    for name, path, body, chunked, content_type, token, statuses in cases:
        answer = p.raw(path, body, chunked=chunked, content_type=content_type, token=token)
        expected = statuses or tuple(range(400, 500))
        shape = error_shape_problem(answer) if 400 <= answer.status < 500 else ""
        p.record(name, answer.status in expected and not shape,
                 f"answered {answer.status}" + (f"; {shape}" if shape else "")
                 + ("" if answer.status in expected else
                    f", expected {'4xx' if statuses is None else statuses}"))
    p.say("the login's next with CR LF")
    login_next(p)
    p.say("console imports")
    console_imports(p)


CRLF_NEXT = "/console/\r\nSet-Cookie: probe=1\r\nLocation: https://evil.example/"


def login_next(p: Probe) -> None:
    shown = send(p.base_url, "GET", "/login?next=" + quote(CRLF_NEXT, safe=""), b"",
                     content_type="text/plain", headers={"X-Forwarded-For": p.ip()})
    p.record("GET /login?next= with CR LF", 0 < shown.status < 500,
             f"answered {shown.status}")
    if p.console is None or not p.credentials:
        p.skip("signing in with a next= carrying CR LF",
               f"needs staff credentials: {p.console_problem or 'none given'}")
        return
    email, password = p.credentials
    fresh = Console(p.base_url, p.ip())
    answer, _ = fresh.submit("/login?next=" + quote(CRLF_NEXT, safe=""),
                             {"email": email, "password": password, "next": CRLF_NEXT})
    location = answer.location or ""
    injected = "\r" in location or "\n" in location or "evil.example" in location
    p.record("signing in with a next= carrying CR LF", 0 < answer.status < 500 and not injected,
             f"answered {answer.status}" + (f" to {location!r}" if location else ""))


def console_imports(p: Probe) -> None:
    names = ("CSV import with a field over 131,072 characters",
             "JSON import with a 5,000-digit number")
    if p.console is None:
        for name in names:
            p.skip(name, f"console only, needs a console session: {p.console_problem}")
        return
    row = {column: "" for column in CSV_COLUMNS}
    row.update(account_external_id=f"probe-csv-{p.run}", account_name="Probe CSV",
               contact_external_id=f"probe-csv-{p.run}-c", name="N" * 140_000,
               email=f"csv.{p.run}@example.org", role="admin", locale="en")
    csv_text = ",".join(CSV_COLUMNS) + "\n" + ",".join(f'"{row[c]}"' for c in CSV_COLUMNS)
    document = ('{"accounts": [{"external_id": "probe-json", "name": %s}]}'
                % ("9" * 5000)).encode()
    for name, filename, content, mimetype in (
            (names[0], "contacts.csv", (csv_text + "\n").encode(), "text/csv"),
            (names[1], "contacts.json", document, "application/json")):
        answer = p.console.upload("/console/import", {}, {"file": (filename, content, mimetype)})
        if answer.status in (302, 303, 403):
            p.skip(name, f"the console import answered {answer.status}: the staff account is "
                         "not an admin, or the session ended")
            continue
        p.record(name, 400 <= answer.status < 500,
                 f"answered {answer.status}: {snippet(answer.body, 100)}")


# -- 7. intake limits ------------------------------------------------------------------------


def spellings(local: str, domain: str, count: int) -> list[str]:
    """`count` spellings of one mailbox: plus-tags and case."""
    first = [f"{local}+1@{domain}", f"{local.upper()}@{domain.upper()}",
             f"{local}+probe@{domain}", f"{local.title()}@{domain}"]
    more = [f"{local}+{index}@{domain}" for index in range(2, count + 2)]
    return (first + more)[:count]


def accepted_then_refused(statuses: list[int], accepted: tuple[int, ...], limit: int) -> bool:
    return (all(status in accepted for status in statuses[:limit])
            and all(status == 429 for status in statuses[limit:]))


def intake_limits(p: Probe) -> None:
    limit = p.limits.per_email
    addresses = spellings(f"same.person.{p.run}", "example.net", limit + 1)
    statuses = [p.call("POST", "/api/v1/requests", {"email": email, "message": "Help"},
                       public=True).status for email in addresses]
    p.record(f"{limit + 1} spellings of one address share its limit of {limit}",
             accepted_then_refused(statuses, (202,), limit),
             f"answers {statuses}" + ("" if statuses[-1] == 429 else
                                      f": {addresses[-1]!r} was still accepted"))

    email = f"shared.{p.run}@example.edu"
    statuses = []
    for index in range(limit + 2):
        if index % 2:
            answer = p.page("/contact", {"email": email, "message": "Help", "severity": "normal"})
        else:
            answer = p.call("POST", "/api/v1/requests", {"email": email, "message": "Help"},
                            public=True)
        statuses.append(answer.status)
    p.record(f"the form and the API share one limit of {limit} per address",
             accepted_then_refused(statuses, (202, 303), limit),
             f"answers, API and form in turn: {statuses}")

    limit = p.limits.per_domain
    if limit > 300:
        p.skip("subdomains share their domain's limit", f"the limit ({limit}) is too high to "
                                                          "probe quickly")
        return
    statuses = [p.call("POST", "/api/v1/requests", {
        "email": f"p{index}.{p.run}@sub{index}.bigcorp.example.com", "message": "Help"},
        public=True).status for index in range(limit + 1)]
    p.record(f"{limit + 1} subdomains share their domain's limit of {limit}",
             accepted_then_refused(statuses, (202,), limit),
             f"{statuses.count(202)} accepted, last answered {statuses[-1]}")


# -- running ---------------------------------------------------------------------------------

GROUPS: tuple[tuple[str, Callable[[Probe], None]], ...] = (
    ("request page", request_page_takeover),
    ("intake limits", intake_limits),
    ("atom feed", atom_feed),
    ("bad input", bad_input),
    ("ssrf", webhooks_to_inside_addresses),
    ("slow webhook", slow_webhook_and_email),
    ("webhook redirect", webhook_redirects),
    ("templates", template_bombs),  # last: a vulnerable server may stay busy afterwards
)


def run_groups(p: Probe) -> None:
    for group, probe in GROUPS:
        p.group = group
        p.say("starting")
        try:
            probe(p)
        except SetupError as exc:
            p.record("setup", False, f"could not be tried: {exc}")
        except (OSError, ValueError, KeyError) as exc:
            p.record("setup", False, f"stopped by {type(exc).__name__}: {exc}")


def limit_count(text: str) -> int:
    return int(text.split()[0])


def configured_limits(args) -> Limits:
    intake = tomllib.loads(DEFAULTS.read_text())
    per_email = args.per_email_limit or limit_count(intake["intake"]["rate_limit_per_email"])
    per_domain = args.per_domain_limit or limit_count(intake["intake"]["rate_limit_per_domain"])
    return Limits(per_email=per_email, per_domain=per_domain,
                  intake_body=intake["intake"]["max_body_bytes"],
                  server_body=intake["server"]["max_body_bytes"])


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m tests.security.probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running Lifeline (default: start one)")
    parser.add_argument("--token", default=os.environ.get("LIFELINE_PROBE_TOKEN"),
                        help="with --url: an API token with every scope "
                             "(or LIFELINE_PROBE_TOKEN)")
    parser.add_argument("--smtp-port", type=int, default=0,
                        help="port of the probe's SMTP sink on 127.0.0.1, where Lifeline "
                             "sends its mail (default: a free one, for a local Lifeline)")
    parser.add_argument("--webhook-receiver", help="HOST:PORT on a loopback address for the "
                        "slow endpoint; the running Lifeline must allow it")
    parser.add_argument("--staff-email", help="with --url: an admin for the console probes")
    parser.add_argument("--staff-password", default=os.environ.get("LIFELINE_PROBE_PASSWORD"),
                        help="its password (or LIFELINE_PROBE_PASSWORD)")
    parser.add_argument("--totp-secret", default=os.environ.get("LIFELINE_PROBE_TOTP"),
                        help="its TOTP secret, when sign-in asks for a second factor")
    parser.add_argument("--database-url", help="a local Lifeline: a PostgreSQL server URL "
                        "on which a scratch database is made and dropped (default: SQLite)")
    parser.add_argument("--per-email-limit", type=int, help="with --url: the server's "
                        "[intake] rate_limit_per_email count (default: config/default.toml)")
    parser.add_argument("--per-domain-limit", type=int, help="with --url: its "
                        "rate_limit_per_domain count (default: config/default.toml)")
    args = parser.parse_args(argv)
    if args.url and not args.token:
        parser.error("--url needs --token (or LIFELINE_PROBE_TOKEN)")
    if args.url and args.database_url:
        parser.error("--database-url is for a local Lifeline")
    if args.url and not args.smtp_port:
        parser.error("--url needs --smtp-port: the port Lifeline sends its mail to")
    if args.webhook_receiver:
        host, _, port = args.webhook_receiver.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port.isdigit():
            parser.error("--webhook-receiver must be 127.0.0.1:PORT (loopback only)")
    return args


@dataclass(frozen=True)
class Target:
    base_url: str
    token: str
    limits: Limits
    credentials: tuple[str, str] | None


def main(argv=None) -> int:
    args = parse_args(argv)
    sink = MailSink()
    sink.start(args.smtp_port)
    receiver: Receiver | None = None
    local: ProbeLifeline | None = None
    workdir = Path(tempfile.mkdtemp(prefix="lifeline-probe-"))
    try:
        if args.webhook_receiver or not args.url:
            host, _, port = (args.webhook_receiver or "127.0.0.1:0").rpartition(":")
            receiver = Receiver(host=host.strip("[]"), port=int(port))
            receiver.start()
        if args.url:
            target = Target(args.url.rstrip("/"), args.token, configured_limits(args),
                            (args.staff_email, args.staff_password)
                            if args.staff_email and args.staff_password else None)
        else:
            local = ProbeLifeline(workdir=workdir, smtp_port=sink.port,
                                  database_url=args.database_url, extra={
                                      **LOCAL_LIMITS, ALLOWANCE_VARIABLE: receiver.receiver})
            target = start_local(local, args)
        probe = start_probe(args, target, sink, receiver)
        if probe is None:
            return 2
        run_groups(probe)
    except RuntimeError as exc:  # the local Lifeline did not start
        print(f"harness: {exc}", file=sys.stderr)
        return 2
    finally:
        if receiver is not None:
            receiver.stop()
        if local is not None:
            local.stop()
            local.drop_database()
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return summary(probe.outcomes)


def start_local(local: ProbeLifeline, args) -> Target:
    """Migrate, make a token and an admin with the CLI, serve."""
    print(f"harness: starting a local Lifeline on a scratch "
          f"{'PostgreSQL' if args.database_url else 'SQLite'} database", file=sys.stderr,
          flush=True)
    token = local.start()
    email = f"probe.admin.{secrets.token_hex(3)}@example.org"
    limits = replace(configured_limits(args),
                     per_email=limit_count(LOCAL_LIMITS["LIFELINE_INTAKE_RATE_LIMIT_PER_EMAIL"]),
                     per_domain=limit_count(
                         LOCAL_LIMITS["LIFELINE_INTAKE_RATE_LIMIT_PER_DOMAIN"]))
    return Target(local.base_url, token, limits, (email, local.create_staff(email, "admin")))


def start_probe(args, target: Target, sink: MailSink, receiver: Receiver | None
                ) -> Probe | None:
    api = Client(target.base_url, target.token, timeout=30)
    who = api.call("GET", "/api/v1/token")
    if who.status != 200:
        print(f"harness: the token does not open /api/v1/token ({who.status})", file=sys.stderr)
        return None
    console, problem = None, "no --staff-email and --staff-password given"
    if target.credentials:
        console = Console(target.base_url, "198.51.100.254")
        problem = console.sign_in(*target.credentials, totp_secret=args.totp_secret)
        if problem:
            console = None
    probe = Probe(base_url=target.base_url, api=api, sink=sink, limits=target.limits,
                  console=console, console_problem=problem, receiver=receiver,
                  credentials=target.credentials)
    limits = target.limits
    print(f"harness: Lifeline at {target.base_url}, token ok, SMTP sink on 127.0.0.1:"
          f"{sink.port}, console {'signed in' if console else 'unavailable: ' + problem}, "
          f"webhook receiver {receiver.receiver if receiver else 'none'}, limits "
          f"{limits.per_email} per email / {limits.per_domain} per domain, run {probe.run}",
          file=sys.stderr, flush=True)
    return probe


def summary(outcomes: list[Outcome]) -> int:
    passed = sum(1 for outcome in outcomes if outcome.verdict == "PASS")
    failed = sum(1 for outcome in outcomes if outcome.verdict == "FAIL")
    skipped = sum(1 for outcome in outcomes if outcome.verdict == "SKIP")
    if skipped:
        print(f"({skipped} skipped: see the SKIP lines)")
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""Update templates: Jinja2 in a bounded sandbox (comms staff write them, see sandbox.py),
checked at save time against several sample audiences, versioned per kind and locale,
defaults on disk; at publish, a saved template that fails for an audience gives way to the
default one, and the failure is recorded.

A template is refused when it does not parse, reaches for what the sandbox forbids, goes past
its limits, fails for one of the sample audiences, or leaves out a required field. The check
renders it with a unique marker in each required field and looks for every marker in the
output, then renders it again with realistic values.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import TemplateSyntaxError, select_autoescape
from jinja2.exceptions import SecurityError

from contacts.core.errors import Invalid
from contacts.incidents import sandbox, sandbox_bounds

KINDS = {"subject": "subject.txt", "text": "body.txt", "html": "body.html"}
LOCALES = ("en", "fr")
# Every update states these; a template that does not show one of them is refused.
REQUIRED = ("what_happened", "scope", "timeline", "next_update", "restore_percentage",
            "data_loss", "confidence_timeline", "confidence_restore", "confidence_data_loss",
            "support")
# The subject line is short: it must name the incident and its restore percentage.
REQUIRED_IN_SUBJECT = ("incident_title", "restore_percentage")
# Saved templates may spend this long in all on one publish's audiences; past it, the rest
# get the default templates (a template may take up to sandbox_bounds.RENDER_SECONDS each time).
PUBLISH_TEMPLATE_SECONDS = 10.0

_environment = sandbox.BoundedSandbox(
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    trim_blocks=True, lstrip_blocks=True)
_html_environment = sandbox.BoundedSandbox(autoescape=True, trim_blocks=True,
                                           lstrip_blocks=True)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def required_for(kind: str) -> tuple[str, ...]:
    return REQUIRED_IN_SUBJECT if kind == "subject" else REQUIRED


def default_source(templates_dir: Path, kind: str, locale: str) -> str:
    return (templates_dir / "messages" / "incident_update" / locale / KINDS[kind]).read_text(
        "utf-8")


def default_sources(templates_dir: Path) -> dict[str, dict[str, str]]:
    """Per language, the default template of each kind."""
    return {locale: {kind: default_source(templates_dir, kind, locale) for kind in KINDS}
            for locale in LOCALES}


def _problem(kind: str, exc: Exception, audience: str = "") -> Invalid:
    """What went wrong, said to the template's author; any exception is the template's."""
    where = f" for {audience}" if audience else ""
    if isinstance(exc, TemplateSyntaxError):
        text, problem = f"does not parse (line {exc.lineno}): {exc.message}", "syntax"
    elif isinstance(exc, sandbox_bounds.OverBudget):
        text, problem = f"is too costly{where}: it {exc}", "over_budget"
    elif isinstance(exc, sandbox_bounds.Refused):
        text, problem = f"reaches for something the sandbox forbids{where}: it {exc}", "unsafe"
    elif isinstance(exc, SecurityError):
        text, problem = f"reaches for something the sandbox forbids{where}: {exc}", "unsafe"
    else:
        name = "" if type(exc).__module__.startswith("jinja2") else f"{type(exc).__name__}: "
        text, problem = f"failed to render{where}: {name}{exc}", "failed"
    return Invalid(f"the {kind} template {text}"[:500], details={"problem": problem})


@functools.lru_cache(maxsize=64)
def _compile(kind: str, source: str):
    """Compiled once per kind and source: a fan-out renders the same few templates for
    every account."""
    environment = _html_environment if kind == "html" else _environment
    try:
        return environment.from_string(source)
    except Exception as exc:  # staff's source: every failure is said to them
        raise _problem(kind, exc) from None


def render(kind: str, source: str, values: dict, audience: str = "",
           trusted: bool = False) -> str:
    """`trusted` for the default templates on disk: larger bounds (see sandbox.budget)."""
    template = _compile(kind, source)
    try:
        with sandbox.budget(trusted=trusted):
            return template.render(**values)
    except Exception as exc:  # the template is code staff wrote: any failure is its own
        raise _problem(kind, exc, audience) from None


def _sites(count: int, restored: int) -> list[dict]:
    return [{"name": f"site-{n}.example", "stage": "validated by us" if n < restored
             else "queued"} for n in range(count)]


# Who an update goes to, varied the ways a template might trip on: one site or many, none
# or all restored, `number - 2 == 0`, the public audience with no account at all.
SAMPLE_AUDIENCES: tuple[tuple[str, dict], ...] = (
    ("an account with one site, none restored, in update 1",
     {"number": 1, "incident_state": "investigating", "account_name": "Account",
      "account_sites": _sites(1, 0), "account_percentage": "0%", "restore_percentage": "0%"}),
    ("an account with 40 sites, half restored, in update 2",
     {"number": 2, "incident_state": "identified", "account_name": "Big & <Co>",
      "account_sites": _sites(40, 20), "account_percentage": "50%",
      "restore_percentage": "33.3%"}),
    ("an account with every site restored, in update 3",
     {"number": 3, "incident_state": "resolved", "account_name": "Account",
      "account_sites": _sites(3, 3), "account_percentage": "100%",
      "restore_percentage": "100%", "next_update": "none: the incident is over"}),
    ("a public subscriber (no account), in update 10",
     {"number": 10, "incident_state": "monitoring", "account_name": "",
      "account_sites": [], "account_percentage": "", "private_link": "",
      "restore_percentage": "100%"}),
)
_REALISTIC = {
    "incident_title": "Sites deleted & <restored>", "incident_state": "investigating",
    "number": 1, "what_happened": "A maintenance script deleted sites instead of apps.",
    "scope": "30 sites of 25 customer accounts are affected; no other customer is.",
    "timeline": "Restores run in waves; all sites back within 4 days.",
    "next_update": "2026-01-01 09:34 UTC", "restore_percentage": "0%",
    "data_loss": "Changes made after 07:33 UTC, at most 5 minutes.",
    "confidence_timeline": "medium", "confidence_restore": "high",
    "confidence_data_loss": "low", "support": "https://support.example/contact",
    "status_link": "https://status.example/status/inc_1",
    "private_link": "https://status.example/status/inc_1/accounts/acc_1?t=x",
    "account_name": "Account", "account_sites": [], "account_percentage": "0%"}


def check(kind: str, source: str, locale: str = "en") -> None:
    """Refuse a template that does not parse, is unsafe or too costly, fails for one of the
    sample audiences, or leaves out a required field for one of them."""
    if kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}")
    _compile(kind, source)
    markers = {name: f"@@{name}@@" for name in (*REQUIRED, *REQUIRED_IN_SUBJECT)}
    for index, (audience, values) in enumerate(SAMPLE_AUDIENCES):
        marked = in_language({**_REALISTIC, **values, **markers}, locale)
        output = render(kind, source, marked, audience)
        missing = [name for name in required_for(kind) if markers[name] not in output]
        if missing:
            raise Invalid(f"the {kind} template leaves out required fields: "
                          f"{', '.join(missing)}" + (f" (for {audience})" if index else ""),
                          details={"missing": missing})
        render(kind, source, in_language({**_REALISTIC, **values}, locale), audience)


@dataclass
class TemplateFailures:
    """One publish's saved templates that failed: the audience got the default template of
    that kind and language instead, and each failure is counted with its first message. A
    template too costly once is not tried again in the same publish."""

    defaults: dict[str, dict[str, str]]  # language -> kind -> source
    failures: dict[tuple[str, str], dict] = field(default_factory=dict)
    given_up: set[tuple[str, str]] = field(default_factory=set)
    seconds: float = 0.0

    def render(self, kind: str, source: str, values: dict, language: str) -> str:
        default = self.defaults[language][kind]
        if source == default:
            return render(kind, default, values, trusted=True)
        if self.seconds > PUBLISH_TEMPLATE_SECONDS and (kind, language) not in self.given_up:
            self._failed(kind, language, Invalid(
                f"the {kind} template is too costly: the saved templates took more than "
                f"{PUBLISH_TEMPLATE_SECONDS:g} s over this update's audiences",
                details={"problem": "over_budget"}))
        if (kind, language) in self.given_up:
            return self._fallback(kind, language, values)
        started = time.monotonic()
        try:
            return render(kind, source, values)
        except Invalid as exc:
            self._failed(kind, language, exc)
            return self._fallback(kind, language, values)
        finally:
            self.seconds += time.monotonic() - started

    def _failed(self, kind: str, language: str, exc: Invalid) -> None:
        self.failures.setdefault((kind, language), {
            "kind": kind, "locale": language, "audiences": 0, "error": exc.message})
        if (exc.details or {}).get("problem") == "over_budget":
            self.given_up.add((kind, language))

    def _fallback(self, kind: str, language: str, values: dict) -> str:
        self.failures[(kind, language)]["audiences"] += 1
        return render(kind, self.defaults[language][kind], values, trusted=True)

    def summary(self) -> list[dict]:
        return [dict(failure) for _, failure in sorted(self.failures.items())]


# The words an update's values are written in, per language (English is the stored form).
WORDS = {"fr": {
    "low": "faible", "medium": "moyenne", "high": "élevée",
    "investigating": "analyse en cours", "identified": "cause identifiée",
    "monitoring": "sous surveillance", "resolved": "résolu",
    "post incident review": "analyse post-incident", "queued": "en attente",
    "data restored": "données restaurées", "identity restored": "identité restaurée",
    "validated by us": "validé par nos équipes", "validated by customer": "validé par vous",
}}
_TRANSLATED = ("confidence_timeline", "confidence_restore", "confidence_data_loss",
               "incident_state")


def language_of(locale: str) -> str:
    return "fr" if locale.lower().startswith("fr") else "en"


def in_language(values: dict, language: str) -> dict:
    """The values with their fixed words (confidence levels, states, stages) in `language`."""
    words = WORDS.get(language)
    if not words:
        return values
    localized = {**values, **{name: words.get(values[name], values[name])
                              for name in _TRANSLATED if name in values}}
    if values.get("account_sites"):
        localized["account_sites"] = [{**site, "stage": words.get(site["stage"], site["stage"])}
                                      for site in values["account_sites"]]
    return localized


def render_update(sources: dict[str, str], values: dict, language: str = "en",
                  failures: TemplateFailures | None = None) -> Rendered:
    """The update in `language`; with `failures`, a saved template that fails gives way to
    the default (and is recorded there) instead of failing the update."""
    values = in_language(values, language)

    def part(kind: str) -> str:
        if failures is None:
            return render(kind, sources[kind], values)
        return failures.render(kind, sources[kind], values, language)

    return Rendered(subject=" ".join(part("subject").split()), text=part("text"),
                    html=part("html"))

"""Update templates: Jinja2 in a sandbox (comms staff write them), checked at save time to
render every required field, versioned per kind and locale, defaults on disk.

A template is refused when it does not parse, reaches for what the sandbox forbids, or
leaves out a required field. The check renders it with a unique marker in each required
field and looks for every marker in the output.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from jinja2 import TemplateError, select_autoescape
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from contacts.errors import Invalid

KINDS = {"subject": "subject.txt", "text": "body.txt", "html": "body.html"}
LOCALES = ("en", "fr")
# Every update states these; a template that does not show one of them is refused.
REQUIRED = ("what_happened", "scope", "timeline", "next_update", "restore_percentage",
            "data_loss", "confidence_timeline", "confidence_restore", "confidence_data_loss",
            "support")
# The subject line is short: it must name the incident and its restore percentage.
REQUIRED_IN_SUBJECT = ("incident_title", "restore_percentage")

_environment = ImmutableSandboxedEnvironment(
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    trim_blocks=True, lstrip_blocks=True)
_html_environment = ImmutableSandboxedEnvironment(autoescape=True, trim_blocks=True,
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


@functools.lru_cache(maxsize=64)
def _compile(kind: str, source: str):
    """Compiled once per kind and source: a fan-out renders the same few templates for
    every account."""
    environment = _html_environment if kind == "html" else _environment
    try:
        return environment.from_string(source)
    except TemplateError as exc:
        raise Invalid(f"the {kind} template does not parse: {exc}") from None


def render(kind: str, source: str, values: dict) -> str:
    try:
        return _compile(kind, source).render(**values)
    except SecurityError as exc:
        raise Invalid(f"the {kind} template reaches for something the sandbox forbids: "
                      f"{exc}") from None
    except TemplateError as exc:
        raise Invalid(f"the {kind} template failed to render: {exc}") from None


def check(kind: str, source: str) -> None:
    """Refuse a template that does not parse, is unsafe, or leaves out a required field."""
    if kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}")
    markers = {name: f"@@{name}@@" for name in (*REQUIRED, *REQUIRED_IN_SUBJECT)}
    sample = {**markers, "account_name": "Account", "account_sites": [],
              "account_percentage": "0%", "incident_state": "investigating",
              "status_link": "https://status.example/", "private_link": "https://p.example/",
              "number": 1, "late": False}
    output = render(kind, source, sample)
    missing = [name for name in required_for(kind) if markers[name] not in output]
    if missing:
        raise Invalid(f"the {kind} template leaves out required fields: {', '.join(missing)}",
                      details={"missing": missing})


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


def render_update(sources: dict[str, str], values: dict, language: str = "en") -> Rendered:
    values = in_language(values, language)
    return Rendered(subject=" ".join(render("subject", sources["subject"], values).split()),
                    text=render("text", sources["text"], values),
                    html=render("html", sources["html"], values))

"""What outsiders send: request bodies capped before anything reads them (with a
Content-Length or chunked), and JSON parsed with bounds on nesting and numbers.

Every JSON the app reads from outside goes through `parse_json`: API bodies (the app's JSON
provider, so `request.get_json()` anywhere), the sync document and import files. A JSON
number of 5,000 digits, 100,000 nested brackets or `1e999` is refused as `Invalid` naming the
problem, before it can reach Python's int-conversion limit, the recursion limit or a float
column; so is a lone surrogate escape (`"\\ud800"`), which no database or digest can encode.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge

from contacts.core.errors import Invalid

MAX_DEPTH = 64  # the sync document, the deepest we take, nests 6 levels
MAX_NUMBER_CHARS = 100

# A JSON string, or an unterminated one up to the end of the text; possessive, so it matches
# in one pass and never backtracks (a text of 100,000 quotes is as fast as any other).
_STRING = re.compile(r'"(?:[^"\\]|\\[\s\S]?)*+(?:"|\Z)')
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_ONE_KIND_OF_BRACKET = str.maketrans("{}", "[]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Refused(Exception):
    """Raised from inside the decoder's hooks; parse_json turns it into Invalid."""


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"has a number longer than {MAX_NUMBER_CHARS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"has a number longer than {MAX_NUMBER_CHARS} characters")
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"has a number too large to use ({text[:20]})")
    return value


def _parse_constant(text: str) -> float:
    raise _Refused(f"has {text}, which is not a JSON value")


def _nests_too_deeply(text: str) -> bool:
    """Whether any bracket lies deeper than MAX_DEPTH, from the brackets outside strings.
    Each round removes every innermost pair, so a balanced document is gone after as many
    rounds as it is deep; an unbalanced one is left to the parser to name."""
    brackets = _NOT_A_BRACKET.sub("", _STRING.sub("", text)).translate(_ONE_KIND_OF_BRACKET)
    for _ in range(MAX_DEPTH):
        fewer = brackets.replace("[]", "")
        if len(fewer) == len(brackets):
            return False
        brackets = fewer
    return "[]" in brackets


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a string holds half a character (a lone \\udXXX escape), which no database,
    log or digest can encode; a pair of escapes (an emoji) decodes to one character."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def parse_json(data: str | bytes, *, name: str = "The body", **decoder_options: Any) -> Any:
    """Parse JSON from outside; anything unusable is `Invalid("<name> ...")`.

    Size is bounded where the text is read (the request's cap, a file the operator chose);
    `decoder_options` go to `json.loads` (Flask's session serializer passes object_hook).
    """
    if isinstance(data, bytes | bytearray):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Invalid(f"{name} is not UTF-8 text.") from None
    if _nests_too_deeply(data):
        raise Invalid(f"{name} is nested too deeply (more than {MAX_DEPTH} levels).")
    try:
        document = json.loads(data, parse_int=_parse_int, parse_float=_parse_float,
                              parse_constant=_parse_constant, **decoder_options)
    except json.JSONDecodeError as exc:
        raise Invalid(f"{name} is not valid JSON: {exc.msg} at line {exc.lineno} column "
                      f"{exc.colno}.") from None
    except _Refused as exc:
        raise Invalid(f"{name} {exc}.") from None
    except RecursionError:  # unbalanced openers the depth scan leaves to the parser
        raise Invalid(f"{name} is nested too deeply (more than {MAX_DEPTH} levels).") from None
    if _SURROGATE_ESCAPE.search(data) and _has_lone_surrogate(document):
        raise Invalid(f"{name} has a text with half a character in it (a lone surrogate "
                      "escape, \\udXXX).")
    return document


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, with every body read through `parse_json`."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return parse_json(s, **kwargs)


def has_body(request) -> bool:
    """A body announced by its length, or sent chunked (no Content-Length at all)."""
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return bool(request.content_length) or chunked


def cap_bodies(blueprint, setting: str) -> None:
    """Bodies sent to this blueprint's views are capped at the bytes of `setting` (for
    example "intake_max_body_bytes") instead of server.max_body_bytes."""
    blueprint.body_cap_setting = setting


def init_app(app, settings) -> None:
    """Call before any other before_request hook: the cap must hold before a body is read."""
    app.json = BoundedJSONProvider(app)

    @app.before_request
    def cap_request_body():
        from flask import request

        blueprint = app.blueprints.get(request.blueprint or "")
        setting = getattr(blueprint, "body_cap_setting", None)
        cap = getattr(settings, setting) if setting else settings.server_max_body_bytes
        request.max_content_length = cap
        if (request.content_length or 0) > cap:
            raise RequestEntityTooLarge()
        if request.content_length is None and has_body(request):
            # A chunked body has no length to check. Werkzeug's stream stops at the cap and
            # hands on what it read, cut: read one byte more, so a longer body is refused
            # whole (forms and JSON then parse this cached copy).
            request.max_content_length = cap + 1
            if len(request.get_data(cache=True)) > cap:
                raise RequestEntityTooLarge()

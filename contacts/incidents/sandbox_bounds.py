"""The bounds of the template sandbox (sandbox.py), and the checks an operation passes
before it runs, so that no template comms staff write can freeze the server or exhaust its
memory.

Every value a template makes (a literal, an operator, a filter, a test, a call, a `~`) is
measured when it is made and refused past MAX_VALUE characters or items, and any number past
MAX_INT_BITS; where the operation itself could be huge or slow it is checked before it runs:
every arithmetic operator (`+ - * / // % **`, unary `-` and `+`) takes numbers of at most
MAX_INT_BITS and `*`/`**` may not make more, `%` and `format` widths and precisions are read
as Python reads them (no `%(name)` keys, no `*`), `range`, `batch`, `slice`, `center`,
`indent`, `replace`, `join`, `round`, `int`/`float` of text, `title` and `wordwrap`
(MAX_WORDED_TEXT, MAX_WRAP_LINES), `tojson` (indent up to MAX_JSON_INDENT, written piece by
piece up to MAX_VALUE) and the filters that sort or go through items (MAX_ITEMS). A
render's steps (loop iterations, calls, operators, filters, tests), what it makes in all,
what it writes and its time are bounded too (the sandbox's Budget).
"""

from __future__ import annotations

import re
from collections import abc
from collections.abc import Iterator

from jinja2.exceptions import SecurityError
from jinja2.runtime import Undefined

MAX_SOURCE = 50_000  # characters of one template
MAX_VALUE = 1_000_000  # characters (or items) of any one value a template makes
MAX_MADE = 20_000_000  # characters (or items) one render makes in all
MAX_OUTPUT = 1_000_000  # characters one render writes (text a macro writes counts each time)
MAX_STEPS = 100_000  # loop iterations, calls, operators, filters and tests of one render
MAX_RANGE = 10_000  # items of one range(), batch or slice
MAX_INT_BITS = 4_096  # bits of any number a template makes or computes with (1,233 digits)
MAX_EXPONENT = 1_000  # of `**`, and the digits `round` may round to
MAX_NUMBER_TEXT = 5_000  # characters of text the `int` and `float` filters read
MAX_WRAP_LINES = 2_000  # lines `wordwrap` may cut text into (its work grows with them)
MAX_JSON_INDENT = 8  # spaces of `tojson`'s indent
# Items `sort`, `unique`, `groupby`, `dictsort`, `min`, `max`, `xmlattr` and `urlencode`
# take: each works item by item in Python.
MAX_ITEMS = 100_000
MAX_WORDED_TEXT = 100_000  # characters `title` and `wordwrap` take (they work word by word)
RENDER_SECONDS = 1.0
# The default templates on disk are ours: they get this many times the steps, output and
# time, so an account with tens of thousands of sites still gets its list.
TRUSTED_SCALE = 100

_DIGITS = re.compile(r"[0-9]*")  # Python's % reads ASCII digits only
_TOO_BIG_A_NUMBER = f"makes a number of more than {MAX_INT_BITS:,} bits"


class Refused(SecurityError):
    """The template uses something templates do not get."""


class OverBudget(SecurityError):
    """The template goes past one of the sandbox's bounds."""


def size(value, limit: int = MAX_VALUE) -> int:
    """Characters and items in `value`, through nested containers (a value held twice counts
    twice: it is printed twice); refused past `limit`, so counting costs at most that."""
    total, pending = 0, [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, bool | float) or item is None or isinstance(item, Undefined):
            total += 1
        elif isinstance(item, int):
            checked_number(item)
            total += item.bit_length() // 3 + 1
        elif isinstance(item, abc.Iterator):  # a loop or a generator: counting would use it
            total += 1
        elif isinstance(item, abc.Mapping):
            total += len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, abc.Collection) and not isinstance(item, range):
            total += len(item)
            pending.extend(item)
        else:  # a range, a loop, a macro, a generator: printed short
            total += 1
        if total > limit:
            raise OverBudget(f"makes a value of more than {limit:,} characters or items")
    return total


def checked_number(value) -> None:
    """A number a template makes or computes with: at most MAX_INT_BITS."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise OverBudget(_TOO_BIG_A_NUMBER)


def checked_power(base, exponent) -> None:
    if not isinstance(exponent, int | float) or not isinstance(base, int | float):
        return
    if abs(exponent) > MAX_EXPONENT:
        raise OverBudget(f"raises a number to a power over {MAX_EXPONENT:,}")
    if (isinstance(base, int) and isinstance(exponent, int) and exponent > 0
            and abs(base) > 1 and base.bit_length() * exponent > MAX_INT_BITS):
        raise OverBudget(_TOO_BIG_A_NUMBER)


def checked_product(left, right) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise OverBudget(_TOO_BIG_A_NUMBER)
        return
    sequence, times = (left, right) if isinstance(right, int) else (right, left)
    if isinstance(times, int) and isinstance(sequence, str | list | tuple) and times > 0:
        if times > MAX_VALUE or size(sequence) * times > MAX_VALUE:
            raise OverBudget(f"repeats a value past {MAX_VALUE:,} characters or items")


def checked_percent(template: str, arguments) -> None:
    """Each conversion prints its own argument once (no `%(name)` key may print one value
    many times), at most as wide as its width or precision, which Python reads unbounded."""
    widths = 0
    for key, numbers in _percent_specs(template):
        if key is not None:
            raise Refused(f"uses a %({key[:40]}) key in a % format: give the values in order")
        for number in numbers:
            if number == "*":
                raise Refused("uses a * width in a % format")
            if len(number) > len(str(MAX_VALUE)) or int(number or 0) > MAX_VALUE:
                raise OverBudget(f"formats wider than {MAX_VALUE:,} characters")
            widths += int(number or 0)
    if len(template) + widths + size(arguments) > MAX_VALUE:
        raise OverBudget(f"formats text past {MAX_VALUE:,} characters")


def _percent_specs(template: str) -> Iterator[tuple[str | None, tuple[str, str]]]:
    """(key or None, (width, precision)) of each conversion in a printf-style `template`,
    read as CPython reads it: a key's brackets balance, then flags, width (digits or `*`),
    `.` and precision, a length modifier and the conversion character (`%%` included)."""
    position, end = 0, len(template)
    while (position := template.find("%", position)) != -1:
        position, key = position + 1, None
        if template.startswith("(", position):
            depth, start = 1, position + 1
            position = start
            while depth and position < end:
                depth += {"(": 1, ")": -1}.get(template[position], 0)
                position += 1
            key = template[start:position - 1]
        while position < end and template[position] in "-+ #0":
            position += 1
        width, position = _percent_number(template, position)
        precision = ""
        if template.startswith(".", position):
            precision, position = _percent_number(template, position + 1)
        if position < end and template[position] in "hlL":
            position += 1
        position += 1  # the conversion character
        yield key, (width, precision)


def _percent_number(template: str, position: int) -> tuple[str, int]:
    if template.startswith("*", position):
        return "*", position + 1
    digits = _DIGITS.match(template, position).group()
    return digits, position + len(digits)


# -- filters: a few are checked before they run, where their arguments could make them huge.


def _guard_center(value, width=80):
    if isinstance(width, int) and width > MAX_VALUE:
        raise OverBudget(f"centers text wider than {MAX_VALUE:,} characters")
    return value


def _guard_indent(value, width=4, first=False, blank=False):
    step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if (str(value).count("\n") + 1) * max(step, 0) + size(value) > MAX_VALUE:
        raise OverBudget(f"indents text past {MAX_VALUE:,} characters")
    return value


def _guard_format(value, *args, **kwargs):
    if kwargs:
        raise Refused("uses format with names: give the values in order")
    checked_percent(str(value), args)
    return value


def guard_join(value, d="", attribute=None):
    items = list(value) if isinstance(value, abc.Iterable) else value
    count = len(items) if isinstance(items, abc.Sized) else 0
    if size(items) + len(str(d)) * max(count - 1, 0) > MAX_VALUE:
        raise OverBudget(f"joins text past {MAX_VALUE:,} characters")
    return items


def _guard_replace(value, old, new, count=None):
    checked_replace(str(value), str(old), str(new), count)
    return value


def checked_replace(text: str, old: str, new: str, count=None) -> None:
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    if len(text) + found * max(len(new) - len(old), 0) > MAX_VALUE:
        raise OverBudget(f"replaces text past {MAX_VALUE:,} characters")


def _guard_count(value, count, *args, **kwargs):
    if isinstance(count, int) and count > MAX_RANGE:
        raise OverBudget(f"makes more than {MAX_RANGE:,} groups")
    return value


def _guard_number_text(value, *args, **kwargs):
    if isinstance(value, str) and len(value) > MAX_NUMBER_TEXT:
        raise OverBudget(f"reads a number from more than {MAX_NUMBER_TEXT:,} characters")
    return value


def _guard_round(value, precision=0, method="common"):
    # round(int, -n) and the ceil and floor methods compute 10 ** n.
    if isinstance(precision, int) and abs(precision) > MAX_EXPONENT:
        raise OverBudget(f"rounds to more than {MAX_EXPONENT:,} digits")
    return value


def _guard_items(value, *args, **kwargs):
    items = list(value) if isinstance(value, abc.Iterator) else value
    if isinstance(items, abc.Sized) and len(items) > MAX_ITEMS:
        raise OverBudget(f"works through more than {MAX_ITEMS:,} items at once")
    return items


def _guard_worded(value, *args, **kwargs):
    if len(str(value)) > MAX_WORDED_TEXT:
        raise OverBudget(f"works word by word through more than {MAX_WORDED_TEXT:,} "
                         "characters at once")
    return value


def _guard_sum(value, attribute=None, start=0):
    if not isinstance(start, int | float):
        raise Refused("uses sum on something other than numbers")
    return value


def _guard_wordwrap(value, width=79, break_long_words=True, wrapstring=None,
                    break_on_hyphens=True):
    # Each line cut from a long word copies the rest of it: the work is the text's length
    # times its lines.
    _guard_worded(value)
    lines = -(-len(str(value)) // max(width, 1)) if isinstance(width, int) else 1
    if lines > MAX_WRAP_LINES:
        raise OverBudget(f"wraps text into more than {MAX_WRAP_LINES:,} lines")
    if size(value) + lines * len(str(wrapstring or "\n")) > MAX_VALUE:
        raise OverBudget(f"wraps text past {MAX_VALUE:,} characters")
    return value


FILTER_GUARDS = {"center": _guard_center, "indent": _guard_indent, "format": _guard_format,
           "join": guard_join, "replace": _guard_replace, "batch": _guard_count,
           "slice": _guard_count, "sum": _guard_sum, "wordwrap": _guard_wordwrap,
           "int": _guard_number_text, "float": _guard_number_text, "round": _guard_round,
           "title": _guard_worded,
           **dict.fromkeys(("sort", "unique", "groupby", "dictsort", "min", "max", "xmlattr",
                            "urlencode"), _guard_items)}
# Tests checked before they run (divisibleby computes `value % num`).
TEST_GUARDS = {"divisibleby": lambda value, num: (checked_number(value), checked_number(num))}

"""The sandbox update templates run in: Jinja2's immutable sandbox with a budget per render,
so that no template comms staff write can freeze the server or exhaust its memory.

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
what it writes and its time are bounded too.

What is bounded is the work, not the clock: Python cannot stop a thread, so the time
(RENDER_SECONDS) is checked at every step, and a render can run past it by its last step.
The bounds above keep each step's work at most about linear in MAX_VALUE (a fraction of a
second for the slowest, `sort` at its limit), so no render runs for long or holds more than
a few times MAX_MADE characters. Templates get the update's values,
`range` and `dict`; no loader (no include, import or extends), no Python internals, no
`str.format`, no recursive loops.
"""

from __future__ import annotations

import json
import re
import time
from collections import abc
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.runtime import LoopContext, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

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

# Jinja's globals a template does not get: lipsum and cycler make text and objects nobody
# needs in an update, namespace lets a loop grow a value from one iteration to the next.
REMOVED_GLOBALS = ("lipsum", "cycler", "joiner", "namespace")
# Filters left out: urlize writes each link with caller-given attributes, pprint is for
# debugging and slow on large values.
FILTER_NAMES = tuple(sorted(set(FILTERS) - {"urlize", "pprint"}))
# Methods a template may call on the values it gets; every other method is refused.
_METHODS: tuple[tuple[tuple[type, ...], frozenset[str]], ...] = (
    ((str,), frozenset({
        "lower", "upper", "title", "capitalize", "casefold", "swapcase", "strip", "lstrip",
        "rstrip", "split", "rsplit", "splitlines", "partition", "rpartition", "startswith",
        "endswith", "count", "find", "rfind", "index", "rindex", "removeprefix",
        "removesuffix", "replace", "join", "isalnum", "isalpha", "isascii", "isdecimal",
        "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "striptags",
        "unescape"})),
    ((dict,), frozenset({"get", "items", "keys", "values"})),
    ((list, tuple, range), frozenset({"count", "index"})),
    ((LoopContext,), frozenset({"cycle", "changed"})),
)
_DIGITS = re.compile(r"[0-9]*")  # Python's % reads ASCII digits only
_TOO_BIG_A_NUMBER = f"makes a number of more than {MAX_INT_BITS:,} bits"


class Refused(SecurityError):
    """The template uses something templates do not get."""


class OverBudget(SecurityError):
    """The template goes past one of the sandbox's bounds."""


@dataclass
class Budget:
    deadline: float
    steps: int = 0
    made_total: int = 0
    written: int = 0
    seconds: float = RENDER_SECONDS
    max_steps: int = MAX_STEPS
    max_made: int = MAX_MADE
    max_output: int = MAX_OUTPUT

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise OverBudget(f"takes more than {self.max_steps:,} steps (loop iterations, "
                             "calls, operators, filters and tests)")
        self.in_time()

    def made(self, value):
        self.made_total += size(value)
        if self.made_total > self.max_made:
            raise OverBudget(f"makes more than {self.max_made:,} characters in all")
        self.in_time()
        return value

    def write(self, text: str) -> str:
        self.written += len(text)
        if self.written > self.max_output:
            raise OverBudget(f"writes more than {self.max_output:,} characters")
        self.in_time()
        return text

    def in_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise OverBudget(f"takes longer than {self.seconds:g} s to render")


_budget: ContextVar[Budget | None] = ContextVar("template_budget", default=None)


@contextmanager
def budget(*, trusted: bool = False) -> Iterator[Budget]:
    """One render's budget (per thread: each render in its own); `trusted` for our own
    default templates."""
    scale = TRUSTED_SCALE if trusted else 1
    current = Budget(deadline=time.monotonic() + RENDER_SECONDS * scale,
                     seconds=RENDER_SECONDS * scale, max_steps=MAX_STEPS * scale,
                     max_made=MAX_MADE * scale, max_output=MAX_OUTPUT * scale)
    token = _budget.set(current)
    try:
        yield current
    finally:
        _budget.reset(token)


def _current() -> Budget:
    # Outside `budget()` (no render should be): each operation is still bounded on its own.
    return _budget.get() or Budget(deadline=time.monotonic() + RENDER_SECONDS)


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


def _checked_power(base, exponent) -> None:
    if not isinstance(exponent, int | float) or not isinstance(base, int | float):
        return
    if abs(exponent) > MAX_EXPONENT:
        raise OverBudget(f"raises a number to a power over {MAX_EXPONENT:,}")
    if (isinstance(base, int) and isinstance(exponent, int) and exponent > 0
            and abs(base) > 1 and base.bit_length() * exponent > MAX_INT_BITS):
        raise OverBudget(_TOO_BIG_A_NUMBER)


def _checked_product(left, right) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise OverBudget(_TOO_BIG_A_NUMBER)
        return
    sequence, times = (left, right) if isinstance(right, int) else (right, left)
    if isinstance(times, int) and isinstance(sequence, str | list | tuple) and times > 0:
        if times > MAX_VALUE or size(sequence) * times > MAX_VALUE:
            raise OverBudget(f"repeats a value past {MAX_VALUE:,} characters or items")


def _checked_percent(template: str, arguments) -> None:
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


# -- filters: each one counts as a step and what it makes is measured; a few are checked
# before they run, where their arguments could make them huge.


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
    _checked_percent(str(value), args)
    return value


def _guard_join(value, d="", attribute=None):
    items = list(value) if isinstance(value, abc.Iterable) else value
    count = len(items) if isinstance(items, abc.Sized) else 0
    if size(items) + len(str(d)) * max(count - 1, 0) > MAX_VALUE:
        raise OverBudget(f"joins text past {MAX_VALUE:,} characters")
    return items


def _guard_replace(value, old, new, count=None):
    _checked_replace(str(value), str(old), str(new), count)
    return value


def _checked_replace(text: str, old: str, new: str, count=None) -> None:
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


_GUARDS = {"center": _guard_center, "indent": _guard_indent, "format": _guard_format,
           "join": _guard_join, "replace": _guard_replace, "batch": _guard_count,
           "slice": _guard_count, "sum": _guard_sum, "wordwrap": _guard_wordwrap,
           "int": _guard_number_text, "float": _guard_number_text, "round": _guard_round,
           "title": _guard_worded,
           **dict.fromkeys(("sort", "unique", "groupby", "dictsort", "min", "max", "xmlattr",
                            "urlencode"), _guard_items)}
# Tests checked before they run (divisibleby computes `value % num`).
_TEST_GUARDS = {"divisibleby": lambda value, num: (checked_number(value), checked_number(num))}


def _bounded_filter(function, guard=None):
    passes = getattr(getattr(function, "jinja_pass_arg", None), "name", None)

    @pass_context  # never run at compile time: a filter always runs inside a render's budget
    def run(context, value, *args, **kwargs):
        budget = _current()
        budget.step()
        if guard is not None:
            value = guard(value, *args, **kwargs)
        first = {"context": (context,), "eval_context": (context.eval_ctx,),
                 "environment": (context.environment,)}.get(passes, ())
        return budget.made(function(*first, value, *args, **kwargs))

    return run


def _bounded_test(function, guard=None):
    passes = getattr(getattr(function, "jinja_pass_arg", None), "name", None)

    @pass_context  # never folded at compile time, outside a render's budget
    def run(context, value, *args, **kwargs):
        _current().step()
        if guard is not None:
            guard(value, *args, **kwargs)
        first = {"context": (context,), "eval_context": (context.eval_ctx,),
                 "environment": (context.environment,)}.get(passes, ())
        return function(*first, value, *args, **kwargs)

    return run


def _bounded_json(value, **options) -> str:
    """`tojson`'s encoder: an indent of at most MAX_JSON_INDENT, and the text written piece
    by piece, refused once past MAX_VALUE (indents repeat with depth: the size of what is
    encoded does not bound the size of the text)."""
    indent = options.get("indent")
    width = len(indent) if isinstance(indent, str) else indent
    if indent is not None and (not isinstance(width, int) or width > MAX_JSON_INDENT):
        raise OverBudget(f"indents JSON by more than {MAX_JSON_INDENT} spaces")
    if indent is None:  # Python's C encoder, in one piece: it writes at most 12 characters
        # for each character or item measured in `value`.
        text = json.dumps(value, **options)
        if len(text) > MAX_VALUE:
            raise OverBudget(f"writes JSON past {MAX_VALUE:,} characters")
        return text
    budget, pieces, length = _current(), [], 0
    for count, piece in enumerate(json.JSONEncoder(**options).iterencode(value)):
        length += len(piece)
        if length > MAX_VALUE:
            raise OverBudget(f"writes JSON past {MAX_VALUE:,} characters")
        if count % 1024 == 0:
            budget.in_time()
        pieces.append(piece)
    return "".join(pieces)


def _bounded_range(*args) -> range:
    found = range(*args)
    if len(found) > MAX_RANGE:
        raise OverBudget(f"makes a range of more than {MAX_RANGE:,} numbers")
    return found


# -- compiling: checks on the parsed template, and code that counts as it runs -------------


def refuse_unsafe(tree: nodes.Template) -> None:
    """What the sandbox could only catch at run time (or not at all) is refused as soon as
    the template is parsed, with a message saying what."""
    for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport,
                               nodes.Extends)):
        raise Refused(f"uses {{% {type(node).__name__.lower().replace('fromimport', 'from')} "
                      "%}: templates cannot include, import or extend other templates")
    for node in tree.find_all(nodes.For):
        if node.recursive:
            raise Refused("uses a recursive loop")
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else (
            node.arg.value if isinstance(node.arg, nodes.Const) else None)
        if isinstance(name, str) and name.startswith("_"):
            raise Refused(f"reaches for {name!r}: Python internals are not available")
    for node in tree.find_all(nodes.Const):
        checked_number(node.value)  # 0xfff… : a literal is not limited to 4,300 digits
    for node in tree.find_all(nodes.Name):
        if node.name in REMOVED_GLOBALS:
            raise Refused(f"uses {node.name!r}, which templates do not get (they get the "
                          "update's values, range and dict)")


def _count_loops(tree: nodes.Template, environment) -> None:
    for loop in tree.find_all(nodes.For):
        counted = nodes.Call(nodes.EnvironmentAttribute("counted_loop"), [loop.iter], [],
                             None, None, lineno=loop.iter.lineno)
        counted.set_environment(environment)
        loop.iter = counted


class _CountingCodeGenerator(CodeGenerator):
    """Writes what Jinja writes, with every output, literal and `~` passed through the
    environment's budget."""

    def _output_child_pre(self, node, frame, finalize) -> None:
        self.write("environment.counted_output(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node, frame, finalize) -> None:
        super()._output_child_post(node, frame, finalize)
        self.write(")")

    def _output_const_repr(self, group) -> str:
        return f"environment.counted_output({super()._output_const_repr(group)})"

    def _checked(self, visit, node, frame) -> None:
        self.write("environment.checked_value(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node, frame) -> None:
        self._checked(super().visit_List, node, frame)

    def visit_Dict(self, node, frame) -> None:
        self._checked(super().visit_Dict, node, frame)

    def visit_Tuple(self, node, frame) -> None:
        if node.ctx == "load":
            self._checked(super().visit_Tuple, node, frame)
        else:
            super().visit_Tuple(node, frame)

    def visit_Concat(self, node, frame) -> None:
        self.write("environment.checked_value(")
        super().visit_Concat(node, frame)
        self.write(")")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with the bounds above; no loader."""

    # Every arithmetic operator, so that each is a step and none is folded at compile time.
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"-", "+"})
    code_generator_class = _CountingCodeGenerator

    def __init__(self, **options) -> None:
        super().__init__(undefined=StrictUndefined, finalize=_printable, **options)
        self.globals.clear()
        self.globals.update(range=_bounded_range, dict=dict)
        self.filters = {name: _bounded_filter(FILTERS[name], _GUARDS.get(name))
                        for name in FILTER_NAMES}
        self.tests = {name: _bounded_test(test, _TEST_GUARDS.get(name))
                      for name, test in self.tests.items()}
        self.policies["json.dumps_function"] = _bounded_json

    def _parse(self, source, name, filename):
        if len(source) > MAX_SOURCE:
            raise OverBudget(f"is longer than {MAX_SOURCE:,} characters")
        tree = super()._parse(source, name, filename)
        refuse_unsafe(tree)
        _count_loops(tree, self)
        return tree

    def is_safe_attribute(self, obj, attr, value) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        return not callable(value) or any(isinstance(obj, kinds) and attr in names
                                          for kinds, names in _METHODS)

    def wrap_str_format(self, value):
        return None  # str.format and format_map are refused with the other methods

    def unsafe_undefined(self, obj, attribute):
        raise Refused(f"uses {type(obj).__name__}.{attribute}, which templates do not get")

    def call_binop(self, context, operator, left, right):
        budget = _current()
        budget.step()
        checked_number(left)
        checked_number(right)
        if operator == "**":
            _checked_power(left, right)
        elif operator == "*":
            _checked_product(left, right)
        elif operator == "%" and isinstance(left, str):
            _checked_percent(left, right)
        return budget.made(super().call_binop(context, operator, left, right))

    def call_unop(self, context, operator, arg):
        budget = _current()
        budget.step()
        checked_number(arg)
        return budget.made(super().call_unop(context, operator, arg))

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        budget = _current()
        budget.step()
        owner, name = getattr(__obj, "__self__", None), getattr(__obj, "__name__", "")
        if isinstance(owner, str) and name == "replace" and len(args) >= 2:
            _checked_replace(owner, str(args[0]), str(args[1]), *args[2:3])
        elif isinstance(owner, str) and name == "join" and args:
            args = (_guard_join(args[0], owner), *args[1:])
        return budget.made(super().call(__context, __obj, *args, **kwargs))

    def counted_loop(self, iterable):
        budget = _current()
        for item in iterable:
            budget.step()
            yield item

    def counted_output(self, text: str) -> str:
        return _current().write(text)

    def checked_value(self, value):
        return _current().made(value)


def _printable(value):
    """Every printed value is measured before Python turns it into text."""
    size(value)
    return value

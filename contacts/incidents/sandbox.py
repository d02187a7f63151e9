"""The sandbox update templates run in: Jinja2's immutable sandbox with a budget per render,
so that no template comms staff write can freeze the server or exhaust its memory. The
bounds, and the checks each operation passes before it runs, are in sandbox_bounds.py; here
are the environment, what templates get, the budget of one render, and the code that counts.

What is bounded is the work, not the clock: Python cannot stop a thread, so the time
(RENDER_SECONDS) is checked at every step, and a render can run past it by its last step.
The bounds keep each step's work at most about linear in MAX_VALUE (a fraction of a
second for the slowest, `sort` at its limit), so no render runs for long or holds more than
a few times MAX_MADE characters. Templates get the update's values,
`range` and `dict`; no loader (no include, import or extends), no Python internals, no
`str.format`, no recursive loops.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.compiler import CodeGenerator
from jinja2.filters import FILTERS
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from contacts.incidents.sandbox_bounds import (
    FILTER_GUARDS,
    MAX_JSON_INDENT,
    MAX_MADE,
    MAX_OUTPUT,
    MAX_RANGE,
    MAX_SOURCE,
    MAX_STEPS,
    MAX_VALUE,
    RENDER_SECONDS,
    TEST_GUARDS,
    TRUSTED_SCALE,
    OverBudget,
    Refused,
    checked_number,
    checked_percent,
    checked_power,
    checked_product,
    checked_replace,
    guard_join,
    size,
)

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


# -- filters and tests: each one counts as a step and what it makes is measured (a few are
# checked first: sandbox_bounds.FILTER_GUARDS).


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
        self.filters = {name: _bounded_filter(FILTERS[name], FILTER_GUARDS.get(name))
                        for name in FILTER_NAMES}
        self.tests = {name: _bounded_test(test, TEST_GUARDS.get(name))
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
            checked_power(left, right)
        elif operator == "*":
            checked_product(left, right)
        elif operator == "%" and isinstance(left, str):
            checked_percent(left, right)
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
            checked_replace(owner, str(args[0]), str(args[1]), *args[2:3])
        elif isinstance(owner, str) and name == "join" and args:
            args = (guard_join(args[0], owner), *args[1:])
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

"""The sandbox's bounds on their own: numbers, operators, tests, tojson, % specs read as
Python reads them, wordwrap and the sorting filters refuse before they do the work."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError

from contacts.incidents import sandbox, sandbox_bounds

_environment = sandbox.BoundedSandbox()


def _render(source: str, **values) -> str:
    with sandbox.budget():
        return _environment.from_string(source).render(**values)


@pytest.mark.parametrize("big", [2 ** 4096, -(2 ** 4096), 16 ** 1100])
def test_no_value_holds_a_number_past_the_bound(big):
    for value in (big, [1, big], {"a": big}, ({"a": [big]},)):
        with pytest.raises(sandbox_bounds.OverBudget, match="more than 4,096 bits"):
            sandbox_bounds.size(value)
    assert sandbox_bounds.size(2 ** 4095) == 4096 // 3 + 1


@pytest.mark.parametrize("operator", ["+", "-", "*", "/", "//", "%", "**"])
def test_every_arithmetic_operator_refuses_a_number_past_the_bound(operator):
    # A number past the bound given to the template (it makes none) is not computed with.
    with pytest.raises(sandbox_bounds.OverBudget, match="more than 4,096 bits"):
        _render(f"{{{{ big {operator} 3 }}}}", big=2 ** 5000)
    with pytest.raises(sandbox_bounds.OverBudget, match="more than 4,096 bits"):
        _render(f"{{{{ 3 {operator} big }}}}", big=2 ** 5000)


@pytest.mark.parametrize("source", ["{{ -big }}", "{{ +big }}", "{{ big is divisibleby 3 }}",
                                    "{{ 3 is divisibleby big }}", "{{ big | abs }}"])
def test_unary_operators_tests_and_filters_refuse_it_too(source):
    with pytest.raises(sandbox_bounds.OverBudget, match="more than 4,096 bits"):
        _render(source, big=2 ** 5000)


def test_arithmetic_is_not_folded_at_compile_time_and_counts_steps():
    """`//`, `-` and tests used to be computed while compiling, outside any budget."""
    source = "{{ 9 // 2 - 1 }}{{ 4 is divisibleby 2 }}"
    compiled = _environment.compile(source, raw=True)
    assert "call_binop(context, '//'" in compiled and "call_binop(context, '-'" in compiled
    with sandbox.budget() as spent:
        assert _environment.from_string(source).render() == "3True"
    assert spent.steps == 3


@pytest.mark.parametrize(("template", "expected"), [
    ("%s", [(None, ("", ""))]),
    ("%%", [(None, ("", ""))]),
    ("%5%", [(None, ("5", ""))]),
    ("%-+ #012.3f", [(None, ("12", "3"))]),
    ("%.*f", [(None, ("", "*"))]),
    ("%*d", [(None, ("*", ""))]),
    ("%ld %hs %L5d", [(None, ("", "")), (None, ("", "")), (None, ("", ""))]),
    ("%(a(b))50000000s", [("a(b)", ("50000000", ""))]),
    ("%(a)s and %(b)5.2f", [("a", ("", "")), ("b", ("5", "2"))]),
    ("100%% of %d", [(None, ("", "")), (None, ("", ""))]),
    ("%\u0665d", [(None, ("", ""))]),  # a non-ASCII digit is not a width to Python
])
def test_percent_specs_are_read_as_python_reads_them(template, expected):
    assert list(sandbox_bounds._percent_specs(template)) == expected


@pytest.mark.parametrize(("template", "argument"), [
    ("%5s", "x"), ("%-05s", "x"), ("%(a(b))7s", {"a(b)": "x"}), ("%(a)6s", {"a": "x"}),
    ("%(()())8s", {"()()": "x"}), ("%+ 9d", 1), ("%#08x", 1), ("%10.3s", "xyzw"),
    ("%6ls", "x"), ("%.4d", 1)])
def test_the_width_read_is_the_one_python_pads_to(template, argument):
    [(key, (width, precision))] = sandbox_bounds._percent_specs(template)
    assert key is None or isinstance(argument, dict) and key in argument
    assert len(template % argument) == int(width or precision)


@pytest.mark.parametrize(("source", "says"), [
    ("{{ '%(a(b))50000000s' % {'a(b)': 1} }}", "key in a % format"),
    ("{{ '%(a)s' % {'a': 'x'} }}", "key in a % format"),
    ("{{ '%(a)s' | format(a=1) }}", "format with names"),
    ("{{ '%2000000000s' % 'x' }}", "formats wider than"),
    ("{{ '%.99999999999d' % 1 }}", "formats wider than"),
    ("{{ '%s%500000s%500000s' % ('x', 'y', 'z') }}", "formats text past 1,000,000"),
])
def test_percent_refuses_keys_and_wide_specs(source, says):
    with pytest.raises(SecurityError, match=says.replace("%", "%")):
        _render(source)


@pytest.mark.parametrize("indent", [9, 100000, " " * 9, "\t" * 20, 1.5])
def test_tojson_refuses_a_wide_indent(indent):
    with pytest.raises(sandbox_bounds.OverBudget, match="indents JSON by more than 8"):
        _render("{{ [1, 2] | tojson(indent=indent) }}", indent=indent)


def test_tojson_stops_writing_past_the_bound_however_deep():
    deep = list("x" * 100000)
    for _ in range(30):
        deep = [deep]
    with pytest.raises(sandbox_bounds.OverBudget, match="writes JSON past 1,000,000"):
        _render("{{ deep | tojson(indent=8) }}", deep=deep)
    assert _render("{{ {'b': 1, 'a': '<'} | tojson(indent=1) }}") == (
        '{\n "a": "\\u003c",\n "b": 1\n}')


@pytest.mark.parametrize(("length", "width"), [(100000, 1), (20001, 10), (100000, 49)])
def test_wordwrap_refuses_more_than_its_lines(length, width):
    with pytest.raises(sandbox_bounds.OverBudget, match="more than 2,000 lines"):
        _render("{{ text | wordwrap(width) }}", text="x" * length, width=width)
    assert _render("{{ text | wordwrap(10) | length }}", text="x" * 20000) == str(
        20000 + 1999)


@pytest.mark.parametrize("source", ["{{ text | title }}", "{{ text | wordwrap(100000) }}",
                                    "{{ text | wordwrap(width=2000, wrapstring='') }}"])
def test_word_by_word_filters_refuse_long_text(source):
    with pytest.raises(sandbox_bounds.OverBudget, match="word by word through more than 100,000"):
        _render(source, text="a " * 50001)
    assert _render(source, text="a " * 50000).lower().count("a") == 50000


@pytest.mark.parametrize("name", ["sort", "unique", "min", "max", "groupby(0)"])
def test_sorting_filters_refuse_past_their_items(name):
    """Given a list, or a generator (which they would read whole)."""
    for source in (f"{{{{ items | {name} | list | length }}}}",
                   f"{{{{ items | map(attribute='real') | {name} | list | length }}}}"):
        with pytest.raises(sandbox_bounds.OverBudget, match="more than 100,000 items"):
            _render(source, items=list(range(100001)))


@pytest.mark.parametrize("name", ["dictsort", "xmlattr", "urlencode"])
def test_filters_of_mappings_refuse_past_their_items(name):
    with pytest.raises(sandbox_bounds.OverBudget, match="more than 100,000 items"):
        _render(f"{{{{ items | {name} | length }}}}",
                items={f"k{n}": "v" for n in range(100001)})
    assert int(_render(f"{{{{ items | {name} | length }}}}",
                       items={f"k{n}": "v" for n in range(100)})) > 0


@pytest.mark.parametrize(("source", "says"), [
    ("{{ text | int(base=16) }}", "reads a number from more than 5,000"),
    ("{{ text | float }}", "reads a number from more than 5,000"),
    ("{{ 5 | round(-1001) }}", "rounds to more than 1,000 digits"),
    ("{{ 1.5 | round(1001, 'floor') }}", "rounds to more than 1,000 digits"),
    ("{{ 0x" + "f" * 1025 + " }}", "more than 4,096 bits"),
])
def test_number_filters_and_literals_refuse_before_the_work(source, says):
    with pytest.raises(sandbox_bounds.OverBudget, match=says):
        _render(source, text="f" * 5001)

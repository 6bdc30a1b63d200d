"""Calico selectors: parse, evaluate, render."""

from __future__ import annotations

import pytest
from hypothesis import given

from rrwatch.core.selector import MAX_DEPTH, Compare, Has, In, SelectorError, parse, render
from tests import support as s


@given(s.selectors(), s.label_sets)
def test_render_then_parse_keeps_the_meaning(selector, labels):
    """Any selector, rendered and parsed again, matches exactly the same labels."""
    assert parse(render(selector)).matches(labels) == selector.matches(labels)


@given(s.selectors())
def test_canonical_text_is_a_fixed_point(selector):
    """Parsing canonical text gives back a selector with the same canonical text."""
    text = render(parse(render(selector)))
    assert render(parse(text)) == text
    assert parse(text) == parse(render(selector))


@pytest.mark.parametrize(("text", "labels", "expected"), [
    ("", {}, True),
    ("all()", {"a": "x"}, True),
    ("a == 'x'", {"a": "x"}, True),
    ("a == 'x'", {}, False),
    ("a != 'x'", {}, True),
    ("a != 'x'", {"a": "x"}, False),
    ("a in {'x', \"y\"}", {"a": "y"}, True),
    ("a in {}", {"a": "y"}, False),
    ("a not in {'x'}", {}, True),
    ("has(a)", {"a": ""}, True),
    ("!has(a)", {"a": ""}, False),
    ("a contains 'b'", {"a": "abc"}, True),
    ("a starts with 'ab'", {"a": "abc"}, True),
    ("a ends with 'bc'", {"a": "abc"}, True),
    ("a ends with 'bc'", {}, False),
    ("a == 'x' || b == 'y' && c == 'z'", {"a": "x"}, True),
    ("(a == 'x' || b == 'y') && c == 'z'", {"a": "x"}, False),
    ("!!has(a)", {"a": "1"}, True),
    ("global()", {"projectcalico.org/namespace": "ns"}, True),
    ("a in {'x',}", {"a": "x"}, True),
    ("\thas(x.io/rr)  &&\ta  ==  'x y'", {"x.io/rr": "", "a": "x y"}, True),
    ("calico-route-reflector == ''", {"calico-route-reflector": ""}, True),
    ("calico-route-reflector != ''", {}, True),
])
def test_evaluation(text, labels, expected):
    """Each operator follows Calico's semantics, including absent labels and precedence;
    global() is always true, as in Calico."""
    assert parse(text).matches(labels) is expected


@pytest.mark.parametrize("text", [
    "a ==", "a == x", "a = 'x'", "has(a", "(a == 'x'", "a == 'x' &&", "a in {'x'",
    "a in {'x',,}", "a in {,}", "a == 'x' b", "&& a == 'x'", "a == 'x", "a\u00a0== 'x'",
    "a containsx 'y'", "has (a)", "all ()", "global ()", "has(a b)", "a starts with x",
    "a notinx {'x'}", "a\n== 'x'", "a == 'x'\n", "a in {'x' 'y'}", "has(" + "a" * 513 + ")",
])
def test_bad_selectors_are_rejected(text):
    """Malformed selectors raise SelectorError instead of matching something by accident."""
    with pytest.raises(SelectorError):
        parse(text)


@pytest.mark.parametrize(("text", "canonical"), [
    ("a startswith 'x'", "a starts with 'x'"),
    ("a starts \t  with 'x'", "a starts with 'x'"),
    ("a endswith 'x'", "a ends with 'x'"),
    ("a ends  with'x'", "a ends with 'x'"),
    ("a notin {'x'}", "a not in {'x'}"),
    ("a not \t in{'x'}", "a not in {'x'}"),
    ("all( )", "all()"),
    ("global(\t)", "global()"),
    ("has( a\t)", "has(a)"),
    ("a in {'x', 'y',}", "a in {'x', 'y'}"),
    ("a not in {'x',}", "a not in {'x'}"),
    ('a == "x"', "a == 'x'"),
])
def test_calico_spellings_are_accepted(text, canonical):
    """Issue 17: what Calico's tokenizer takes (joined or spaced-out two-word operators,
    blanks inside all( ), global( ) and has( ), a trailing comma in a set) parses, to the
    selector of rrwatch's canonical text."""
    assert parse(text) == parse(canonical)
    assert render(parse(text)) == canonical


@pytest.mark.parametrize("selector", [
    Has("a b"), Has(""), Has("a" * 513), Compare("zone\n", "==", "x"), In("é", frozenset()),
    Compare("a", "==", "it's \"x\""),
])
def test_rendering_refuses_what_calico_could_not_read(selector):
    """A label Calico's tokenizer would not take, or a literal with both quotes, is an error
    rather than text that no longer parses."""
    with pytest.raises(SelectorError):
        render(selector)


def test_runs_of_not_fold_as_in_calico_within_the_nesting_bound():
    """`!!x` is x and `!!!x` is !x, as Calico folds them; more than MAX_DEPTH `!` or `(` in a
    row is refused, so that no selector can exhaust the stack."""
    assert parse("!!has(a)") == Has("a")
    assert parse("! !!has(a)") == parse("!has(a)")
    assert parse("!" * MAX_DEPTH + "all()") == parse("all()")
    assert parse("(" * MAX_DEPTH + "all()" + ")" * MAX_DEPTH) == parse("all()")
    deeper = MAX_DEPTH + 1
    for text in ("!" * deeper + "all()", "(" * deeper + "all()" + ")" * deeper):
        with pytest.raises(SelectorError, match="nested more than"):
            parse(text)

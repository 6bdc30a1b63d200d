"""Calico selectors: parse, evaluate, render."""

from __future__ import annotations

import pytest
from hypothesis import given

from rrwatch.core.selector import SelectorError, parse, render
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
    ("global()", {"projectcalico.org/namespace": "ns"}, False),
    ("\thas(x.io/rr)  &&\ta  ==  'x y'", {"x.io/rr": "", "a": "x y"}, True),
    ("calico-route-reflector == ''", {"calico-route-reflector": ""}, True),
    ("calico-route-reflector != ''", {}, True),
])
def test_evaluation(text, labels, expected):
    """Each operator follows Calico's semantics, including absent labels and precedence."""
    assert parse(text).matches(labels) is expected


@pytest.mark.parametrize("text", [
    "a ==", "a == x", "a = 'x'", "has(a", "(a == 'x'", "a == 'x' &&", "a in {'x'",
    "a in {'x',}", "a == 'x' b", "&& a == 'x'", "a == 'x", "a\u00a0== 'x'", "a containsx 'y'",
])
def test_bad_selectors_are_rejected(text):
    """Malformed selectors raise SelectorError instead of matching something by accident."""
    with pytest.raises(SelectorError):
        parse(text)

"""Calico's own selector test tables, transcribed as data: rrwatch reads selectors as Calico does.

Sources, in projectcalico/calico (the issue names `libcalico-go/lib/selector/selector_test.go`;
the stored copies of the repository hold the same tables under `parser/`):

- `libcalico-go/lib/selector/parser/parser_test.go` at 036c024ded8ce5abc339c8f456532678a5afe114
  (the same tables as at 1ba3b1444d5d70f503cfb69bbb40c08f592bdbaf): `selectorTests` (a selector,
  label sets it matches, label sets it does not), `badSelectors`, `canonicalisationTests`, and
  the visitor table (whose outputs, without the visitor's "visited/" prefix, are canonical forms
  of its inputs);
- `libcalico-go/lib/selector/tokenizer/tokenizer_test.go`, the version that goes with the
  CutPrefix tokenizer of d4bced9ad8c266121dc6675980c7cfe8cf08355d (it tests 512-character
  labels, `all( )` and `global( )`): `tokenTests`, with rrwatch's token kinds for Calico's;
- `libcalico-go/lib/selector/parser/label_restriction_test.go` at 036c024: selectors that
  Calico accepts (the label restrictions themselves are Calico internals rrwatch has no use for).

Calico's canonical text (double quotes, every `&&`/`||` in parentheses) is not rrwatch's
(`render` keeps the text rrwatch has always written, which Calico reads as the same selector);
so a canonicalisation case checks that input and Calico's canonical text are one selector.
"""

from __future__ import annotations

import pytest

from rrwatch.core.selector import SelectorError, parse, render, tokenize

# -- parser_test.go: selectorTests -------------------------------------------------------------
# (selector, label sets it matches, label sets it does not match)
SELECTOR_TESTS: list[tuple[str, list[dict[str, str]], list[dict[str, str]]]] = [
    ('a == "b"', [{"a": "b"}, {"a": "b", "c": "d"}], [{}, {"a": "c"}, {"c": "d"}]),
    ('a == "b" && c == "d"', [{"a": "b", "c": "d"}],
     [{}, {"a": "b", "c": "e"}, {"a": "c", "c": "d"}, {"c": "d"}, {"a": "b"}]),
    ('a == "b" || c == "d"', [{"a": "b", "c": "d"}, {"a": "b"}, {"c": "d"}],
     [{}, {"a": "e", "c": "e"}, {"c": "e"}, {"a": "e"}]),
    ("""a in {"'", '"', "c"}""", [{"a": "c"}, {"a": '"'}, {"a": "'"}], [{}, {"a": "e"}]),
    ("""a not in {"'", '"', "c"}""", [{}, {"a": "e"}], [{"a": "c"}, {"a": '"'}, {"a": "'"}]),
    ("a == 'a'", [{"a": "a"}], []),
    ('a == "a"', [{"a": "a"}], []),
    ('a != "b"', [{"a": "a"}], []),
    ('a != "a"', [{}], []),
    ('a contains "a"', [{"a": "a"}, {"a": "bab"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"b": "aaa"}]),
    ('a starts with "a"', [{"a": "a"}, {"a": "abb"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"a": "baa"}, {"b": "aaa"}]),
    ('a ends with "a"', [{"a": "a"}, {"a": "bba"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"a": "aab"}, {"b": "aaa"}]),
    ('a in {"a"}', [{"a": "a"}], []),
    ('!a in {"a"}', [{"a": "b"}], []),
    ('a in {"a", "b"}', [{"a": "a"}], []),
    ('a in {"a", "b"}', [{"a": "b"}], []),
    ('a not in {"d", "e"}', [{"a": "a"}], []),
    ("has(a)", [{"a": "b"}], []),
    ("!has(a)", [{"b": "b"}], []),
    ("", [{}], []),
    (" ", [{}], []),
    ("", [{"a": "b"}], []),
    ("all()", [{}], []),
    (" all()", [{}], []),
    (" all()", [{"a": "b"}], []),
    ("global()", [{}], []),
    (" global()", [{}], []),
    (" global()", [{"a": "b"}], []),
    ("a == 'a'", [], [{"a": "b"}]),
    ("a == 'a'", [], [{}]),
    ('a != "a"', [], [{"a": "a"}]),
    ("a != 'a'", [], [{"a": "a"}]),
    ('a in {"a"}', [], [{"a": "b"}]),
    ('a not in {"a"}', [], [{"a": "a"}]),
    ('a in {"a", "b"}', [], [{"a": "c"}]),
    ("has(b)", [], [{"a": "b"}]),
    ("!!has(b)", [], [{"a": "b"}]),
    ("! has(a)", [], [{"a": "b"}]),
    ("!has(a)", [], [{"a": "b"}]),
    ("!!! has(a)", [], [{"a": "b"}]),
    ("!!!has(a)", [], [{"a": "b"}]),
    ("!! ! has(a)", [], [{"a": "b"}]),
    ("! !!has(a)", [], [{"a": "b"}]),
    # Boolean expressions
    ("a == 'a1' && b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && !b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("!a == 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("has(a) && !has(b)", [{"a": "a"}], []),
    ("!has(b) && has(a)", [{"a": "a"}], []),
    ("!(!has(a) || has(b))", [{"a": "a"}], []),
    ("!(has(b) || !has(a))", [{"a": "a"}], []),
    ("a == 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' || b != 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("! a == 'a1' || ! b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
]

# -- parser_test.go: badSelectors --------------------------------------------------------------
BAD_SELECTORS = [
    "b == b",  # label == label
    "b contains b",  # label contains label
    "b starts with b",
    "b ends with b",
    "'b1' == b",  # literal on the left
    "b",  # bare label
    "a b",
    "!",
    'foo == "bar" &',
    'foo == "bar" |',
    "foo != ||",
    'foo in {"", ||',
    'foo in ""',  # a set literal is expected
    '"FOO',  # unterminated strings
    "\"FOO'",
    '"FOO',  # (twice in Calico's table)
    "'FOO",
    "(",  # unbalanced parentheses
    '(a == "foo"',
    ")",
    "()",
    "%",  # unexpected characters
    'a == "b" && %',
    'a == "b" || %',
    "a ",  # a label must be followed by an operator
    "has(foo) &&",
]

# -- parser_test.go: canonicalisationTests (input, Calico's canonical text) --------------------
CANONICAL = [
    ("", "all()"),
    (" all() ", "all()"),
    (" (all() )", "all()"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
    ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")'),
    ("a == \"'\"", "a == \"'\""),
    ("a == '\"'", "a == '\"'"),
    ("a contains '\"'", "a contains '\"'"),
    ("a contains \"'\"", "a contains \"'\""),
    ("a startswith '\"'", "a starts with '\"'"),
    ("a endswith \"'\"", "a ends with \"'\""),
    ("a!='\"'", "a != '\"'"),
    # set items are sorted and de-duplicated
    ('a in {"d"}', 'a in {"d"}'),
    ('a in {"a", "b"}', 'a in {"a", "b"}'),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}'),
    ('a in {"z", "x", "y", "a"}', 'a in {"a", "x", "y", "z"}'),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}'),
    # The visitor table, its outputs without the "visited/" prefix.
    ("k == 'v'", 'k == "v"'),
    ("k != 'v'", 'k != "v"'),
    ("k contains 'v'", 'k contains "v"'),
    ("k starts with 'v'", 'k starts with "v"'),
    ("k ends with 'v'", 'k ends with "v"'),
    ("k == 'v' && x == 'y'", '(k == "v" && x == "y")'),
    ("k == 'v' || has(x)", '(k == "v" || has(x))'),
    ("!(k == 'v')", '!k == "v"'),
    ("k in {'v'}", 'k in {"v"}'),
    ("k not in {'v'}", 'k not in {"v"}'),
    ("!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
     '!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})'),
]

# -- label_restriction_test.go: selectors Calico accepts ---------------------------------------
ACCEPTED = [
    "", "all()", "global()", "a == 'value'", "has(a)", "a in {'v1','v2'}", "a not in {'v1','v2'}",
    "a contains 'foo'", "a ends with 'foo'", "a starts with 'foo'", "a != 'value'",
    "a == 'v1' && a == 'v1'", "a == 'v1' && a == 'v2'", "a == 'v1' && has(a)",
    "a in {'v1','v2'} && a in {'v2','v3'} ", "a in {'v1','v2', 'v3'} && a in {'v2','v3'} ",
    "has(a) && a == 'v1'", "has(a) && !has(a)", "a == 'v1' && b == 'v2'", "a == 'v1' && all()",
    "all() && a == 'v1'", "a == 'v1' || a == 'v2'", "has(a) || a == 'v2'", "a=='v2' || has(a)",
    "a=='v2' || has(b)", "a=='v2' || (has(b) && has(a))", "a == 'v1' || b == 'v2'",
    "a == 'v1' || all()", "all() || b == 'v2'", "!(a == 'value')", "!has(a)", "!!has(a)",
]

# -- tokenizer_test.go: tokenTests (None: the tokenizer refuses the input) ---------------------
# A kind alone stands for (kind, ""); every list ends with ("eof", ""), left out here.
A512 = "a" * 512
TOKEN_TESTS: list[tuple[str, list[tuple[str, str] | str] | None]] = [
    ('a=="b"', [("label", "a"), "==", ("string", "b")]),
    ('a!="b"', [("label", "a"), "!=", ("string", "b")]),
    ('a != "b"', [("label", "a"), "!=", ("string", "b")]),
    ('(a=="b")', ["(", ("label", "a"), "==", ("string", "b"), ")"]),
    ('a=="b"', [("label", "a"), "==", ("string", "b")]),  # (twice in Calico's table)
    ('label == "value"', [("label", "label"), "==", ("string", "value")]),
    ('label contains "value"', [("label", "label"), "contains", ("string", "value")]),
    ('contains contains "contains"', [("label", "contains"), "contains", ("string", "contains")]),
    ("contains contains 'contains'", [("label", "contains"), "contains", ("string", "contains")]),
    ('label contains"value"', [("label", "label"), "contains", ("string", "value")]),
    ('label startswith "value"', [("label", "label"), "starts with", ("string", "value")]),
    ('label endswith "value"', [("label", "label"), "ends with", ("string", "value")]),
    ('label starts with "value"', [("label", "label"), "starts with", ("string", "value")]),
    ('startswith starts with "value"',
     [("label", "startswith"), "starts with", ("string", "value")]),
    ('label ends with "value"', [("label", "label"), "ends with", ("string", "value")]),
    ('endswith ends with "value"', [("label", "endswith"), "ends with", ("string", "value")]),
    ('label starts  with "value"', [("label", "label"), "starts with", ("string", "value")]),
    ('label ends  with "value"', [("label", "label"), "ends with", ("string", "value")]),
    (A512 + ' == "value"', [("label", A512), "==", ("string", "value")]),
    ("a" * 513 + ' == "value"', None),
    ('label == "value', None),
    ("label == 'value", None),
    ('label = "value"', None),
    ("all(", None),
    ("global(", None),
    ("has()", None),
    ("has(foo", None),
    ("has( foo ", None),
    ('a == "b" & has(foo)', None),
    ('a == "b" | has(foo)', None),
    ('label starts foo "value"', None),
    ('label inf "value"', None),
    ('label ends foo "value"', None),
    ('label ends withs "value"', None),
    ('label squiggles "value"', None),
    ('a not in "bar" && !has(foo) || b in c',
     [("label", "a"), "not in", ("string", "bar"), "&&", "!", ("has", "foo"), "||",
      ("label", "b"), "in", ("label", "c")]),
    ("has(calico/k8s_ns)", [("has", "calico/k8s_ns")]),
    ("has(calico/k8s_ns/role)", [("has", "calico/k8s_ns/role")]),
    ("has(calico/k8s_NS-.1/role)", [("has", "calico/k8s_NS-.1/role")]),
    ('calico/k8s_ns == "kube-system" && k8s-app == "kube-dns"',
     [("label", "calico/k8s_ns"), "==", ("string", "kube-system"), "&&", ("label", "k8s-app"),
      "==", ("string", "kube-dns")]),
    ('a  not  in  "bar"  &&  ! has( foo )  ||  b  in  c ',
     [("label", "a"), "not in", ("string", "bar"), "&&", "!", ("has", "foo"), "||",
      ("label", "b"), "in", ("label", "c")]),
    ('a notin"bar"&&!has(foo)||b in"c"',
     [("label", "a"), "not in", ("string", "bar"), "&&", "!", ("has", "foo"), "||",
      ("label", "b"), "in", ("string", "c")]),
    ("a not in {}", [("label", "a"), "not in", "{", "}"]),
    ('a not in {"a"}', [("label", "a"), "not in", "{", ("string", "a"), "}"]),
    ('a not in {"a","B"}',
     [("label", "a"), "not in", "{", ("string", "a"), ",", ("string", "B"), "}"]),
    ("global()", ["global"]),
    ("global( )", ["global"]),
    ("all()", ["all"]),
    ("all( )", ["all"]),
]


def _ids(cases):
    return [repr(case[0] if isinstance(case, tuple) else case) for case in cases]


MATCHING = [(sel, labels) for sel, yes, _ in SELECTOR_TESTS for labels in yes]
NOT_MATCHING = [(sel, labels) for sel, _, no in SELECTOR_TESTS for labels in no]


@pytest.mark.parametrize(("text", "labels"), MATCHING, ids=_ids(MATCHING))
def test_calico_matches(text, labels):
    """Each selector of Calico's table matches the label sets Calico says it matches, before
    and after rrwatch renders it."""
    assert parse(text).matches(labels)
    assert parse(render(parse(text))).matches(labels)


@pytest.mark.parametrize(("text", "labels"), NOT_MATCHING, ids=_ids(NOT_MATCHING))
def test_calico_non_matches(text, labels):
    """Each selector of Calico's table fails the label sets Calico says it fails, before and
    after rrwatch renders it."""
    assert not parse(text).matches(labels)
    assert not parse(render(parse(text))).matches(labels)


@pytest.mark.parametrize("text", BAD_SELECTORS, ids=_ids(BAD_SELECTORS))
def test_calico_bad_selectors(text):
    """Every selector Calico refuses, rrwatch refuses."""
    with pytest.raises(SelectorError):
        parse(text)


@pytest.mark.parametrize(("text", "canonical"), CANONICAL, ids=_ids(CANONICAL))
def test_calico_canonical_text_is_the_same_selector(text, canonical):
    """A selector and Calico's canonical text for it parse to one selector, whose rendering is a
    fixed point."""
    assert parse(text) == parse(canonical)
    rendered = render(parse(text))
    assert render(parse(rendered)) == rendered
    assert parse(rendered) == parse(text)


@pytest.mark.parametrize("text", ACCEPTED, ids=_ids(ACCEPTED))
def test_calico_accepted_selectors(text):
    """The selectors of Calico's label-restriction table parse, and render to a fixed point."""
    rendered = render(parse(text))
    assert render(parse(rendered)) == rendered


@pytest.mark.parametrize(("text", "expected"), TOKEN_TESTS, ids=_ids(TOKEN_TESTS))
def test_calico_tokens(text, expected):
    """rrwatch's tokenizer cuts each input of Calico's token table as Calico's does, and
    refuses the inputs Calico's refuses (and then so does the parser)."""
    if expected is None:
        with pytest.raises(SelectorError):
            tokenize(text)
        with pytest.raises(SelectorError):
            parse(text)
    else:
        tokens = [t if isinstance(t, tuple) else (t, "") for t in expected]
        assert tokenize(text) == [*tokens, ("eof", "")]


def test_the_tables_are_all_here():
    """Every case of Calico's tables is transcribed (a guard against a slip when editing)."""
    assert (len(SELECTOR_TESTS), len(BAD_SELECTORS), len(CANONICAL), len(ACCEPTED),
            len(TOKEN_TESTS)) == (58, 26, 28, 32, 49)

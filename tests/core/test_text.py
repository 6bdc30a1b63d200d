"""Text made safe to show: one line, no control character, as repr() escapes it."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from rrwatch.core.text import printable

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def test_printable_escapes_as_repr_does():
    """Control characters become repr()'s escapes; everything else, backslashes too, is kept."""
    assert printable("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert printable("\x00\x1b\x7f\x85\x9f") == "\\x00\\x1b\\x7f\\x85\\x9f"
    assert printable("\u2028\u2029\ud800\ufffe\uffff") == (
        "\\u2028\\u2029\\ud800\\ufffe\\uffff")
    assert printable("zone-é ✓ \\x1b ' \"") == "zone-é ✓ \\x1b ' \""


@given(st.text(st.characters(exclude_categories=())))
def test_printable_is_one_safe_line(text):
    """Any text, lone surrogates included, becomes one line with no unsafe character, which
    UTF-8 can encode; text without unsafe characters is left as it is."""
    shown = printable(text)
    assert len(shown.splitlines()) <= 1 and UNSAFE.search(shown) is None
    shown.encode("utf-8")
    if UNSAFE.search(text) is None:
        assert shown == text
    else:
        assert shown == "".join(repr(c)[1:-1] if UNSAFE.match(c) else c for c in text)

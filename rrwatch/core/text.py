"""Text that is safe to show: names and values from etcd reach logs, terminals and pictures."""

from __future__ import annotations

import re

# What must never reach a log line, a terminal or an SVG as it is: C0 controls, DEL and C1
# controls (a newline forges a log line, ESC drives the terminal), the line and paragraph
# separators (str.splitlines and some viewers break lines there), lone surrogates (no UTF-8
# writer can encode them; JSON can carry them) and U+FFFE/U+FFFF (XML forbids them).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def printable(text: str) -> str:
    """`text` with each unsafe character replaced by the escape repr() gives it: `\\n`, `\\r`,
    `\\t`, `\\xNN` or `\\uNNNN`. The result is one line that any terminal shows as text.

    Backslashes are kept, so that text already escaped (a repr() in a message)
    reads as it was written. The price is ambiguity: `\\x1b` may have been an ESC or those four
    characters. A person reading a line can live with that; where the result must map back to
    one value (a Graphviz node ID), double the backslashes before calling this.
    """
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    return repr(match[0])[1:-1]

"""Calico label selectors: parse, evaluate against labels, render in canonical form. Pure code.

Grammar (calico-datastore.md): `||` of `&&` of operations; `!` prefixes; `has(l)`, `all()`,
`global()`, `l == 'v'`, `!=`, `contains`, `starts with`, `ends with`, `in {…}`, `not in {…}`, and
parentheses. Literals have no escapes. `==`, `in`, `contains`, `starts with`, `ends with` and
`has` need the label present; `!=` and `not in` also match when it is absent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import attrs

NAMESPACE_LABEL = "projectcalico.org/namespace"
_LABEL = re.compile(r"[A-Za-z0-9_./-]{1,512}")
_WORD_OPS = ("contains", "starts with", "ends with", "not in", "in")


class SelectorError(ValueError):
    """A selector that does not parse; the message says where."""


@attrs.frozen
class All:
    def matches(self, labels: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "all()"


@attrs.frozen
class Global:
    """Matches resources outside any namespace (nodes always are)."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return NAMESPACE_LABEL not in labels

    def __str__(self) -> str:
        return "global()"


@attrs.frozen
class Has:
    label: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.label in labels

    def __str__(self) -> str:
        return f"has({self.label})"


@attrs.frozen
class Compare:
    label: str
    op: str  # ==, !=, contains, starts with, ends with
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label)
        if self.op == "!=":
            return actual != self.value
        if actual is None:
            return False
        if self.op == "==":
            return actual == self.value
        if self.op == "contains":
            return self.value in actual
        if self.op == "starts with":
            return actual.startswith(self.value)
        return actual.endswith(self.value)

    def __str__(self) -> str:
        return f"{self.label} {self.op} {_quote(self.value)}"


@attrs.frozen
class In:
    label: str
    values: frozenset[str]
    negated: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        return (labels.get(self.label) in self.values) != self.negated

    def __str__(self) -> str:
        values = ", ".join(_quote(v) for v in sorted(self.values))
        return f"{self.label} {'not in' if self.negated else 'in'} {{{values}}}"


@attrs.frozen
class Not:
    operand: Selector

    def matches(self, labels: Mapping[str, str]) -> bool:
        return not self.operand.matches(labels)

    def __str__(self) -> str:
        inner = str(self.operand)
        return f"!({inner})" if isinstance(self.operand, And | Or) else f"!{inner}"


@attrs.frozen
class And:
    operands: tuple[Selector, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(o.matches(labels) for o in self.operands)

    def __str__(self) -> str:
        return " && ".join(f"({o})" if isinstance(o, Or) else str(o) for o in self.operands)


@attrs.frozen
class Or:
    operands: tuple[Selector, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return any(o.matches(labels) for o in self.operands)

    def __str__(self) -> str:
        return " || ".join(str(o) for o in self.operands)


Selector = All | Global | Has | Compare | In | Not | And | Or


def _quote(value: str) -> str:
    if "'" in value and '"' in value:
        raise SelectorError(f"a literal cannot hold both quote characters: {value!r}")
    return f'"{value}"' if "'" in value else f"'{value}'"


def render(selector: Selector) -> str:
    """Canonical text; parse(render(s)) == s for every selector parse() returns."""
    return str(selector)


# Calico's validator refuses longer selectors. Nesting is bounded too, so that neither parsing
# nor matching a hostile selector ("!!!!…" or "((((…") can run out of stack.
MAX_LENGTH = 1024
MAX_DEPTH = 64


def parse(text: str) -> Selector:
    if len(text) > MAX_LENGTH:
        raise SelectorError(f"longer than {MAX_LENGTH} characters")
    parser = _Parser(text)
    if not parser.rest():
        return All()
    result = parser.or_expr()
    if parser.rest():
        raise parser.error("unexpected text")
    return result


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def error(self, message: str) -> SelectorError:
        return SelectorError(f"{message} at column {self.pos + 1} of {self.text!r}")

    def rest(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1
        return self.text[self.pos:]

    def take(self, token: str) -> bool:
        if self.rest().startswith(token):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.take(token):
            raise self.error(f"expected {token!r}")

    def nested(self, parse: Callable[[], Selector]) -> Selector:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} deep")
        try:
            return parse()
        finally:
            self.depth -= 1

    def or_expr(self) -> Selector:
        operands = [self.and_expr()]
        while self.take("||"):
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Or(_flatten(Or, operands))

    def and_expr(self) -> Selector:
        operands = [self.operation()]
        while self.take("&&"):
            operands.append(self.operation())
        return operands[0] if len(operands) == 1 else And(_flatten(And, operands))

    def operation(self) -> Selector:
        if self.take("!"):
            return Not(self.nested(self.operation))
        if self.take("("):
            inner = self.nested(self.or_expr)
            self.expect(")")
            return inner
        if self.take("has("):
            label = self.label()
            self.expect(")")
            return Has(label)
        if self.take("all()"):
            return All()
        if self.take("global()"):
            return Global()
        label = self.label()
        for op in ("==", "!="):
            if self.take(op):
                return Compare(label, op, self.literal())
        for op in _WORD_OPS:
            # A word operator must end where a label could not go on.
            match = re.match(rf"{op}(?![A-Za-z0-9_./-])", self.rest())
            if match:
                self.pos += len(op)
                if op.endswith("in"):
                    return In(label, self.literals(), negated=op == "not in")
                return Compare(label, op, self.literal())
        raise self.error("expected an operator")

    def label(self) -> str:
        match = _LABEL.match(self.rest())
        if not match:
            raise self.error("expected a label")
        self.pos += match.end()
        return match.group()

    def literal(self) -> str:
        rest = self.rest()
        if not rest or rest[0] not in "'\"":
            raise self.error("expected a quoted literal")
        end = rest.find(rest[0], 1)
        if end < 0:
            raise self.error("unterminated literal")
        self.pos += end + 1
        return rest[1:end]

    def literals(self) -> frozenset[str]:
        self.expect("{")
        values = set()
        if not self.take("}"):
            values.add(self.literal())
            while self.take(","):
                values.add(self.literal())
            self.expect("}")
        return frozenset(values)


def _flatten(kind: type[And] | type[Or], operands: list[Selector]) -> tuple[Selector, ...]:
    """(a && b) && c is a && b && c: one canonical shape for each meaning of the text."""
    out: list[Selector] = []
    for operand in operands:
        out.extend(operand.operands if isinstance(operand, kind) else (operand,))
    return tuple(out)

"""Calico label selectors: parse, evaluate against labels, render in canonical form. Pure code.

The grammar is exactly Calico's (libcalico-go `lib/selector/tokenizer` and `parser`): a
tokenizer that knows where a label ends and an operator must follow, then `||` of `&&` of
operations, each behind any number of `!`. Operations are `has(l)`, `all()`, `global()`,
`l == "v"`, `!=`, `contains`, `starts with`, `ends with`, `in {…}`, `not in {…}` and
parentheses. Only space and tab are blanks. The two-word operators take any run of blanks
between their words, or none (`startswith`, `not  in`); `has(`, `all(` and `global(` take blanks
inside the parentheses, never before them; a set literal may end with a comma. Literals are
quoted with ' or " and have no escapes. Labels are 1-512 of [A-Za-z0-9_./-].

`==`, `in`, `contains`, `starts with`, `ends with` and `has` need the label present; `!=` and
`not in` also match when it is absent. `all()` and `global()` match everything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

MAX_LABEL_LENGTH = 512
_LABEL = re.compile(r"[A-Za-z0-9_./-]+")


class SelectorError(ValueError):
    """A selector that does not parse (the message says where), or a value it cannot hold."""


@attrs.frozen
class All:
    def matches(self, labels: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "all()"


@attrs.frozen
class Global:
    """Calico's global(): true for every set of labels (nodes are never in a namespace)."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "global()"


@attrs.frozen
class Has:
    label: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.label in labels

    def __str__(self) -> str:
        return f"has({_label(self.label)})"


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
        return f"{_label(self.label)} {self.op} {_quote(self.value)}"


@attrs.frozen
class In:
    label: str
    values: frozenset[str]
    negated: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        return (labels.get(self.label) in self.values) != self.negated

    def __str__(self) -> str:
        values = ", ".join(_quote(v) for v in sorted(self.values))
        return f"{_label(self.label)} {'not in' if self.negated else 'in'} {{{values}}}"


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


def _label(label: str) -> str:
    if len(label) > MAX_LABEL_LENGTH or not _LABEL.fullmatch(label):
        raise SelectorError(f"not a label Calico can select on: {label!r}")
    return label


def render(selector: Selector) -> str:
    """Canonical text, which Calico parses; parse(render(s)) matches exactly what s matches, and
    render(parse(render(s))) == render(s). SelectorError if s holds what no text can say."""
    return str(selector)


# Calico's validator refuses longer selectors. Nesting is bounded too, so that neither parsing
# nor matching a hostile selector ("((((…") can run out of stack. A run of "!" counts towards
# the bound, though it is folded as Calico folds it, into one negation or none.
MAX_LENGTH = 1024
MAX_DEPTH = 64

# -- tokens ------------------------------------------------------------------------------------
# A token is (kind, value). The kinds are the operators' canonical spellings and "label",
# "string", "has" (its value is the label), "all", "global" and "eof". The value is "" but for
# a label, a string literal or has().
Token = tuple[str, str]

_DOUBLED = {"=": "==", "&": "&&", "|": "||"}
# After a label, only an operator may come. The last word must end where a label could not go
# on: Calico checks that after the blanks that follow a two-word operator, but not after
# `contains` or `in`, so "a starts with x" fails here and "a contains x" later, in the parser.
_WORD_OPERATOR = re.compile(r"""
      (?P<contains>contains)(?![A-Za-z0-9_./-])
    | (?P<starts>starts[ \t]*with)(?![ \t]*[A-Za-z0-9_./-])
    | (?P<ends>ends[ \t]*with)(?![ \t]*[A-Za-z0-9_./-])
    | (?P<notin>not[ \t]*in)(?![ \t]*[A-Za-z0-9_./-])
    | (?P<in>in)(?![A-Za-z0-9_./-])
""", re.VERBOSE)
_WORD_KINDS = {"contains": "contains", "starts": "starts with", "ends": "ends with",
               "notin": "not in", "in": "in"}
_HAS = re.compile(r"has\([ \t]*([A-Za-z0-9_./-]*)[ \t]*(\)?)")
_EMPTY_CALL = re.compile(r"(all|global)\([ \t]*(\)?)")


def tokenize(text: str) -> list[Token]:
    """Calico's tokens for `text`, ending with ("eof", ""); SelectorError where Calico's
    tokenizer fails."""
    tokens: list[Token] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos == len(text):
            tokens.append(("eof", ""))
            return tokens
        char = text[pos]
        if char in "(){},":
            tokens.append((char, ""))
            pos += 1
        elif char in "'\"":
            end = text.find(char, pos + 1)
            if end < 0:
                raise _error(text, pos, "unterminated string")
            tokens.append(("string", text[pos + 1:end]))
            pos = end + 1
        elif char == "!":
            kind = "!=" if text.startswith("!=", pos) else "!"
            tokens.append((kind, ""))
            pos += len(kind)
        elif char in _DOUBLED:
            if not text.startswith(_DOUBLED[char], pos):
                raise _error(text, pos, f"expected {_DOUBLED[char]!r}")
            tokens.append((_DOUBLED[char], ""))
            pos += 2
        elif tokens and tokens[-1][0] == "label":
            if not (match := _WORD_OPERATOR.match(text, pos)):
                raise _error(text, pos, f"expected an operator after label {tokens[-1][1]!r}")
            tokens.append((_WORD_KINDS[match.lastgroup or ""], ""))
            pos = match.end()
        elif (match := _HAS.match(text, pos)):  # whatever follows "has("
            if not match[1]:
                raise _error(text, pos, "no label in has(")
            _check_length(text, pos, match[1])
            if not match[2]:
                raise _error(text, pos, "no closing ')' after has(")
            tokens.append(("has", match[1]))
            pos = match.end()
        elif (match := _EMPTY_CALL.match(text, pos)):
            if not match[2]:
                raise _error(text, pos, f"no closing ')' after {match[1]}(")
            tokens.append((match[1], ""))
            pos = match.end()
        elif (match := _LABEL.match(text, pos)):
            _check_length(text, pos, match[0])
            tokens.append(("label", match[0]))
            pos = match.end()
        else:
            raise _error(text, pos, "unexpected character")


def _check_length(text: str, pos: int, label: str) -> None:
    if len(label) > MAX_LABEL_LENGTH:
        raise _error(text, pos, f"label longer than {MAX_LABEL_LENGTH} characters")


def _error(text: str, pos: int, message: str) -> SelectorError:
    return SelectorError(f"{message} at column {pos + 1} of {text!r}")


# -- grammar -----------------------------------------------------------------------------------

def parse(text: str) -> Selector:
    """The selector Calico reads in `text` (empty or blank: all()); SelectorError if Calico
    would refuse it, or if it is longer or more deeply nested than rrwatch takes."""
    if len(text) > MAX_LENGTH:
        raise SelectorError(f"longer than {MAX_LENGTH} characters")
    parser = _Parser(text, tokenize(text))
    if parser.peek() == "eof":
        return All()
    result = parser.or_expr()
    if parser.peek() != "eof":
        raise parser.error("unexpected text")
    return result


_VALUE_OPERATORS = frozenset({"==", "!=", "contains", "starts with", "ends with"})


class _Parser:
    """Calico's recursive descent over the tokens: `||` binds loosest, then `&&`, then `!`."""

    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.at = 0  # the next token; tokens end with "eof", which is never taken
        self.depth = 0

    def error(self, message: str) -> SelectorError:
        kind, value = self.tokens[self.at]
        return SelectorError(f"{message} at token {self.at + 1} ({value or kind}) "
                             f"of {self.text!r}")

    def peek(self) -> str:
        return self.tokens[self.at][0]

    def take(self, kind: str) -> str:
        if self.peek() != kind:
            raise self.error("expected a quoted literal" if kind == "string" else
                             f"expected {kind!r}")
        self.at += 1
        return self.tokens[self.at - 1][1]

    def or_expr(self) -> Selector:
        operands = [self.and_expr()]
        while self.peek() == "||":
            self.at += 1
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Or(_flatten(Or, operands))

    def and_expr(self) -> Selector:
        operands = [self.operation()]
        while self.peek() == "&&":
            self.at += 1
            operands.append(self.operation())
        return operands[0] if len(operands) == 1 else And(_flatten(And, operands))

    def operation(self) -> Selector:
        negated = False
        depth = self.depth
        while self.peek() == "!":  # each "!" counts as a level of nesting, as "(" does
            negated = not negated
            self.at += 1
            depth += 1
            if depth > MAX_DEPTH:
                raise self.error(f"nested more than {MAX_DEPTH} deep")
        kind, value = self.tokens[self.at]
        result: Selector
        if kind == "has":
            result = Has(value)
        elif kind == "all":
            result = All()
        elif kind == "global":
            result = Global()
        elif kind == "label":
            self.at += 1
            return self.comparison(value, negated)
        elif kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.error(f"nested more than {MAX_DEPTH} deep")
            self.at += 1
            result = self.or_expr()
            self.depth -= 1
            if self.peek() != ")":
                raise self.error("expected ')'")
        else:
            raise self.error("expected a label, has(), all(), global() or (")
        self.at += 1
        return Not(result) if negated else result

    def comparison(self, label: str, negated: bool) -> Selector:
        op = self.peek()
        result: Selector
        if op in _VALUE_OPERATORS:
            self.at += 1
            result = Compare(label, op, self.take("string"))
        elif op in ("in", "not in"):
            self.at += 1
            self.take("{")
            values = []
            while self.peek() == "string":  # "a", "b", — a trailing comma is allowed
                values.append(self.take("string"))
                if self.peek() != ",":
                    break
                self.at += 1
            self.take("}")
            result = In(label, frozenset(values), negated=op == "not in")
        else:
            raise self.error(f"expected an operator after label {label!r}")
        return Not(result) if negated else result


def _flatten(kind: type[And] | type[Or], operands: list[Selector]) -> tuple[Selector, ...]:
    """(a && b) && c is a && b && c: one canonical shape for each meaning of the text."""
    out: list[Selector] = []
    for operand in operands:
        out.extend(operand.operands if isinstance(operand, kind) else (operand,))
    return tuple(out)

"""Stored values read exactly: JSON that round-trips byte for byte, or a BadRecord naming its key.

An edit must never rewrite a byte rrwatch does not own, so a value is refused when re-encoding
could change it: a float that would lose digits or its form (1e400, 1.50), NaN and Infinity,
and an object that repeats a key. Any other failure while reading a value, of whatever kind,
becomes a BadRecord too (`reading`): a bad value is logged, counted and skipped, never a crash.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import threading
from collections.abc import Iterator
from typing import Any


class BadRecord(ValueError):
    """A stored value rrwatch cannot use. It is logged with its key, counted and skipped."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class BirdRefuses(BadRecord):
    """A bad value that confd passes on as it is, and calico-node's BIRD refuses with the
    whole configuration it is in (a node's cluster ID that is not a dotted quad): that node
    runs no BGP. `verify` reports it as fatal."""


@contextlib.contextmanager
def reading(key: str) -> Iterator[None]:
    """Any failure while reading one record's value is that record's fault, whatever its type
    (a RecursionError from deep JSON, a ValueError from a 5,000-digit number): a BadRecord, so
    that no value can crash a reader."""
    try:
        yield
    except BadRecord:
        raise
    except Exception as e:  # noqa: BLE001 - the value is hostile input, not our bug
        raise BadRecord(key, f"cannot be read ({type(e).__name__})") from None


_GC = threading.Lock()
_decoding = 0  # decodes in progress, in any thread
_collecting = False  # whether the collector ran before the first of them


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """No cyclic garbage collection while a hostile value is decoded. The C decoder may recurse
    to the interpreter's limit, and a finalizer the collector ran down there would fail with a
    RecursionError of its own: an exception nobody can catch, in whatever object it finalized."""
    global _decoding, _collecting
    with _GC:
        if _decoding == 0:
            _collecting = gc.isenabled()
            gc.disable()
        _decoding += 1
    try:
        yield
    finally:
        with _GC:
            _decoding -= 1
            if _decoding == 0 and _collecting:
                gc.enable()


def json_object(key: str, value: bytes) -> dict[str, Any]:
    """A stored value as a JSON object; BadRecord if it is not one, or if it holds anything
    that dumps() could not write back exactly (edits must change no byte they do not own)."""
    try:
        with no_collection():
            obj = _DECODER.decode(value.decode())
        if _SURROGATE.search(value):  # JSON allows lone \udXXX escapes; UTF-8 cannot hold them
            json.dumps(obj, ensure_ascii=False).encode()
    except _Inexact as e:
        raise BadRecord(key, str(e)) from None
    except (UnicodeError, ValueError, RecursionError) as e:
        # ValueError: JSONDecodeError, and an integer beyond Python's digit limit
        raise BadRecord(key, f"not JSON in UTF-8 ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise BadRecord(key, "not a JSON object")
    return obj


class _Inexact(ValueError):
    """A JSON value that would not survive decoding and encoding again unchanged."""


def _float(text: str) -> float:
    number = float(text)
    if json.dumps(number) != text:  # 1e400 would become Infinity (not JSON), 1.50 would be 1.5
        raise _Inexact(f"the number {text[:40]} cannot be written back exactly")
    return number


def _constant(text: str) -> float:
    raise _Inexact(f"{text} is not JSON")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # an edit would drop all but the last of a repeated key
        raise _Inexact("a JSON object repeats a key")
    return obj


_DECODER = json.JSONDecoder(parse_float=_float, parse_constant=_constant,
                            object_pairs_hook=_pairs)
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")

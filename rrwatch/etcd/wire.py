"""The gateway's JSON wire format: requests built, replies decoded and checked.

Every reply is untrusted input: whatever is wrong with it (JSON, shape, types, sizes) becomes an
EtcdError here, and only decoded values leave this module."""

from __future__ import annotations

import base64
import functools
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar

import attrs

from rrwatch.core.decoding import no_collection
from rrwatch.etcd.errors import Code, Compacted, EtcdError

log = logging.getLogger("rrwatch.etcd")

T = TypeVar("T")
P = ParamSpec("P")


@attrs.frozen
class KV:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int = 0
    lease: int = 0


@attrs.frozen
class Event:
    """A put (value set) or a delete (value None) at `revision`."""

    key: str
    value: bytes | None
    revision: int


@attrs.frozen
class WatchResponse:
    """One message of a watch stream: events, or a progress notice (no events).

    The header revision of the `created` message is not a resume point: events before it may
    still be on their way.
    """

    revision: int
    events: tuple[Event, ...] = ()
    created: bool = False


@attrs.frozen
class TxnResult:
    """Whether the compares held, the revision after it, and the keys read by range ops."""

    succeeded: bool
    revision: int
    kvs: dict[str, KV] = attrs.field(factory=dict)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # every key
    return stripped[:-1] + bytes([stripped[-1] + 1])


# -- decoding replies ----------------------------------------------------------------------------
#
# One place turns reply bytes into values. Each decoder raises EtcdError and nothing else: a reply
# is untrusted, and whatever it breaks (a KeyError, RecursionError, the int-digits ValueError,
# MemoryError) says only that the reply is bad. Callers add the endpoint and request.

_INT64 = re.compile(r"-?[0-9]{1,19}")  # the gateway writes int64 as a string of ASCII digits


def _decoder(read: Callable[P, T]) -> Callable[P, T]:
    """`read`, failing with EtcdError alone."""

    @functools.wraps(read)
    def decode(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return read(*args, **kwargs)
        except EtcdError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure on untrusted input means a bad reply
            raise EtcdError(f"malformed reply ({type(e).__name__})") from e

    return decode


def _printable(text: str, limit: int = 300) -> str:
    """`text` cut to `limit` characters, with control characters escaped: one safe line."""
    cut = text[:limit]
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                    for c in cut)
    return shown + ("..." if len(text) > limit else "")


def _what(value: Any) -> str:
    """A short description of a value from a reply, safe for any depth, size or type."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(value) if -(10**20) < value < 10**20 else "an integer of over 20 digits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(_printable(value, 40))
    if isinstance(value, list | dict):
        return f"a JSON {'array' if isinstance(value, list) else 'object'} of {len(value)}"
    return f"a {type(value).__name__}"


def _need(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        raise EtcdError(f"no {name}")
    return obj[name]


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EtcdError(f"{what}: expected a JSON object, got {_what(value)}")
    return value


def _array(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise EtcdError(f"{what}: expected a JSON array, got {_what(value)}")
    return value


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise EtcdError(f"{what}: expected true or false, got {_what(value)}")
    return value


def _int(value: Any, what: str, *, low: int = -(2**63)) -> int:
    """An int64 as the gateway writes one (a string of ASCII digits; a plain number is taken
    too), at least `low`. Not a float, a bool, other digits ('²', Arabic-Indic) or a bigger one."""
    if isinstance(value, str) and _INT64.fullmatch(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and low <= value < 2**63:
        return value
    raise EtcdError(f"{what}: expected an integer of at least {low}, got {_what(value)}")


def _revision(value: Any, what: str) -> int:
    return _int(value, what, low=0)


@_decoder
def _json(data: bytes) -> Any:
    """The JSON value of a reply or a watch line."""
    try:
        with no_collection():
            return json.loads(data)
    except RecursionError:
        raise EtcdError("JSON nested too deep") from None
    except ValueError as e:  # not JSON, not UTF-8, or an integer past Python's digit limit
        raise EtcdError(f"not JSON: {_printable(str(e), 120)}") from None


@_decoder
def _unb64(text: Any) -> bytes:
    """Bytes as the gateway writes them: standard base64, absent or "" when empty."""
    if text is None or text == "":
        return b""
    if not isinstance(text, str):
        raise EtcdError(f"expected base64 text, got {_what(text)}")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise EtcdError(f"not base64: {_what(text)}") from None


@_decoder
def _key(raw: Any) -> str:
    return _unb64(raw).decode("utf-8", "replace")


@_decoder
def _kv(raw: Any) -> KV:
    raw = _object(raw, "kv")
    return KV(_key(_need(raw, "key")), _unb64(raw.get("value")),
              _revision(_need(raw, "mod_revision"), "mod_revision"),
              _revision(raw.get("create_revision", 0), "create_revision"),
              _int(raw.get("lease", 0), "lease"))


@_decoder
def _header_revision(reply: Any) -> int:
    header = _object(_need(_object(reply, "reply"), "header"), "header")
    return _revision(_need(header, "revision"), "header.revision")


@_decoder
def _range_reply(reply: Any) -> tuple[int, list[KV], bool]:
    """(header revision, key-values, whether more remain)."""
    revision = _header_revision(reply)
    kvs = [_kv(kv) for kv in _array(reply.get("kvs", []), "kvs")]
    return revision, kvs, _flag(reply.get("more", False), "more")


@_decoder
def _txn_reply(reply: Any) -> TxnResult:
    revision = _header_revision(reply)
    kvs: list[KV] = []
    for response in _array(reply.get("responses", []), "responses"):
        ranged = _object(_object(response, "response").get("response_range", {}),
                         "response_range")
        kvs.extend(_kv(kv) for kv in _array(ranged.get("kvs", []), "kvs"))
    # On failure `succeeded` is absent (etcd-notes.md).
    return TxnResult(_flag(reply.get("succeeded", False), "succeeded"), revision,
                     {kv.key: kv for kv in kvs})


@_decoder
def _grant_reply(reply: Any) -> int:
    return _int(_need(_object(reply, "reply"), "ID"), "ID")


@_decoder
def _keep_alive_reply(reply: Any) -> int:
    result = _object(_object(reply, "reply").get("result", {}), "result")
    return _int(result.get("TTL", 0), "TTL")


@_decoder
def _granted_ttl_reply(reply: Any) -> int:
    return _int(_object(reply, "reply").get("grantedTTL", 0), "grantedTTL")


def _text(value: Any) -> str:
    return _printable(value) if isinstance(value, str) else _what(value)


def refusal(text: str) -> tuple[str, int | None]:
    """A gateway's error reply: its message and gRPC status code, or the text as it is (and no
    code) when it is not the gateway's JSON error."""
    try:
        with no_collection():
            reply = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or hostile JSON
        return _printable(text.strip()), None
    if not isinstance(reply, dict):
        return _printable(text.strip()), None
    code = reply.get("code")
    message = reply.get("message") or reply.get("error") or text
    return _text(message), code if type(code) is int else None


@_decoder
def _watch_message(line: bytes, url: str) -> WatchResponse | EtcdError:
    """One line of a watch stream. What etcd says to end the stream (an error, a cancel, a
    compaction) comes back as an EtcdError value; a line that makes no sense is raised."""
    message = _object(_json(line), "watch message")
    if "error" in message:
        error = message["error"]
        text = error.get("message", error) if isinstance(error, dict) else error
        code = error.get("grpc_code", error.get("code")) if isinstance(error, dict) else None
        return EtcdError(f"{url}: watch error: {_text(text)}",
                         code=code if type(code) is int else None)
    result = _object(message.get("result", {}), "result")
    compacted = _revision(result.get("compact_revision", 0), "compact_revision")
    if _flag(result.get("canceled", False), "canceled"):
        if compacted:
            return Compacted(compacted)
        reason = _text(result.get("cancel_reason", "no reason"))
        return EtcdError(f"{url}: watch canceled: {reason}", code=Code.CANCELLED)
    return WatchResponse(
        revision=_header_revision(result),
        events=tuple(_event(e) for e in _array(result.get("events", []), "events")),
        created=_flag(result.get("created", False), "created"),
    )


def _event(raw: Any) -> Event:
    raw = _object(raw, "event")
    kind = raw.get("type", "PUT")
    if kind not in ("PUT", "DELETE"):
        raise EtcdError(f"event type: expected PUT or DELETE, got {_what(kind)}")
    kv = _object(_need(raw, "kv"), "kv")
    return Event(key=_key(_need(kv, "key")),
                 value=None if kind == "DELETE" else _unb64(kv.get("value")),
                 revision=_revision(_need(kv, "mod_revision"), "mod_revision"))


def _lines(chunks: Iterable[bytes], cap: int) -> Iterator[bytes]:
    """The lines of a stream, without their newlines, however its bytes were cut. EtcdError once
    a line passes `cap` bytes unfinished. Linear in the bytes: no rescans of a growing line."""
    pending = bytearray()
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if len(pending) + end - start > cap:
                break
            pending += chunk[start:end]
            yield bytes(pending)
            pending.clear()
            start = end + 1
        pending += chunk[start:]
        if len(pending) > cap:
            raise EtcdError(f"a watch message longer than {cap} bytes")
    if pending:
        yield bytes(pending)


Compare = dict[str, Any]


def mod_is(key: str, revision: int) -> Compare:
    """The key's mod revision is `revision` (0: the key does not exist)."""
    return {"key": _b64(key.encode()), "target": "MOD", "result": "EQUAL",
            "mod_revision": revision}


def created_at(key: str, revision: int) -> Compare:
    """The key was created at `revision` (0: the key does not exist)."""
    return {"key": _b64(key.encode()), "target": "CREATE", "result": "EQUAL",
            "create_revision": revision}


def put(key: str, value: bytes, lease: int = 0) -> dict[str, Any]:
    request: dict[str, Any] = {"key": _b64(key.encode()), "value": _b64(value)}
    if lease:
        request["lease"] = lease
    return {"request_put": request}


def get(key: str) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key.encode())}}


def delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key.encode())}}

"""The only module that talks to etcd: requests on etcd3gw's client for unary calls, our own
reader for watches.

Blocking HTTP runs in worker threads. Unary calls share a small limiter; each watch stream has a
thread of its own outside it, so a long-lived stream never starves a put (etcd-notes.md).
etcd3gw's watch is not used: it hangs forever on a dead stream.

Every reply is untrusted input. It is read with a byte cap and, for unary calls, within one total
deadline; whatever is wrong with it (size, time, JSON, shape, types) becomes an EtcdError here,
and only decoded values leave this module.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import http.client
import json
import logging
import random
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

import attrs
import etcd3gw
import requests
import trio
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from rrwatch.tls import TlsFiles
from rrwatch.tls import context as tls_context
from rrwatch.tls import session as tls_session

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

# Unary calls share a few threads; opening a watch (which may wait for headers as long as the
# read timeout) has its own, and each open stream a thread of its own (start_thread_soon).
_UNARY = trio.CapacityLimiter(4)
_OPENING = trio.CapacityLimiter(8)

# Caps on what etcd may send. The largest reply rrwatch asks for is a page of 1,000 keys: Calico
# records of a few KB make that a few MB (20,000 600-byte keys are 18 MB in all, etcd-notes.md),
# so 64 MiB leaves room to spare while a hostile 300 MB reply is refused after 64 MiB, not held
# whole (it took RSS to 1.3 GB). A watch message carries the events of at most 1,000 revisions
# (etcd's watch batch), each a few KB of Calico record: 16 MiB is ample, and an endless line is
# cut there instead of growing for ever.
MAX_REPLY = 64 << 20
MAX_LINE = 16 << 20
_READ = 1 << 16  # bytes asked for per read; a read returns what one socket read gave

# The longest lease an instance asks for (RRWATCH_LEASE_TTL's bound): a leader key on a longer
# one was not put there by rrwatch.
MAX_LEASE_TTL = 300


@attrs.define
class Backoff:
    """Capped exponential backoff with full jitter, reset after a success."""

    first: float = 0.1
    cap: float = 5.0
    _attempt: int = 0

    async def sleep(self) -> None:
        delay = min(self.cap, self.first * 2**self._attempt)
        self._attempt += 1
        await trio.sleep(random.uniform(delay / 2, delay))

    def reset(self) -> None:
        self._attempt = 0


class EtcdError(Exception):
    """etcd could not be reached or refused a request; the message says why, in one line."""


class Compacted(EtcdError):
    """A watch asked for history that compaction has removed: snapshot again."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"revision compacted (oldest kept: {revision})")
        self.revision = revision


class StreamIdle(EtcdError):
    """A watch stream completed no message for the whole watch timeout (silent, or trickling
    bytes that never make a line): reopen it from where it was."""


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


@_decoder
def _watch_message(line: bytes, url: str) -> WatchResponse | EtcdError:
    """One line of a watch stream. What etcd says to end the stream (an error, a cancel, a
    compaction) comes back as an EtcdError value; a line that makes no sense is raised."""
    message = _object(_json(line), "watch message")
    if "error" in message:
        error = message["error"]
        text = error.get("message", error) if isinstance(error, dict) else error
        return EtcdError(f"{url}: watch error: {_text(text)}")
    result = _object(message.get("result", {}), "result")
    compacted = _revision(result.get("compact_revision", 0), "compact_revision")
    if _flag(result.get("canceled", False), "canceled"):
        if compacted:
            return Compacted(compacted)
        reason = _text(result.get("cancel_reason", "no reason"))
        return EtcdError(f"{url}: watch canceled: {reason}")
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


def _reason(e: BaseException) -> str:
    """A one-line reason from an HTTP library's exception, whose str() is often empty."""
    detail = getattr(e, "detail_text", None) or str(e)
    while not detail and e.__cause__ is not None:
        e = e.__cause__
        detail = str(e)
    return _printable(detail.splitlines()[0]) if detail else type(e).__name__


# -- HTTP exchanges with a deadline --------------------------------------------------------------
#
# requests' timeouts apply to each socket read, so a peer that sends a byte now and then holds a
# blocked thread for ever. A total deadline needs another thread to end the exchange: trio stops
# waiting at the deadline and shuts the exchange's socket down, which fails the blocked read at
# once. The socket is found through the connection class of our sessions, which records which
# exchange each connection serves (the pool hands a connection to another thread as soon as its
# reply has been read; the owner check keeps a late deadline from cutting someone else's).

_THREAD = threading.local()  # the exchange the current worker thread runs
_OWNERS = threading.Lock()  # guards Exchange.conn and _Owned.exchange together

# What a broken connection or a reply cut short raises from requests, urllib3 and http.client.
_BROKEN = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
           OSError)


class _Exchange:
    """One request and its reply, run in a worker thread, which another thread can end."""

    def __init__(self) -> None:
        self.conn: _Owned | None = None
        self.sock: socket.socket | None = None  # the one the reply comes on
        self.ended = False
        self._kept: requests.Response | None = None

    def run(self, call: Callable[[_Exchange], T]) -> T:
        _THREAD.exchange = self
        try:
            return call(self)
        finally:
            _THREAD.exchange = None

    def keep(self, response: requests.Response) -> None:
        """The caller takes `response` over (a watch stream), unless the exchange has ended; if
        it ends later, before the caller had it, `end` closes it."""
        with _OWNERS:
            if not self.ended:
                self._kept = response
                return
        response.close()
        raise EtcdError("abandoned")

    def end(self) -> None:
        """Fail any read or write of this exchange now; called from another thread."""
        with _OWNERS:
            self.ended = True
            conn, sock = self.conn, self.sock
            if conn is not None and conn.exchange is self:
                _shutdown(conn.sock)  # still connecting or sending
                _shutdown(sock)
            elif conn is not None and conn.sock is not sock:
                # The connection let go of the socket (a reply with "Connection: close"):
                # no one else can be using it.
                _shutdown(sock)
            kept, self._kept = self._kept, None
        if kept is not None:
            kept.close()


class _Owned:
    """A connection that notes the exchange it serves when a request starts on it, and the
    socket the reply comes on (http.client drops it from the connection when the reply says
    "Connection: close", though the reply is still read from it)."""

    exchange: _Exchange | None = None
    sock: socket.socket | None

    def request(self, *args: Any, **kwargs: Any) -> None:
        exchange = getattr(_THREAD, "exchange", None)
        with _OWNERS:
            self.exchange = exchange
            if exchange is not None:
                exchange.conn = self
        super().request(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self) -> Any:
        exchange = self.exchange
        if exchange is not None:
            with _OWNERS:
                exchange.sock = self.sock
                ended = exchange.ended
            if ended:  # while connecting, when there was no socket to shut down yet
                _shutdown(self.sock)
        return super().getresponse()  # type: ignore[misc]


class _Connection(_Owned, HTTPConnection):
    pass


class _TlsConnection(_Owned, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _TlsConnection


def _session(tls: ssl.SSLContext | None) -> requests.Session:
    """A session for etcd (rrwatch.tls) whose connections can be ended from another thread."""
    out = tls_session(tls)
    for adapter in out.adapters.values():
        adapter.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TlsPool}
    return out


async def _in_thread(call: Callable[[_Exchange], T], *, timeout: float,
                     limiter: trio.CapacityLimiter, abandon: bool) -> T:
    """`call(exchange)` in a worker thread, given `timeout` seconds in all (waiting for a thread
    included); trio.TooSlowError after that, with the exchange ended.

    Without `abandon`, the caller's cancellation waits for the exchange, at most until the
    deadline (a write must not be left in doubt); with it, the exchange is ended at once.
    """
    exchange = _Exchange()
    with trio.move_on_after(timeout) as scope:
        scope.shield = not abandon
        try:
            return await trio.to_thread.run_sync(exchange.run, call, limiter=limiter,
                                                 abandon_on_cancel=True)
        except trio.Cancelled:
            exchange.end()  # the thread is left behind: make it finish now
            raise
    raise trio.TooSlowError


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it comes: each piece is what one socket read gave. (iter_content waits to
    fill its chunk, and urllib3's chunked reader reads chunk-size lines without a bound.)"""
    while chunk := response.raw.read1(_READ, decode_content=True):
        yield chunk


def _body(response: requests.Response, cap: int) -> bytes:
    body = bytearray()
    for chunk in _chunks(response):
        body += chunk
        if len(body) > cap:
            raise EtcdError(f"reply larger than {cap} bytes")
    return bytes(body)


def _request(session: requests.Session, url: str, payload: dict[str, Any], timeout: float,
             exchange: _Exchange) -> tuple[int, Any]:
    """Runs in a worker thread: one POST; its status and its JSON value (its text when it is
    not 200)."""
    with session.post(url, json=payload, stream=True, timeout=timeout) as response:
        body = _body(response, MAX_REPLY)
    if response.status_code != 200:
        return response.status_code, body.decode("utf-8", "replace") or response.reason
    return 200, _json(body)


# Refusals that mean this member cannot serve now (etcd3gw's ConnectionFailedError and
# ConnectionTimeoutError): try the next endpoint.
_UNAVAILABLE = {503, 408, 504}


class Etcd:
    """A client for one etcd cluster. Endpoints are tried in turn when one fails."""

    def __init__(
        self,
        endpoints: Sequence[str],
        tls: TlsFiles | None = None,
        *,
        timeout: float = 5.0,
        watch_timeout: float = 60.0,
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self._endpoints = [urllib.parse.urlsplit(e) for e in endpoints]
        self._tls = None if tls is None else tls_context(tls)
        self.timeout = timeout
        self._watch_timeout = watch_timeout
        self._current = 0
        self._client = self._connect(self._current)

    def _connect(self, index: int) -> etcd3gw.Etcd3Client:
        url = self._endpoints[index]
        return etcd3gw.Etcd3Client(
            host=url.hostname or "localhost",
            port=url.port or 2379,
            protocol=url.scheme or "https",
            timeout=self.timeout,
            api_path="/v3/",
            session=_session(self._tls),
        )

    @property
    def endpoint(self) -> str:
        return self._client.base_url

    def use_tls(self, context: ssl.SSLContext) -> None:
        """Make new connections with `context` (rotated certificates). Requests in flight and
        open watch streams keep the connections they have: nothing is interrupted."""
        self._tls = context
        old, self._client.session = self._client.session, _session(context)
        old.close()

    def fail_over(self, endpoint: str) -> None:
        """Move to the next endpoint, unless someone already moved away from `endpoint`."""
        if len(self._endpoints) > 1 and endpoint == self.endpoint:
            self._client.session.close()
            self._current = (self._current + 1) % len(self._endpoints)
            self._client = self._connect(self._current)
            log.info("using etcd endpoint %s", self.endpoint)

    async def close(self) -> None:
        self._client.session.close()

    async def _post(self, path: str, payload: dict[str, Any], *, abandon: bool = False) -> Any:
        """One request, within the timeout in all; its JSON value. Every failure is an
        EtcdError.

        With `abandon`, cancelling the caller ends the request at once (only for requests safe
        to repeat or to lose); without, the caller waits for it, at most until the timeout.
        """
        client = self._client
        base = client.base_url
        send = functools.partial(_request, client.session, client.get_url(path), payload,
                                 self.timeout)
        try:
            status, reply = await _in_thread(send, timeout=self.timeout, limiter=_UNARY,
                                             abandon=abandon)
        except trio.TooSlowError:
            self.fail_over(base)
            raise EtcdError(f"{base}: no whole reply to {path} within {self.timeout:g} s"
                            ) from None
        except EtcdError as e:  # too large, or not JSON
            raise EtcdError(f"{base}: unexpected reply to {path}: {e}") from e
        except _BROKEN as e:
            # A reply cut short by a dying server comes through as the library raised it.
            self.fail_over(base)
            raise EtcdError(f"{base}: {_reason(e)}") from e
        if status != 200:
            if status in _UNAVAILABLE:
                self.fail_over(base)
            raise EtcdError(f"{base}: {_printable(reply)}")
        return reply

    async def _call(self, path: str, payload: dict[str, Any], read: Callable[[Any], T],
                    *, abandon: bool = False) -> T:
        """A request, and the decoder `read` applied to its reply: a reply of the wrong shape
        is an EtcdError too, never a KeyError deep in the daemon."""
        reply = await self._post(path, payload, abandon=abandon)
        try:
            return read(reply)
        except EtcdError as e:
            raise EtcdError(f"{self.endpoint}: unexpected reply to {path}: {e}") from e

    async def range(
        self, start: bytes, end: bytes, *, revision: int = 0, limit: int = 0,
        keys_only: bool = False,
    ) -> tuple[int, list[KV], bool]:
        """One range request: (header revision, key-values, whether more remain)."""
        payload: dict[str, Any] = {"key": _b64(start), "range_end": _b64(end)}
        if revision:
            payload["revision"] = revision
        if limit:
            payload["limit"] = limit
        if keys_only:
            payload["keys_only"] = True
        return await self._call("/kv/range", payload, _range_reply)

    async def pages(
        self, prefixes: Sequence[str], *, page: int = 1000, keys_only: bool = False
    ) -> AsyncIterator[tuple[int, list[KV]]]:
        """Every key under the prefixes at one pinned revision, page by page as it is read:
        (revision, key-values). A caller that uses each page as it comes never holds them all.

        The revision is the first reply's: a reply's header gives etcd's revision at the time,
        which moves on while the pages are read, not the revision read at.
        """
        revision = 0
        for prefix in prefixes:
            start = prefix.encode()
            end = prefix_end(start)
            while True:
                now, kvs, more = await self.range(start, end, revision=revision, limit=page,
                                                  keys_only=keys_only)
                revision = revision or now
                yield revision, kvs
                if not more or not kvs:
                    break
                start = kvs[-1].key.encode() + b"\0"

    async def snapshot(
        self, prefixes: Sequence[str], *, page: int = 1000, keys_only: bool = False
    ) -> tuple[int, list[KV]]:
        """Every key under the prefixes at one pinned revision, read in pages."""
        revision = 0
        out: list[KV] = []
        async for read in self.pages(prefixes, page=page, keys_only=keys_only):
            revision, kvs = read
            out.extend(kvs)
        return revision, out

    async def get(self, key: str) -> KV | None:
        encoded = key.encode()
        _, kvs, _ = await self.range(encoded, encoded + b"\0", limit=1)
        return kvs[0] if kvs else None

    async def probe(self) -> int:
        """A linearizable read of one key: the current revision, or EtcdError when the member
        cannot serve (frozen, partitioned from its quorum, unreachable)."""
        return await self._call("/kv/range", {"key": _b64(b"\0"), "count_only": True},
                                _header_revision)

    async def txn(
        self, compare: Sequence[dict], success: Sequence[dict], failure: Sequence[dict] = ()
    ) -> TxnResult:
        request = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        return await self._call("/kv/txn", request, _txn_reply)

    async def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; its ID."""
        return await self._call("/lease/grant", {"TTL": ttl}, _grant_reply)

    async def keep_alive(self, lease: int) -> int:
        """Renew a lease; the TTL it now has, 0 when it has expired or been revoked.

        Cancellable at once: the caller's deadline, not the request timeout, decides."""
        return await self._call("/lease/keepalive", {"ID": lease}, _keep_alive_reply,
                                abandon=True)

    async def lease_granted_ttl(self, lease: int) -> int:
        """The TTL `lease` was granted with; 0 when it does not exist (any more)."""
        return await self._call("/lease/timetolive", {"ID": lease}, _granted_ttl_reply)

    async def revoke(self, lease: int) -> None:
        """End a lease now, deleting every key attached to it."""
        try:
            await self._post("/lease/revoke", {"ID": lease})
        except EtcdError as e:
            if "lease not found" not in str(e):
                raise

    @contextlib.asynccontextmanager
    async def watch(
        self, key: str, start_revision: int, *, prefix: bool = True
    ) -> AsyncIterator[WatchStream]:
        """A watch stream on a prefix (or one key), as an async iterator of responses.

        The stream's end arrives as an EtcdError in it (Compacted when the start revision is
        gone, StreamIdle when no whole message came for the watch timeout). Opening it takes
        at most the request timeout plus the watch timeout. Leaving the context shuts the
        socket down, which unblocks the reading thread at once.
        """
        start = key.encode()
        create: dict[str, Any] = {"key": _b64(start), "start_revision": start_revision,
                                  "progress_notify": True}
        if prefix:
            create["range_end"] = _b64(prefix_end(start))
        request = {"create_request": create}
        endpoint = self.endpoint
        url = self._client.get_url("/watch")
        with contextlib.ExitStack() as cleanup:
            session = cleanup.enter_context(_session(self._tls))

            def open_stream(exchange: _Exchange) -> tuple[requests.Response, socket.socket]:
                response = session.post(url, json=request, stream=True,
                                        timeout=(self.timeout, self._watch_timeout))
                exchange.keep(response)  # closed by `end` if we stop waiting from now on
                return response, exchange.sock

            opening = self.timeout + self._watch_timeout
            try:
                response, sock = await _in_thread(open_stream, timeout=opening,
                                                  limiter=_OPENING, abandon=True)
                cleanup.enter_context(response)
                response.raise_for_status()
            except trio.TooSlowError:
                self.fail_over(endpoint)
                raise EtcdError(f"{url}: no reply headers within {opening:g} s") from None
            except _BROKEN as e:
                self.fail_over(endpoint)
                raise EtcdError(f"{url}: {_reason(e)}") from e
            token = trio.lowlevel.current_trio_token()
            send, receive = trio.open_memory_channel[WatchResponse | EtcdError](16)
            done = trio.Event()

            def finished(_outcome: object) -> None:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(done.set)

            # A plain thread rather than a nursery: errors raised by the caller's block then
            # reach the caller as themselves, not wrapped in an exception group.
            trio.lowlevel.start_thread_soon(
                functools.partial(_pump, response, send, url, token), finished)
            try:
                yield WatchStream(receive, self._watch_timeout, url, sock)
            finally:
                _shutdown(sock)
                receive.close()
                with trio.CancelScope(shield=True):
                    await done.wait()
                if sock is not None:
                    sock.close()  # urllib3 may have let go of it after a broken read


class WatchStream:
    """The messages of a watch stream, for `async for`.

    The idle timer runs while the reader waits, and counts whole messages: a stream that
    completes none for the whole watch timeout ends with StreamIdle, however many bytes
    trickle in meanwhile (a socket read timeout would see those bytes as life).
    """

    def __init__(self, receive: trio.MemoryReceiveChannel[WatchResponse | EtcdError],
                 idle: float, url: str, sock: socket.socket | None) -> None:
        self._receive = receive
        self._idle = idle
        self._url = url
        self._sock = sock

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchResponse | EtcdError:
        with trio.move_on_after(self._idle):
            try:
                return await self._receive.receive()
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
        _shutdown(self._sock)  # the reading thread stops at once
        return StreamIdle(f"{self._url}: watch stream gave no whole message for the read"
                          f" timeout ({self._idle:g} s)")


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _pump(
    response: requests.Response,
    send: trio.MemorySendChannel,
    url: str,
    token: trio.lowlevel.TrioToken,
) -> None:
    """Runs in a thread: read the stream line by line into the channel until it ends."""

    def put(item: WatchResponse | EtcdError) -> bool:
        try:
            trio.from_thread.run(send.send, item, trio_token=token)
            return True
        except (trio.RunFinishedError, trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # the reader went away: stop quietly

    try:
        for line in _lines(_chunks(response), MAX_LINE):
            if line.strip() and not put(_watch_message(line, url)):
                return
        put(EtcdError(f"{url}: watch stream closed by the server"))
    except urllib3.exceptions.ReadTimeoutError as e:
        if _silent(e):
            put(StreamIdle(f"{url}: watch stream silent for the whole read timeout"))
        else:
            put(EtcdError(f"{url}: watch stream broken: {_reason(e)}"))
    except EtcdError as e:  # a line too long, or one that makes no sense
        put(EtcdError(f"{url}: watch stream broken: {e}"))
    except Exception as e:  # noqa: BLE001 - any failure ends this stream; the owner reconnects
        put(EtcdError(f"{url}: watch stream broken: {_reason(e)}"))


def _silent(e: urllib3.exceptions.ReadTimeoutError) -> bool:
    """A read timeout, as opposed to a connection TCP keepalive found dead (ETIMEDOUT, which
    Python also raises as TimeoutError and urllib3 also reports as a read timeout)."""
    return getattr(e.__context__, "errno", None) != errno.ETIMEDOUT


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


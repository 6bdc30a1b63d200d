"""The only module that talks to etcd: etcd3gw for unary calls, our own reader for watches.

Blocking HTTP runs in worker threads. Unary calls share a small limiter; each watch stream has a
thread of its own outside it, so a long-lived stream never starves a put (etcd-notes.md).
etcd3gw's watch is not used: it hangs forever on a dead stream.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import json
import logging
import random
import socket
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import attrs
import etcd3gw
import etcd3gw.exceptions
import requests
import trio
import urllib3

from rrwatch.tls import TlsFiles
from rrwatch.tls import context as tls_context
from rrwatch.tls import session as tls_session

log = logging.getLogger(__name__)

T = TypeVar("T")

# Unary calls share a few threads; opening a watch (which may wait for headers as long as the
# read timeout) has its own, and each open stream a thread of its own (start_thread_soon).
_UNARY = trio.CapacityLimiter(4)
_OPENING = trio.CapacityLimiter(8)


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
    """A watch stream said nothing for the whole read timeout: reopen it from where it was."""


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


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # every key
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _key(raw: str) -> str:
    return _unb64(raw).decode("utf-8", "replace")


def _kv(raw: dict[str, Any]) -> KV:
    return KV(_key(raw["key"]), _unb64(raw.get("value")), int(raw["mod_revision"]),
              int(raw.get("create_revision", 0)), int(raw.get("lease", 0)))


def _reason(e: BaseException) -> str:
    """A one-line reason from etcd3gw's exceptions, whose str() is often empty."""
    detail = getattr(e, "detail_text", None) or str(e)
    while not detail and e.__cause__ is not None:
        e = e.__cause__
        detail = str(e)
    return detail.splitlines()[0] if detail else type(e).__name__


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
            session=tls_session(self._tls),
        )

    @property
    def endpoint(self) -> str:
        return self._client.base_url

    def use_tls(self, context: ssl.SSLContext) -> None:
        """Make new connections with `context` (rotated certificates). Requests in flight and
        open watch streams keep the connections they have: nothing is interrupted."""
        self._tls = context
        old, self._client.session = self._client.session, tls_session(context)
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
        """One request; its JSON reply. Every failure is an EtcdError.

        With `abandon`, cancelling the caller does not wait for the request to time out: the
        thread is left to finish on its own (only for requests safe to repeat or to lose).
        """
        client = self._client
        call = functools.partial(client.post, client.get_url(path), json=payload)
        try:
            return await trio.to_thread.run_sync(call, limiter=_UNARY, abandon_on_cancel=abandon)
        except (etcd3gw.exceptions.ConnectionFailedError,
                etcd3gw.exceptions.ConnectionTimeoutError, requests.RequestException) as e:
            # etcd3gw converts only timeouts and connection errors; a reply cut short by a
            # dying server (ChunkedEncodingError) comes through as requests raised it.
            self.fail_over(client.base_url)
            raise EtcdError(f"{client.base_url}: {_reason(e)}") from e
        except (etcd3gw.exceptions.Etcd3Exception, ValueError) as e:
            raise EtcdError(f"{client.base_url}: {_reason(e)}") from e

    async def _call(self, path: str, payload: dict[str, Any], read: Callable[[Any], T],
                    *, abandon: bool = False) -> T:
        """A request, and `read` applied to its reply; a reply of the wrong shape is an
        EtcdError too, never a KeyError deep in the daemon."""
        reply = await self._post(path, payload, abandon=abandon)
        try:
            return read(reply)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise EtcdError(f"{self.endpoint}: unexpected reply to {path}: {e!r}") from e

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
        return await self._call("/kv/range", payload, lambda reply: (
            int(reply["header"]["revision"]),
            [_kv(kv) for kv in reply.get("kvs", ())],
            bool(reply.get("more")),
        ))

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
                                lambda reply: int(reply["header"]["revision"]))

    async def txn(
        self, compare: Sequence[dict], success: Sequence[dict], failure: Sequence[dict] = ()
    ) -> TxnResult:
        request = {"compare": list(compare), "success": list(success), "failure": list(failure)}

        def read(reply: dict[str, Any]) -> TxnResult:
            kvs = [_kv(raw) for response in reply.get("responses", ())
                   for raw in response.get("response_range", {}).get("kvs", ())]
            return TxnResult(bool(reply.get("succeeded")), int(reply["header"]["revision"]),
                             {kv.key: kv for kv in kvs})

        return await self._call("/kv/txn", request, read)

    async def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; its ID."""
        return await self._call("/lease/grant", {"TTL": ttl}, lambda reply: int(reply["ID"]))

    async def keep_alive(self, lease: int) -> int:
        """Renew a lease; the TTL it now has, 0 when it has expired or been revoked.

        Cancellable at once: the caller's deadline, not the request timeout, decides."""
        return await self._call("/lease/keepalive", {"ID": lease},
                                lambda reply: int(reply.get("result", {}).get("TTL", 0)),
                                abandon=True)

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
    ) -> AsyncIterator[trio.MemoryReceiveChannel[WatchResponse | EtcdError]]:
        """A watch stream on a prefix (or one key), as a channel of responses.

        The stream's end arrives as an EtcdError in the channel (Compacted when the start
        revision is gone, StreamIdle after a read timeout). Leaving the context shuts the
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
            session = cleanup.enter_context(tls_session(self._tls))
            opened: list[requests.Response] = []

            def open_stream() -> requests.Response:
                response = session.post(url, json=request, stream=True,
                                        timeout=(self.timeout, self._watch_timeout))
                # Registered from the thread: if we are cancelled meanwhile, trio waits for
                # the thread and then drops its result, and the socket must still be closed.
                opened.append(cleanup.enter_context(response))
                return response

            try:
                response = await trio.to_thread.run_sync(open_stream, limiter=_OPENING)
                response.raise_for_status()
            except requests.RequestException as e:
                self.fail_over(endpoint)
                raise EtcdError(f"{url}: {_reason(e)}") from e
            sock = response.raw.connection.sock if response.raw.connection else None
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
                yield receive
            finally:
                _shutdown(sock)
                receive.close()
                with trio.CancelScope(shield=True):
                    await done.wait()
                if sock is not None:
                    sock.close()  # urllib3 may have let go of it after a broken read


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
        for line in response.iter_lines():
            if line and not put(_watch_message(line, url)):
                return
        put(EtcdError(f"{url}: watch stream closed by the server"))
    except requests.ConnectionError as e:
        if _silent(e):
            put(StreamIdle(f"{url}: watch stream silent for the whole read timeout"))
        else:
            put(EtcdError(f"{url}: watch stream broken: {_reason(e)}"))
    except Exception as e:  # noqa: BLE001 - any failure ends this stream; the owner reconnects
        put(EtcdError(f"{url}: watch stream broken: {_reason(e)}"))


def _silent(e: requests.ConnectionError) -> bool:
    """A read timeout, as opposed to a connection TCP keepalive found dead (ETIMEDOUT, which
    Python also raises as TimeoutError and urllib3 also reports as a read timeout)."""
    timeout = e.args[0] if e.args else None
    cause = getattr(timeout, "__context__", None)
    return (isinstance(timeout, urllib3.exceptions.ReadTimeoutError)
            and getattr(cause, "errno", None) != errno.ETIMEDOUT)


def _watch_message(line: bytes, url: str) -> WatchResponse | EtcdError:
    message = json.loads(line)
    if "error" in message:
        return EtcdError(f"{url}: watch error: {message['error'].get('message', message)}")
    result = message.get("result", {})
    compacted = int(result.get("compact_revision", 0))
    if result.get("canceled"):
        if compacted:
            return Compacted(compacted)
        return EtcdError(f"{url}: watch canceled: {result.get('cancel_reason', 'no reason')}")
    events = tuple(
        Event(
            key=_key(e["kv"]["key"]),
            value=None if e.get("type") == "DELETE" else _unb64(e["kv"].get("value")),
            revision=int(e["kv"]["mod_revision"]),
        )
        for e in result.get("events", ())
    )
    return WatchResponse(
        revision=int(result["header"]["revision"]),
        events=events,
        created=bool(result.get("created")),
    )


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


"""HTTP exchanges with etcd's gateway that end at a total deadline, whatever the peer does."""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import requests
import requests.adapters
import trio
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from rrwatch.etcd.errors import EtcdError
from rrwatch.etcd.wire import T, _json, _printable
from rrwatch.tls import session as tls_session

log = logging.getLogger("rrwatch.etcd")

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
_READ = 1 << 16  # bytes asked for per read; a read returns what one socket read gave


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
        assert isinstance(adapter, requests.adapters.HTTPAdapter)  # tls_session mounts these
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
             headers: dict[str, str], exchange: _Exchange) -> tuple[int, Any]:
    """Runs in a worker thread: one POST; its status and its JSON value (its text when it is
    not 200)."""
    with session.post(url, json=payload, headers=headers, stream=True,
                      timeout=timeout) as response:
        body = _body(response, MAX_REPLY)
    if response.status_code != 200:
        return response.status_code, body.decode("utf-8", "replace") or response.reason
    return 200, _json(body)


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

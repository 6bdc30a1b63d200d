"""Reading a watch stream: one thread per stream pumps whole messages into a trio channel."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable

import requests
import trio
import urllib3

from rrwatch.etcd.errors import Code, EtcdError, StreamIdle
from rrwatch.etcd.http import _chunks, _reason, _shutdown
from rrwatch.etcd.wire import WatchResponse, _lines, _watch_message

log = logging.getLogger("rrwatch.etcd")
MAX_LINE = 16 << 20


class WatchStream:
    """The messages of a watch stream, for `async for`.

    The idle timer runs while the reader waits, and counts whole messages: a stream that
    completes none for the whole watch timeout ends with StreamIdle, however many bytes
    trickle in meanwhile (a socket read timeout would see those bytes as life).
    """

    def __init__(self, receive: trio.MemoryReceiveChannel[WatchResponse | EtcdError],
                 idle: float, url: str, sock: socket.socket | None,
                 renew: Callable[[], None] | None = None) -> None:
        self._receive = receive
        self._idle = idle
        self._url = url
        self._sock = sock
        self._renew = renew  # drops the auth token when etcd cancels the watch

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchResponse | EtcdError:
        with trio.move_on_after(self._idle):
            try:
                item = await self._receive.receive()
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
            if (isinstance(item, EtcdError) and item.code == Code.CANCELLED
                    and self._renew is not None):
                self._renew()
            return item
        _shutdown(self._sock)  # the reading thread stops at once
        return StreamIdle(f"{self._url}: watch stream gave no whole message for the read"
                          f" timeout ({self._idle:g} s)")


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

"""A hostile etcd gateway: whatever it answers, and however slowly, every call ends in an
EtcdError (or the watch's idle or error path) within its deadline, with bounded memory.

The gateway is a small threaded server on loopback that speaks just enough HTTP to misbehave;
the real etcd is in the other test modules.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from rrwatch.etcd import Etcd, EtcdError, StreamIdle, WatchResponse, get, http, wire
from tests.support import hostile_bytes, hostile_json

TIMEOUT = 1.0  # the client's request and watch timeouts, in seconds
GUARD = 10  # fail_after for each call: far past TIMEOUT, far short of a trickle's end
TRICKLE = 0.5  # seconds between trickled bytes: each read sees life well within TIMEOUT

Answer = Callable[[socket.socket, threading.Event], None]


def _read_request(sock: socket.socket) -> None:
    """Read one request (headers and a Content-Length body) and drop it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk


@contextlib.contextmanager
def gateway(answer: Answer) -> Iterator[str]:
    """A gateway on 127.0.0.1 that runs `answer(socket, stopping)` for every request; its URL.
    `stopping` is set when the test ends, so that endless answers end too."""
    stopping = threading.Event()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with contextlib.suppress(OSError):  # the client hung up: that is the point
                _read_request(self.request)
                answer(self.request, stopping)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stopping.set()
        server.shutdown()
        server.server_close()
        thread.join()


def head(status: bytes = b"200 OK", length: int | None = None, chunked: bool = False) -> bytes:
    lines = [b"HTTP/1.1 " + status, b"Content-Type: application/json", b"Connection: close"]
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def replying(body: bytes, status: bytes = b"200 OK") -> Answer:
    def answer(sock: socket.socket, _stopping: threading.Event) -> None:
        sock.sendall(head(status, len(body)) + body)

    return answer


@contextlib.asynccontextmanager
async def client(url: str, **kwargs: float):
    etcd = Etcd([url], None, **{"timeout": TIMEOUT, "watch_timeout": TIMEOUT, **kwargs})
    try:
        yield etcd
    finally:
        await etcd.close()


# Every unary call rrwatch makes, and a paged snapshot (what the daemon and the CLI start with).
CALLS = {
    "probe": lambda etcd: etcd.probe(),
    "range": lambda etcd: etcd.range(b"/a", b"/b"),
    "snapshot": lambda etcd: etcd.snapshot(["/calico/"]),
    "txn": lambda etcd: etcd.txn([], [get("/a")]),
    "grant": lambda etcd: etcd.grant(5),
    "keep_alive": lambda etcd: etcd.keep_alive(1),
    "lease_granted_ttl": lambda etcd: etcd.lease_granted_ttl(1),
    "revoke": lambda etcd: etcd.revoke(1),
}


async def refused(answer: Answer, call: str = "probe", guard: float = GUARD,
                  **kwargs: float) -> EtcdError:
    """The EtcdError that `call` ends in against a gateway answering `answer`."""
    with gateway(answer) as url:
        async with client(url, **kwargs) as etcd:
            with trio.fail_after(guard), pytest.raises(EtcdError) as raised:
                await CALLS[call](etcd)
    return raised.value


DEEP = 200_000


@pytest.mark.parametrize("call", CALLS)
async def test_a_reply_nested_200000_deep_is_an_etcd_error(call):
    """JSON nested 200,000 deep is a bad reply, never a RecursionError, for every call."""
    await refused(replying(b'{"header":' + b"[" * DEEP + b"]" * DEEP + b"}"), call)


async def test_a_refusal_nested_200000_deep_is_an_etcd_error():
    """An error reply (not 200) whose body is JSON nested 200,000 deep: an EtcdError with the
    text, never a RecursionError."""
    deep = b"[" * DEEP + b"]" * DEEP
    error = await refused(replying(deep, b"500 Internal Server Error"))
    assert error.code is None and str(error).isprintable()


GARBAGE = bytes(range(256)) + b"\x1b[2J\nforged line\r\n" + b"\xff" * 64


async def test_garbage_is_one_printable_line_of_etcd_error():
    """Garbage bytes, as a reply or as a refusal, are an EtcdError of one printable line."""
    for status in (b"200 OK", b"500 Internal Server Error", b"503 Service Unavailable"):
        error = await refused(replying(GARBAGE, status))
        assert str(error).isprintable(), (status, str(error))


# Replies of the right shape with values of the wrong type, which int(), bool() or a lenient
# base64 decoder would have turned into wrong values without a word.
WRONG_TYPES = {
    "revision as a 100-digit string": ("probe", b'{"header":{"revision":"%s"}}' % (b"9" * 100)),
    "revision in Arabic-Indic digits": ("probe", '{"header":{"revision":"١٢"}}'.encode()),
    "revision as a float": ("probe", b'{"header":{"revision":1.5}}'),
    "key that is not base64": ("range", b'{"header":{"revision":"5"},'
                                        b'"kvs":[{"key":"%%%%","mod_revision":"3"}]}'),
    "kvs as a string": ("range", b'{"header":{"revision":"5"},"kvs":""}'),
    "more as a string": ("range", b'{"header":{"revision":"5"},"more":"false"}'),
    "succeeded as a string": ("txn", b'{"header":{"revision":"5"},"succeeded":"false"}'),
    "lease ID as a float": ("grant", b'{"header":{"revision":"5"},"ID":7.9}'),
    "TTL as true": ("keep_alive", b'{"result":{"TTL":true}}'),
    "grantedTTL past int64": ("lease_granted_ttl", b'{"grantedTTL":"%s"}' % (b"9" * 30)),
}


@pytest.mark.parametrize("case", WRONG_TYPES)
async def test_a_reply_with_values_of_the_wrong_type_is_an_etcd_error(case):
    """A field of the wrong type or out of range is a bad reply, not a wrong value."""
    call, body = WRONG_TYPES[case]
    await refused(replying(body), call)


class Trickle:
    """A reply sent one byte per TRICKLE seconds, its headers too or its body after whole
    headers; it would take 20 s or more. `hung_up` is set when the client hangs up on it."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.hung_up = threading.Event()

    def __call__(self, sock: socket.socket, stopping: threading.Event) -> None:
        body = b'{"header":{"revision":"5"}}'.ljust(40)
        whole = head(length=len(body)) + body
        start = 0 if self.where == "headers" else len(whole) - len(body)
        sock.sendall(whole[:start])
        for byte in whole[start:]:
            if stopping.wait(TRICKLE):
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                self.hung_up.set()
                return


@pytest.mark.parametrize("where", ["headers", "body"])
@pytest.mark.parametrize("call", ["snapshot", "txn"])
async def test_a_trickled_reply_ends_at_the_deadline(where, call):
    """A reply that trickles in byte by byte ends in an EtcdError at the request timeout, which
    is a deadline for the whole request, not a timeout for each read; and the connection is
    dropped then, not left to a thread blocked in a read."""
    trickle = Trickle(where)
    with gateway(trickle) as url:
        async with client(url) as etcd:
            with trio.fail_after(GUARD), pytest.raises(EtcdError):
                await CALLS[call](etcd)
            assert await trio.to_thread.run_sync(trickle.hung_up.wait, GUARD), "still connected"


class Endless:
    """A 300 MB reply, of which the gateway counts what it managed to send."""

    SIZE = 300 << 20

    def __init__(self) -> None:
        self.sent = 0
        self.done = threading.Event()

    def __call__(self, sock: socket.socket, stopping: threading.Event) -> None:
        try:
            sock.sendall(head(length=self.SIZE))
            block = b" " * (1 << 20)
            while self.sent < self.SIZE and not stopping.is_set():
                sock.sendall(block)
                self.sent += len(block)
        finally:
            self.done.set()


async def test_an_oversized_reply_is_refused_without_being_read_whole():
    """A 300 MB reply is an EtcdError once it passes the cap; the rest is never read."""
    reply = Endless()
    # A deadline far off: the cap, not the clock, must end it.
    error = await refused(reply, "range", guard=60, timeout=30)
    assert "larger than" in str(error)
    await trio.to_thread.run_sync(reply.done.wait, GUARD)
    # What the gateway sent: the cap, plus what the socket buffers held when the client left.
    assert reply.sent < http.MAX_REPLY + (32 << 20)


CREATED = b'{"result":{"header":{"revision":"5"},"created":true}}\n'


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def streaming(rest: Callable[[socket.socket, threading.Event], None]) -> Answer:
    """A watch stream that says it was created, then goes on with `rest`."""

    def answer(sock: socket.socket, stopping: threading.Event) -> None:
        sock.sendall(head(chunked=True) + chunk(CREATED))
        rest(sock, stopping)

    return answer


def trickled_line(sock: socket.socket, stopping: threading.Event) -> None:
    """Bytes of a line that never ends, each its own HTTP chunk, for up to 30 s."""
    for _ in range(300):
        if stopping.wait(0.1):
            return
        sock.sendall(chunk(b"x"))


def endless_line(sock: socket.socket, stopping: threading.Event) -> None:
    """A line that never ends, as fast as the client takes it."""
    block = chunk(b"x" * (1 << 20))
    while not stopping.is_set():
        sock.sendall(block)


async def watched(answer: Answer, **kwargs: float) -> list[WatchResponse | EtcdError]:
    """What a watch against a gateway answering `answer` gives, up to its first error."""
    seen: list[WatchResponse | EtcdError] = []
    with gateway(answer) as url:
        async with client(url, **kwargs) as etcd:
            with trio.fail_after(GUARD):
                async with etcd.watch("/calico/", 6) as stream:
                    async for message in stream:
                        seen.append(message)
                        if isinstance(message, EtcdError):
                            break
                # Leaving the watch waits for its reading thread: the guard covers that too.
                await trio.lowlevel.checkpoint()
    return seen


async def test_a_watch_that_trickles_bytes_but_no_line_is_idle():
    """A stream that keeps sending bytes but never completes a message is idle after the
    watch timeout: the idle timer counts messages, not bytes."""
    first, last = await watched(streaming(trickled_line))
    assert isinstance(first, WatchResponse) and first.created
    assert isinstance(last, StreamIdle)


async def test_a_watch_line_over_the_cap_ends_the_stream():
    """A watch line that passes the cap is an EtcdError (not a growing buffer and a pegged
    core), long before any idle timer."""
    first, last = await watched(streaming(endless_line), watch_timeout=60)
    assert isinstance(first, WatchResponse) and first.created
    assert type(last) is EtcdError and "longer than" in str(last)


# -- decoders, fed anything ----------------------------------------------------------------------

REPLY_DECODERS = ["_range_reply", "_txn_reply", "_grant_reply", "_keep_alive_reply",
                  "_granted_ttl_reply", "_header_revision"]


def decoded(decode: Callable[..., object], *args: object) -> None:
    """Call a decoder: it returns, or raises EtcdError; anything else escapes and fails."""
    with contextlib.suppress(EtcdError):
        decode(*args)


@given(st.sampled_from(["_kv", "_key", "_unb64"]), hostile_json())
def test_record_decoders_raise_nothing_but_etcd_errors(name, value):
    """Any JSON value, however deep or huge, given to the key-value decoders is decoded or an
    EtcdError."""
    decoded(getattr(wire, name), value)


@given(st.sampled_from(REPLY_DECODERS), hostile_json())
def test_reply_decoders_raise_nothing_but_etcd_errors(name, value):
    """Any JSON value given to any reply decoder (range, txn, lease replies) is decoded or an
    EtcdError."""
    decoded(getattr(wire, name), value)


@given(hostile_bytes())
def test_watch_lines_raise_nothing_but_etcd_errors(line):
    """Any bytes as a watch line are a message, an EtcdError value, or a raised EtcdError."""
    decoded(wire._watch_message, line, "http://gateway")


@given(hostile_bytes())
def test_reply_bytes_raise_nothing_but_etcd_errors(body):
    """Any bytes as a reply body are JSON or an EtcdError."""
    decoded(wire._json, body)


LINE = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))


@given(st.lists(LINE, max_size=8), st.integers(1, 50))
def test_lines_come_out_as_they_went_in_however_the_bytes_are_cut(lines, cut):
    """Splitting a stream into lines gives back its lines whatever the read sizes."""
    data = b"".join(line + b"\n" for line in lines)
    chunks = [data[i:i + cut] for i in range(0, len(data), cut)]
    assert list(wire._lines(chunks, 40)) == lines


@given(st.lists(LINE, max_size=4), st.integers(41, 200), st.integers(1, 50))
def test_a_line_past_the_cap_is_an_etcd_error(before, size, cut):
    """A line longer than the cap is an EtcdError, whether or not its end ever comes; the
    lines before it come out."""
    data = b"".join(line + b"\n" for line in before) + b"x" * size
    chunks = [data[i:i + cut] for i in range(0, len(data), cut)]
    out = []
    with pytest.raises(EtcdError):
        out.extend(wire._lines(chunks, 40))
    assert out == before

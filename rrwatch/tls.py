"""TLS material for etcd: the file paths, the SSL context read from them, and the HTTP session
that uses it; and `read_regular`, the one way rrwatch reads a file it is configured with.

The context holds the certificates and key as they were read: connections made with it do not
depend on the files afterwards, so a rotation is taken up by swapping in a new context once the
new files check out, and a half-written or wrong one never breaks a working client.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from typing import Any

import attrs
import requests
import requests.adapters
from urllib3.connection import HTTPConnection

# TCP keepalive on every etcd connection: a peer that vanished without a FIN or RST (host down,
# network partition) is noticed after 10 + 3 × 5 s even while a watch stream waits in silence.
_KEEPALIVE = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
]


PEM_LIMIT = 1 << 20  # bytes: a CA bundle of a thousand certificates fits
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_regular(path: str, limit: int) -> bytes:
    """The bytes of the regular file at `path`, which must hold at most `limit` of them.

    Never blocks and never reads without end: the file is opened without waiting for a writer
    (a FIFO) and refused unless it is a regular file (not a FIFO, a device such as /dev/zero, or
    a directory). OSError otherwise, whose strerror says why in a few words.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "something else")
            raise OSError(errno.EINVAL, f"not a regular file but {kind}", path)
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, min(limit + 1 - size, 1 << 16))):
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
        return b"".join(chunks)
    finally:
        os.close(fd)


def shown(path: str) -> str:
    """`path` for a message: as it is, or as repr() when it holds a newline, an escape or any
    other character that could forge or garble a line of the log or of stderr."""
    return path if path.isprintable() else repr(path)


@attrs.frozen
class TlsFiles:
    """Paths of the PEM files one TLS party needs: the CA to trust, its own cert and key."""

    ca: str
    cert: str
    key: str

    @property
    def paths(self) -> tuple[str, str, str]:
        return self.ca, self.cert, self.key


def context(tls: TlsFiles) -> ssl.SSLContext:
    """A client context that trusts only `tls.ca` and presents `tls`'s certificate.

    Each file is read once with `read_regular`, and OpenSSL parses those bytes, never the path:
    a FIFO or a device put there cannot block or exhaust it. Raises OSError or ssl.SSLError;
    certs.check says what is wrong in a way people can act on.
    """
    ca, cert, key = (read_regular(path, PEM_LIMIT) for path in tls.paths)
    with _in_memory(ca) as ca_path, _in_memory(cert) as cert_path, _in_memory(key) as key_path:
        out = ssl.create_default_context(cafile=ca_path)  # no system CAs when a CA is given
        out.load_cert_chain(cert_path, key_path)
    return out


@contextlib.contextmanager
def _in_memory(data: bytes) -> Iterator[str]:
    """A path that reads `data`, for OpenSSL's loaders that take nothing else: an anonymous
    memory file (Linux), which never touches a disk and is gone once closed."""
    fd = os.memfd_create("rrwatch-tls", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def session(tls: TlsFiles | ssl.SSLContext | None) -> requests.Session:
    """A requests session for etcd: TLS with `tls` (files are read now), or plain HTTP.

    `trust_env` is off: these machines set REQUESTS_CA_BUNDLE, which requests would otherwise
    use instead of our CA, and proxies from the environment must not carry etcd traffic.
    """
    if isinstance(tls, TlsFiles):
        tls = context(tls)
    out = requests.Session()
    out.trust_env = False
    for scheme in ("https://", "http://"):
        out.mount(scheme, _Adapter(tls))
    return out


class _Adapter(requests.adapters.HTTPAdapter):
    """TCP keepalive, and TLS by our context alone."""

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        self._ssl_context = ssl_context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = HTTPConnection.default_socket_options + _KEEPALIVE
        if self._ssl_context is not None:
            kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: object, url: str, verify: object, cert: object) -> None:
        # requests would point urllib3 at certifi's bundle, which urllib3 then loads into our
        # context, trusting every public CA. The context already says whom to trust.
        if self._ssl_context is None:
            super().cert_verify(conn, url, verify, cert)

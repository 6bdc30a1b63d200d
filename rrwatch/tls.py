"""TLS material for etcd: the file paths, the SSL context read from them, and the HTTP session
that uses it.

The context holds the certificates and key as they were read: connections made with it do not
depend on the files afterwards, so a rotation is taken up by swapping in a new context once the
new files check out, and a half-written or wrong one never breaks a working client.
"""

from __future__ import annotations

import socket
import ssl

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

    Raises OSError or ssl.SSLError; certs.check says what is wrong in a way people can act on.
    """
    out = ssl.create_default_context(cafile=tls.ca)  # no system CAs when a CA file is given
    out.load_cert_chain(tls.cert, tls.key)
    return out


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

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        kwargs["socket_options"] = HTTPConnection.default_socket_options + _KEEPALIVE
        if self._ssl_context is not None:
            kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: object, url: str, verify: object, cert: object) -> None:
        # requests would point urllib3 at certifi's bundle, which urllib3 then loads into our
        # context, trusting every public CA. The context already says whom to trust.
        if self._ssl_context is None:
            super().cert_verify(conn, url, verify, cert)

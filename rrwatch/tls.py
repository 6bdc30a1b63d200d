"""TLS material for etcd: the file paths, and the HTTP session that uses them."""

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


def session(tls: TlsFiles | None) -> requests.Session:
    """A requests session that trusts only `tls.ca` and presents `tls`'s certificate.

    `trust_env` is off: these machines set REQUESTS_CA_BUNDLE, which requests would otherwise
    use instead of our CA, and proxies from the environment must not carry etcd traffic.
    """
    out = requests.Session()
    out.trust_env = False
    for scheme in ("https://", "http://"):
        out.mount(scheme, _KeepAliveAdapter())
    if tls is not None:
        out.verify = tls.ca
        out.cert = (tls.cert, tls.key)
    return out


class _KeepAliveAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        kwargs["socket_options"] = HTTPConnection.default_socket_options + _KEEPALIVE
        super().init_poolmanager(*args, **kwargs)


def problems(tls: TlsFiles) -> list[str]:
    """Why these files cannot make a TLS client, one line per problem, naming the file."""
    out = []
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=tls.ca)
    except (OSError, ssl.SSLError) as e:
        out.append(f"{tls.ca}: not a usable CA certificate ({_reason(e)})")
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as e:
        out.append(f"{tls.cert} with {tls.key}: not a usable certificate and key ({_reason(e)})")
    return out


def _reason(e: Exception) -> str:
    return getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)

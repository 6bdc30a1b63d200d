"""TLS material for etcd: the file paths, and the HTTP session that uses them."""

from __future__ import annotations

import ssl

import attrs
import requests


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
    if tls is not None:
        out.verify = tls.ca
        out.cert = (tls.cert, tls.key)
    return out


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

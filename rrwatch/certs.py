"""Preflight checks of the etcd TLS material, each finding one line that names its file.

`check` reads the files itself, so a bad set is explained ("expired on ...", "not signed by the
CA in ...") rather than left to OpenSSL's one opaque handshake error.  `server_name_warning`
looks at what the etcd server presents: the daemon may not verify host names (etcd members are
often addressed by an IP their certificate does not name), so a mismatch is worth a warning.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from typing import TypeVar

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rrwatch.tls import PEM_LIMIT, TlsFiles, read_regular, shown
from rrwatch.tls import context as tls_context

__all__ = ["WARN_DAYS", "CertReport", "check", "covers", "fetch_server_cert",
           "server_name_warning", "server_names"]

WARN_DAYS = 30  # warn this long before the client certificate expires: time to reissue it
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
_T = TypeVar("_T")


@attrs.frozen
class CertReport:
    """What `check` found: fatal problems, warnings, and the client certificate's expiry."""

    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    not_after: datetime.datetime | None = None  # None when the client cert did not parse
    days_left: float | None = None  # to not_after, from the `now` of the check; may be negative

    @property
    def ok(self) -> bool:
        return not self.problems


def check(tls: TlsFiles, now: datetime.datetime | None = None) -> CertReport:
    """Check the CA, client certificate and key files; report every finding, not the first.

    The CA file may be a bundle; the cert file may hold a chain, leaf first.  A check that needs
    a file that could not be read or parsed is skipped: that file's one problem says enough.
    """
    now = now if now is not None else datetime.datetime.now(datetime.UTC)
    ca_file, cert_file, key_file = (shown(path) for path in tls.paths)
    problems: list[str] = []
    warnings: list[str] = []
    cas = _load(tls.ca, problems, x509.load_pem_x509_certificates, "PEM certificate") or []
    chain = _load(tls.cert, problems, x509.load_pem_x509_certificates, "PEM certificate")
    key = _load(tls.key, problems, _key, "PEM private key")
    leaf, intermediates = (chain[0], chain[1:]) if chain else (None, [])

    if leaf is not None:
        if (reason := _out_of_date(leaf, now)) is not None:
            problems.append(f"{cert_file}: {reason}")
        if not _for_clients(leaf):
            problems.append(f"{cert_file}: its extended key usage lacks clientAuth, "
                            "so etcd will refuse it")
        if key is not None and _spki(leaf) != _spki(key):
            problems.append(f"{cert_file}: does not match the private key in {key_file}")
    anchor = _anchor(leaf, intermediates, cas) if leaf is not None and cas else None
    if leaf is not None and cas and anchor is None:
        problems.append(f"{cert_file}: not signed by the CA in {ca_file}")
    for ca in cas:
        if (reason := _out_of_date(ca, now)) is not None:
            # An outdated CA beside valid ones (left over from a rotation) does no harm unless
            # it is the one our certificate hangs from.
            fatal = ca is anchor or all(_out_of_date(c, now) for c in cas)
            (problems if fatal else warnings).append(
                f"{ca_file}: CA certificate {ca.subject.rfc4514_string()} {reason}")
    if key is not None and (mode := _mode(tls.key)) & 0o044:
        warnings.append(f"{key_file}: private key is readable by group or others "
                        f"(mode {mode:04o}); chmod 600 it")

    days_left = None
    if leaf is not None:
        days_left = (leaf.not_valid_after_utc - now).total_seconds() / 86400
        if 0 <= days_left < WARN_DAYS:
            warnings.append(f"{cert_file}: expires in {days_left:.1f} days, "
                            f"on {_when(leaf.not_valid_after_utc)}")
    # dict.fromkeys: one file given for two roles (a combined PEM) gives its problem once.
    return CertReport(tuple(dict.fromkeys(problems)), tuple(warnings),
                      leaf.not_valid_after_utc if leaf is not None else None, days_left)


class _Refused(Exception):
    """A file that parses but that we will not use; the message says why."""


def _load(path: str, problems: list[str], parse: Callable[[bytes], _T], what: str) -> _T | None:
    """Read and parse one file, or add why not to `problems` and return None."""
    try:
        data = read_regular(path, PEM_LIMIT)
    except OSError as e:
        problems.append(f"{shown(path)}: cannot read: {e.strerror}")
        return None
    try:
        return parse(data)
    except _Refused as e:
        problems.append(f"{shown(path)}: {e}")
    except (ValueError, UnsupportedAlgorithm):
        # Name the blocks there are: a key where the cert belongs says more than "bad PEM".
        found = sorted({m.decode() for m in re.findall(rb"-----BEGIN ([A-Z0-9 ]+)-----", data)})
        problems.append(f"{shown(path)}: no valid {what}"
                        f" (PEM blocks found: {', '.join(found) or 'none'})")
    return None


def _key(data: bytes) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # what it raises, without a password, for an encrypted key
        raise _Refused("encrypted keys are not supported") from None


def _spki(holder: x509.Certificate | PrivateKeyTypes) -> bytes:
    return holder.public_key().public_bytes(*_SPKI)


def _mode(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:  # gone since we read it: nothing left to warn about
        return 0


def _when(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _out_of_date(cert: x509.Certificate, now: datetime.datetime) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"not valid until {_when(cert.not_valid_before_utc)}"
    if now > cert.not_valid_after_utc:
        return f"expired on {_when(cert.not_valid_after_utc)}"
    return None


def _for_clients(cert: x509.Certificate) -> bool:
    """Whether TLS servers accept `cert` from a client: no EKU means any usage."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return bool({ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
                & set(usages))


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _anchor(leaf: x509.Certificate, chain: list[x509.Certificate],
            cas: list[x509.Certificate]) -> x509.Certificate | None:
    """The CA that issued `leaf`, directly or through the intermediates that follow it."""
    cert = leaf
    for _ in range(len(chain) + 1):  # bounded: a chain that loops ends here
        if (ca := next((ca for ca in cas if _issued(cert, ca)), None)) is not None:
            return ca
        if (issuer := next((c for c in chain if _issued(cert, c)), None)) is None:
            return None
        cert = issuer
    return None


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# What cryptography gives for an iPAddress SAN: a network only where the SAN is malformed.
_SanIP = Address | ipaddress.IPv4Network | ipaddress.IPv6Network


def _names(cert: x509.Certificate) -> tuple[list[str], list[_SanIP]]:
    """DNS names and IP addresses from the SANs; from the common names only without SANs."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        return ([cn for cn in cns if _ip(cn) is None],
                [ip for cn in cns if (ip := _ip(cn)) is not None])
    return san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress)


def common_names(path: str) -> list[str]:
    """The CommonNames in the subject of the certificate at `path` ([] if it cannot be read:
    the TLS checks say why)."""
    try:
        cert = x509.load_pem_x509_certificate(read_regular(path, PEM_LIMIT))
    except (OSError, ValueError):
        return []
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def server_names(cert: x509.Certificate) -> list[str]:
    """The DNS names, then the IP addresses, that `cert` is for."""
    dns, ips = _names(cert)
    return [*dns, *map(str, ips)]


def covers(cert: x509.Certificate, host: str) -> bool:
    """Whether `cert` names `host`: an IP as an address, a DNS name as RFC 6125 matches it."""
    dns, ips = _names(cert)
    if (ip := _ip(host.strip("[]"))) is not None:
        return ip in ips
    return any(_dns_match(name, host) for name in dns)


def _ip(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _dns_match(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):  # stands for exactly one whole leftmost label
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return pattern == host


def fetch_server_cert(endpoint_url: str, tls: TlsFiles | None, timeout: float) -> x509.Certificate:
    """The certificate an https endpoint presents, verified against `tls.ca` but not its name.

    Blocking.  Raises OSError (TimeoutError after `timeout` seconds) or ssl.SSLError if the
    endpoint cannot be reached or the handshake fails; ValueError for a URL that is not https.
    """
    url = urllib.parse.urlsplit(endpoint_url)
    if url.scheme != "https" or not url.hostname:
        raise ValueError(f"{endpoint_url!r} is not an https://host:port URL")
    # The files through tls.context, which reads them safely: this runs in a worker thread that
    # SIGTERM would otherwise wait for, were a file a FIFO.
    context = ssl.create_default_context() if tls is None else tls_context(tls)
    context.check_hostname = False  # so that a name mismatch is ours to report
    with socket.create_connection((url.hostname, url.port or 443), timeout=timeout) as sock, \
            context.wrap_socket(sock, server_hostname=url.hostname) as conn:
        der = conn.getpeercert(binary_form=True)
        if der is None:  # no handshake, or no certificate: our contexts require one
            raise ssl.SSLError("the server presented no certificate")
        return x509.load_der_x509_certificate(der)


def server_name_warning(endpoint_url: str, tls: TlsFiles | None, timeout: float) -> str | None:
    """A warning if the endpoint's certificate does not name its host; None if it does or if
    the endpoint is plain http.  Raises as `fetch_server_cert` does."""
    url = urllib.parse.urlsplit(endpoint_url)
    if url.scheme != "https" or not url.hostname:
        return None
    host = url.hostname
    cert = fetch_server_cert(endpoint_url, tls, timeout)
    if covers(cert, host):
        return None
    names = ", ".join(server_names(cert)) or "nothing"
    return f"{endpoint_url}: the server certificate does not name {host} (it names: {names})"

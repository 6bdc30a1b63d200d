"""Throw-away certificate authority for tests and the demo.

Everything here is for loopback etcd servers started by :mod:`rrwatch.local_etcd`: EC P-256 keys
(generated in milliseconds, unlike RSA), no passphrases, no revocation.  The small helpers
(:func:`make_ca`, :func:`issue`, :func:`write_pem`) are public so that tests can build deliberately
wrong certificates: expired, signed by another CA, missing a SAN or an extended key usage.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from collections.abc import Iterable

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rrwatch.tls import TlsFiles

__all__ = ["Pki", "issue", "make_ca", "make_pki", "write_pem"]

log = logging.getLogger("rrwatch.pki")

Key = ec.EllipticCurvePrivateKey

DEFAULT_BACKDATE = datetime.timedelta(hours=1)  # tolerate small clock skew between processes
DEFAULT_LIFETIME = datetime.timedelta(days=365)
SERVER_SANS = ("127.0.0.1", "::1", "localhost")


@attrs.frozen
class Pki:
    """A CA with one server and two client certificates, written under ``dir``: ``client``
    (CommonName rrwatch) and ``nameless`` (no CommonName, as etcd's gateway wants with auth
    on)."""

    dir: str
    ca: str
    server: TlsFiles
    client: TlsFiles
    nameless: TlsFiles


def _validity(
    not_before: datetime.datetime | None, not_after: datetime.datetime | None
) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return (
        not_before if not_before is not None else now - DEFAULT_BACKDATE,
        not_after if not_after is not None else now + DEFAULT_LIFETIME,
    )


def _new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    """A subject with this CommonName; without one when empty (an organisation instead)."""
    if not common_name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rrwatch")])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signatures for everyone (all an ECDHE-ECDSA handshake needs); certificate signing for CAs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(
    common_name: str,
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> tuple[x509.Certificate, Key]:
    """Make a self-signed CA certificate and its key."""
    key = _new_key()
    start, end = _validity(not_before, not_after)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(ca=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(
    ca_cert: x509.Certificate,
    ca_key: Key,
    common_name: str,
    *,
    sans: Iterable[str] = (),
    server: bool = False,
    client: bool = True,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> tuple[x509.Certificate, Key]:
    """Issue a leaf certificate signed by ``ca_cert``/``ca_key``.

    ``sans`` entries that parse as IP addresses become IP SANs, the rest DNS SANs.  ``server`` and
    ``client`` choose the extended key usages; with neither, the certificate has no EKU extension
    (which TLS stacks treat as "any usage").
    """
    key = _new_key()
    start, end = _validity(not_before, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    names = [_san(name) for name in sans]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def write_pem(path: str, obj: x509.Certificate | Key) -> None:
    """Write a certificate (mode 0644) or an unencrypted PKCS#8 private key (mode 0600) as PEM."""
    if isinstance(obj, x509.Certificate):
        data, mode = obj.public_bytes(serialization.Encoding.PEM), 0o644
    else:
        data = obj.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        mode = 0o600
    # Create with the final mode so a key is never readable by others, not even briefly; chmod
    # too, because os.open's mode does not apply to a file that already exists.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)


def make_pki(
    directory: str,
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Pki:
    """Create a CA, a server cert and a client cert under ``directory``.

    The server cert (SANs 127.0.0.1, ::1, localhost) has both serverAuth and clientAuth so etcd can
    also use it as its peer cert, which is presented in both directions.  ``not_before`` and
    ``not_after`` set the validity of the two leaf certs (to make an expired set); the CA always
    covers the default window and the leaves' one, so only the leaves are ever out of date.
    """
    os.makedirs(directory, exist_ok=True)
    leaf_start, leaf_end = _validity(not_before, not_after)
    default_start, default_end = _validity(None, None)
    ca_cert, ca_key = make_ca(
        "rrwatch test CA",
        not_before=min(leaf_start, default_start),
        not_after=max(leaf_end, default_end),
    )
    server_cert, server_key = issue(
        ca_cert, ca_key, "localhost", sans=SERVER_SANS, server=True, client=True,
        not_before=leaf_start, not_after=leaf_end,
    )
    client_cert, client_key = issue(
        ca_cert, ca_key, "rrwatch", client=True, not_before=leaf_start, not_after=leaf_end
    )
    nameless_cert, nameless_key = issue(
        ca_cert, ca_key, "", client=True, not_before=leaf_start, not_after=leaf_end
    )

    def path(name: str) -> str:
        return os.path.join(directory, name)

    write_pem(path("ca.pem"), ca_cert)
    write_pem(path("server.pem"), server_cert)
    write_pem(path("server-key.pem"), server_key)
    write_pem(path("client.pem"), client_cert)
    write_pem(path("client-key.pem"), client_key)
    write_pem(path("nameless.pem"), nameless_cert)
    write_pem(path("nameless-key.pem"), nameless_key)
    log.debug("wrote test PKI to %s", directory)
    ca = path("ca.pem")
    return Pki(
        dir=directory,
        ca=ca,
        server=TlsFiles(ca=ca, cert=path("server.pem"), key=path("server-key.pem")),
        client=TlsFiles(ca=ca, cert=path("client.pem"), key=path("client-key.pem")),
        nameless=TlsFiles(ca=ca, cert=path("nameless.pem"), key=path("nameless-key.pem")),
    )

"""Preflight checks of the TLS files, and the names in the etcd server's certificate."""

from __future__ import annotations

import datetime
import os
import ssl

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rrwatch import certs
from rrwatch.certs import WARN_DAYS, CertReport, check, covers, server_names
from rrwatch.testing.local_etcd import free_port
from rrwatch.testing.pki import issue, make_ca, write_pem
from rrwatch.tls import PEM_LIMIT, TlsFiles

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
DAY = datetime.timedelta(days=1)
GARBAGE = b"this is not PEM\n"


@pytest.fixture(scope="module")
def ca():
    return make_ca("certs test CA")


@pytest.fixture(scope="module")
def other_ca():
    return make_ca("another CA")


def write(directory, ca_certs, certs_, key) -> TlsFiles:
    """Write a CA file (a bundle of `ca_certs`), a cert file (`certs_`, leaf first) and a key."""
    tls = TlsFiles(str(directory / "ca.pem"), str(directory / "client.pem"),
                   str(directory / "client-key.pem"))
    for path, items in ((tls.ca, ca_certs), (tls.cert, certs_)):
        with open(path, "wb") as f:
            f.writelines(c.public_bytes(serialization.Encoding.PEM) for c in items)
    write_pem(tls.key, key)
    return tls


def client_set(directory, ca, **kwargs) -> TlsFiles:
    """A client cert from `ca` (issue's keyword arguments) with its key, and `ca` as the CA."""
    cert, key = issue(*ca, "rrwatch", **kwargs)
    return write(directory, [ca[0]], [cert], key)


def assert_lines(report: CertReport, tls: TlsFiles) -> None:
    """Every finding is one line that starts with the file it concerns."""
    for line in report.problems + report.warnings:
        assert "\n" not in line
        assert line.startswith((f"{tls.ca}: ", f"{tls.cert}: ", f"{tls.key}: ")), line


def test_good_set_has_no_findings(pki):
    """The test PKI's client files: no problems, no warnings, a year left."""
    report = check(pki.client)
    assert (report.problems, report.warnings) == ((), ())
    assert report.ok
    with open(pki.client.cert, "rb") as f:
        assert report.not_after == x509.load_pem_x509_certificate(f.read()).not_valid_after_utc
    assert 364 < report.days_left <= 365


def test_days_left_counts_from_now(tmp_path, ca):
    """days_left is measured from the `now` given, in fractional days."""
    tls = client_set(tmp_path, ca, not_after=NOW + 100 * DAY)
    assert check(tls, now=NOW).days_left == 100
    assert check(tls, now=NOW + 99.5 * DAY).days_left == 0.5


@pytest.mark.parametrize("field", ["ca", "cert", "key"])
def test_missing_file_is_a_problem(tmp_path, ca, field):
    """A missing file is reported by name, with the system's reason."""
    tls = client_set(tmp_path, ca)
    os.remove(getattr(tls, field))
    report = check(tls)
    assert report.problems == (f"{getattr(tls, field)}: cannot read: No such file or directory",)
    assert (report.not_after is None) == (field == "cert")


@pytest.mark.parametrize("field", ["ca", "cert", "key"])
def test_directory_is_a_problem(tmp_path, ca, field):
    """A path that is a directory cannot be read, and says so."""
    tls = client_set(tmp_path, ca)
    os.remove(getattr(tls, field))
    os.mkdir(getattr(tls, field))
    assert check(tls).problems == (f"{getattr(tls, field)}: cannot read: Is a directory",)


@pytest.mark.parametrize(("field", "what"), [("ca", "PEM certificate"),
                                             ("cert", "PEM certificate"),
                                             ("key", "PEM private key")])
def test_garbage_is_one_problem(tmp_path, ca, field, what):
    """A file that is not PEM is one problem; the checks that need it are skipped."""
    tls = client_set(tmp_path, ca)
    with open(getattr(tls, field), "wb") as f:
        f.write(GARBAGE)
    report = check(tls)
    assert report.problems == (f"{getattr(tls, field)}: no valid {what} (PEM blocks found: none)",)
    assert report.warnings == ()


def test_swapped_cert_and_key_name_what_they_hold(tmp_path, ca):
    """A key where the cert belongs and a cert where the key belongs: both named as such."""
    tls = client_set(tmp_path, ca)
    swapped = TlsFiles(tls.ca, tls.key, tls.cert)
    assert check(swapped).problems == (
        f"{tls.key}: no valid PEM certificate (PEM blocks found: PRIVATE KEY)",
        f"{tls.cert}: no valid PEM private key (PEM blocks found: CERTIFICATE)",
    )


def test_one_file_in_two_roles_reports_once(tmp_path, ca):
    """A combined cert-and-key file is fine; the same bad file in two roles is one problem."""
    tls = client_set(tmp_path, ca)
    combined = str(tmp_path / "combined.pem")
    with open(combined, "wb") as out:
        for path in (tls.cert, tls.key):
            with open(path, "rb") as f:
                out.write(f.read())
    os.chmod(combined, 0o600)
    report = check(TlsFiles(tls.ca, combined, combined))
    assert (report.problems, report.warnings) == ((), ())
    missing = str(tmp_path / "missing.pem")
    assert check(TlsFiles(tls.ca, missing, missing)).problems == (
        f"{missing}: cannot read: No such file or directory",)


def test_encrypted_key_is_a_problem(tmp_path, ca):
    """A passphrase-protected key is refused: the daemon has no way to ask for the passphrase."""
    cert, key = issue(*ca, "rrwatch")
    tls = write(tmp_path, [ca[0]], [cert], key)
    with open(tls.key, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"secret")))
    assert check(tls).problems == (f"{tls.key}: encrypted keys are not supported",)


def test_key_of_another_cert_is_a_mismatch(tmp_path, ca):
    """A key that is not the certificate's own is a problem naming both files."""
    cert, _ = issue(*ca, "rrwatch")
    _, other_key = issue(*ca, "other")
    tls = write(tmp_path, [ca[0]], [cert], other_key)
    assert check(tls).problems == (f"{tls.cert}: does not match the private key in {tls.key}",)


def test_expired_cert_is_a_problem(tmp_path, ca):
    """An expired client cert says when it expired; days_left is negative; no expiry warning."""
    tls = client_set(tmp_path, ca, not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    report = check(tls, now=NOW)
    when = (NOW - DAY).strftime("%Y-%m-%d %H:%M")
    assert report.problems == (f"{tls.cert}: expired on {when} UTC",)
    assert report.warnings == ()
    assert report.days_left == -1


def test_not_yet_valid_cert_is_a_problem(tmp_path, ca):
    """A client cert from the future says from when it is valid."""
    tls = client_set(tmp_path, ca, not_before=NOW + DAY)
    when = (NOW + DAY).strftime("%Y-%m-%d %H:%M")
    assert check(tls, now=NOW).problems == (f"{tls.cert}: not valid until {when} UTC",)


def test_cert_from_another_ca_is_a_problem(tmp_path, ca, other_ca):
    """A client cert that the CA file's CA did not sign is a problem naming both files."""
    cert, key = issue(*other_ca, "rrwatch")
    tls = write(tmp_path, [ca[0]], [cert], key)
    assert check(tls).problems == (f"{tls.cert}: not signed by the CA in {tls.ca}",)


def test_expired_ca_is_a_problem(tmp_path):
    """An expired CA that signed the client cert is a problem, though the client cert is valid."""
    old_ca = make_ca("old CA", not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    tls = client_set(tmp_path, old_ca)
    when = (NOW - DAY).strftime("%Y-%m-%d %H:%M")
    assert check(tls, now=NOW).problems == (
        f"{tls.ca}: CA certificate CN=old CA expired on {when} UTC",)


def test_expired_ca_beside_the_signing_one_is_a_warning(tmp_path, ca):
    """An expired CA left in a bundle beside the valid one that signed us: a warning only."""
    old_ca = make_ca("old CA", not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    cert, key = issue(*ca, "rrwatch")
    tls = write(tmp_path, [old_ca[0], ca[0]], [cert], key)
    report = check(tls, now=NOW)
    assert report.problems == ()
    assert report.warnings == (f"{tls.ca}: CA certificate CN=old CA expired on "
                               f"{(NOW - DAY).strftime('%Y-%m-%d %H:%M')} UTC",)


def test_any_ca_of_a_bundle_may_sign(tmp_path, ca, other_ca):
    """A CA bundle: the client cert may come from any of its CAs."""
    cert, key = issue(*other_ca, "rrwatch")
    for bundle in ([ca[0], other_ca[0]], [other_ca[0], ca[0]]):
        report = check(write(tmp_path, bundle, [cert], key))
        assert (report.problems, report.warnings) == ((), ())


def test_chain_through_an_intermediate_reaches_the_ca(tmp_path, ca, other_ca):
    """A cert file holding leaf then intermediate is signed by the CA through the intermediate."""
    middle = issue(*ca, "intermediate")
    cert, key = issue(*middle, "rrwatch")
    assert check(write(tmp_path, [ca[0]], [cert, middle[0]], key)).problems == ()
    # Without the intermediate, or with another CA's, the leaf does not reach the CA.
    tls = write(tmp_path, [ca[0]], [cert], key)
    assert check(tls).problems == (f"{tls.cert}: not signed by the CA in {tls.ca}",)
    stranger = issue(*other_ca, "intermediate")
    tls = write(tmp_path, [ca[0]], [cert, stranger[0]], key)
    assert check(tls).problems == (f"{tls.cert}: not signed by the CA in {tls.ca}",)


def test_server_only_cert_is_a_problem(tmp_path, ca):
    """A cert whose extended key usage is serverAuth only: etcd refuses it from a client."""
    tls = client_set(tmp_path, ca, server=True, client=False)
    assert check(tls).problems == (
        f"{tls.cert}: its extended key usage lacks clientAuth, so etcd will refuse it",)
    assert check(client_set(tmp_path, ca, server=False, client=False)).problems == ()


def test_key_readable_by_others_is_a_warning(tmp_path, ca):
    """A key file with mode 0644 is a warning with that mode, not a problem."""
    tls = client_set(tmp_path, ca)
    os.chmod(tls.key, 0o644)
    report = check(tls)
    assert report.problems == ()
    assert report.warnings == (
        f"{tls.key}: private key is readable by group or others (mode 0644); chmod 600 it",)


def test_expiring_soon_is_a_warning(tmp_path, ca):
    """A client cert with 10 days left is a warning with the days and the date, not a problem."""
    tls = client_set(tmp_path, ca, not_after=NOW + 10 * DAY)
    report = check(tls, now=NOW)
    when = (NOW + 10 * DAY).strftime("%Y-%m-%d %H:%M")
    assert report.problems == ()
    assert report.warnings == (f"{tls.cert}: expires in 10.0 days, on {when} UTC",)
    assert check(tls, now=NOW + 10 * DAY - WARN_DAYS * DAY - DAY).warnings == ()


def test_problems_in_every_file_are_all_reported(tmp_path, ca):
    """Several broken files at once: each problem reported, one line each, naming its file."""
    tls = client_set(tmp_path, ca)
    os.remove(tls.ca)
    os.remove(tls.cert)
    os.mkdir(tls.cert)
    with open(tls.key, "wb") as f:
        f.write(GARBAGE)
    report = check(tls)
    assert report.problems == (
        f"{tls.ca}: cannot read: No such file or directory",
        f"{tls.cert}: cannot read: Is a directory",
        f"{tls.key}: no valid PEM private key (PEM blocks found: none)",
    )
    assert_lines(report, tls)


def test_problems_and_warnings_of_one_cert_are_all_reported(tmp_path, ca, other_ca):
    """An expired cert from another CA, with a foreign key readable by all: every finding."""
    cert, _ = issue(*other_ca, "rrwatch", not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    _, other_key = issue(*ca, "other")
    tls = write(tmp_path, [ca[0]], [cert], other_key)
    os.chmod(tls.key, 0o604)
    report = check(tls, now=NOW)
    assert report.problems == (
        f"{tls.cert}: expired on {(NOW - DAY).strftime('%Y-%m-%d %H:%M')} UTC",
        f"{tls.cert}: does not match the private key in {tls.key}",
        f"{tls.cert}: not signed by the CA in {tls.ca}",
    )
    assert report.warnings == (
        f"{tls.key}: private key is readable by group or others (mode 0604); chmod 600 it",)
    assert_lines(report, tls)


# -- server names ---------------------------------------------------------------------------------

def server_cert(ca, common_name="etcd-1", sans=()) -> x509.Certificate:
    return issue(*ca, common_name, sans=sans, server=True)[0]


def test_ip_san_matches_as_an_address(ca):
    """IP SANs compare as addresses: any spelling of the same address, v4 or v6."""
    cert = server_cert(ca, sans=("10.0.0.1", "fd00::1"))
    assert covers(cert, "10.0.0.1")
    assert covers(cert, "fd00:0::1")
    assert covers(cert, "[fd00::1]")
    assert not covers(cert, "10.0.0.2")
    assert not covers(cert, "fd00::2")


def test_dns_san_matches_case_insensitively(ca):
    """DNS SANs match the whole name, in any case; an IP SAN does not match a DNS name."""
    cert = server_cert(ca, sans=("etcd.example.com", "10.0.0.1"))
    assert covers(cert, "ETCD.Example.com")
    assert covers(cert, "etcd.example.com.")
    assert not covers(cert, "example.com")
    assert not covers(cert, "etcd2.example.com")


def test_wildcard_stands_for_one_leftmost_label(ca):
    """*.example.com names a.example.com, but not example.com nor a.b.example.com."""
    cert = server_cert(ca, sans=("*.example.com",))
    assert covers(cert, "a.example.com")
    assert covers(cert, "A.EXAMPLE.COM")
    assert not covers(cert, "example.com")
    assert not covers(cert, "a.b.example.com")
    assert not covers(cert, "a.example.org")


def test_common_name_counts_only_without_sans(ca):
    """The CN names the host only when the cert has no SAN extension."""
    assert covers(server_cert(ca, "etcd-1"), "etcd-1")
    assert server_names(server_cert(ca, "etcd-1")) == ["etcd-1"]
    assert covers(server_cert(ca, "10.0.0.1"), "10.0.0.1")
    assert not covers(server_cert(ca, "etcd-1", sans=("etcd-2",)), "etcd-1")


def test_server_names_lists_dns_then_ip(ca):
    """server_names gives the DNS names first, then the addresses, as text."""
    cert = server_cert(ca, sans=("127.0.0.1", "::1", "localhost"))
    assert server_names(cert) == ["localhost", "127.0.0.1", "::1"]


def test_real_etcd_certificate_names_its_endpoint(etcd_server, pki):
    """The test etcd's cert, fetched over mutual TLS, names 127.0.0.1 and localhost."""
    cert = certs.fetch_server_cert(etcd_server.endpoint, pki.client, 10)
    assert server_names(cert) == ["localhost", "127.0.0.1", "::1"]
    assert covers(cert, "127.0.0.1")
    assert not covers(cert, "10.9.9.9")
    assert certs.server_name_warning(etcd_server.endpoint, pki.client, 10) is None
    localhost = etcd_server.endpoint.replace("127.0.0.1", "localhost")
    assert certs.server_name_warning(localhost, pki.client, 10) is None


def test_unnamed_host_is_a_warning(etcd_server, pki, monkeypatch):
    """An endpoint whose host the cert does not name: one line with the names it does have."""
    cert = certs.fetch_server_cert(etcd_server.endpoint, pki.client, 10)
    monkeypatch.setattr(certs, "fetch_server_cert", lambda *args: cert)  # 10.9.9.9 is nowhere
    assert certs.server_name_warning("https://10.9.9.9:2379", pki.client, 10) == (
        "https://10.9.9.9:2379: the server certificate does not name 10.9.9.9 "
        "(it names: localhost, 127.0.0.1, ::1)")


def test_fetch_trusts_only_the_given_ca(etcd_server, pki, tmp_path, other_ca):
    """A CA file that did not sign the server's cert fails the handshake."""
    write_pem(str(tmp_path / "other-ca.pem"), other_ca[0])
    tls = TlsFiles(str(tmp_path / "other-ca.pem"), pki.client.cert, pki.client.key)
    with pytest.raises(ssl.SSLCertVerificationError):
        certs.fetch_server_cert(etcd_server.endpoint, tls, 10)


def test_fetch_from_closed_port_raises_oserror(pki):
    """Nothing listening: OSError, for the caller to report."""
    with pytest.raises(ConnectionRefusedError):
        certs.fetch_server_cert(f"https://127.0.0.1:{free_port()}", pki.client, 10)


def test_plain_http_has_no_server_name_to_check(pki):
    """An http endpoint presents no certificate: no warning, and fetching is a usage error."""
    assert certs.server_name_warning("http://127.0.0.1:1", pki.client, 10) is None
    with pytest.raises(ValueError, match="not an https"):
        certs.fetch_server_cert("http://127.0.0.1:1", pki.client, 10)


# -- files that are not regular ------------------------------------------------------------------

@pytest.mark.parametrize("field", ["ca", "cert", "key"])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
async def test_fifo_or_device_is_one_problem_at_once(tmp_path, ca, field, kind):
    """A FIFO (no writer) or /dev/zero for any file is one problem, found without blocking on
    the FIFO or reading the device without end."""
    tls = client_set(tmp_path, ca)
    path = getattr(tls, field)
    os.remove(path)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink("/dev/zero", path)
    with trio.fail_after(10):
        report = await trio.to_thread.run_sync(check, tls, abandon_on_cancel=True)
    what = "a FIFO" if kind == "fifo" else "a character device"
    assert report.problems == (f"{path}: cannot read: not a regular file but {what}",)


def test_oversized_file_is_one_problem(tmp_path, ca):
    """A PEM file over 1 MiB is refused unread."""
    tls = client_set(tmp_path, ca)
    with open(tls.ca, "ab") as f:
        f.write(b"#" * PEM_LIMIT)
    assert check(tls).problems == (f"{tls.ca}: cannot read: larger than {PEM_LIMIT} bytes",)


def test_paths_with_control_characters_are_shown_escaped(tmp_path, ca):
    """A path holding a newline or an escape is shown as repr(): every finding stays one line."""
    tls = client_set(tmp_path, ca)
    odd = str(tmp_path / "key\nrrwatch: forged\x1b[2J.pem")
    os.rename(tls.key, odd)
    os.chmod(odd, 0o644)
    report = check(TlsFiles(tls.ca, tls.cert, odd))
    assert (report.problems, report.warnings) == ((), (
        f"{odd!r}: private key is readable by group or others (mode 0644); chmod 600 it",))
    missing = odd + ".gone"
    assert check(TlsFiles(tls.ca, tls.cert, missing)).problems == (
        f"{missing!r}: cannot read: No such file or directory",)

"""`rrwatch check`: is the config right, and can rrwatch do its work in etcd with it?

It changes nothing. Permissions are asked of etcd itself: a read of each range rrwatch reads,
and a transaction that writes and deletes where rrwatch does, behind a condition that can never
hold. etcd checks the permissions of every operation in a transaction before it evaluates the
condition, so a refusal shows and nothing is ever written.

With auth on, etcd's JSON gateway (which rrwatch speaks to) ignores client certificate names, so
rrwatch logs in with a user name and password; and it refuses outright a client certificate
that has a CommonName. `check` says which of these is wrong, in one line, and names each grant
the user's roles lack (the roles are in docs/reference.md).
"""

from __future__ import annotations

import ssl

import attrs
import trio

from rrwatch import certs
from rrwatch.config import Config
from rrwatch.core import calico
from rrwatch.errors import ExitStatus
from rrwatch.etcd import (
    CertificateRefused,
    Code,
    Etcd,
    EtcdError,
    LoginRefused,
    delete,
    mod_is,
    prefix_end,
    put,
)

_PROBE = "rrwatch-permission-check.invalid"  # a name no Calico object has: never written anyway


@attrs.frozen
class Grant:
    prefix: str
    write: bool
    why: str


def grants(config: Config) -> list[Grant]:
    """What rrwatch reads and writes in etcd with this config."""
    return [
        Grant(calico.NODES, True, "reads nodes; writes RR cluster IDs and labels"),
        Grant(calico.RESOURCES + "bgp", False, "reads BGPPeers and the BGPConfiguration"),
        Grant(calico.PEERS + calico.OWNED_PEER_PREFIX, True, "writes the BGPPeers it owns"),
        Grant("/calico/bgp/v1/rr_v", bool(config.register_ip),
              "reads RR host registrations" + ("; registers this host" if config.register_ip
                                               else "")),
        Grant(config.prefix, True, "the leader key, session reports; reads the policy object"),
    ]


def check(config: Config) -> int:
    """Print one line per finding; the exit status."""
    status = 0

    def say(level: str, text: str) -> None:
        print(f"{level:<4} {text}")

    say("ok", f"config: {config.file or 'environment and flags only'}")
    if config.tls is None:
        say("warn", "TLS: none; etcd traffic is plain HTTP and unauthenticated")
    else:
        report = certs.check(config.tls)
        for problem in report.problems:
            say("FAIL", f"TLS: {problem}")
            status = status or ExitStatus.CONFIG
        for caution in report.warnings:
            say("warn", f"TLS: {caution}")
        if report.ok:
            say("ok", f"TLS: {config.tls.cert} valid until {report.not_after:%Y-%m-%d} UTC"
                      f" ({report.days_left:.0f} days)")
        if config.etcd_auth is not None and (names := certs.common_names(config.tls.cert)):
            say("FAIL", f"TLS: {config.tls.cert} has a CommonName ({', '.join(names)}), which"
                        " etcd's gateway refuses while auth is on: use a client certificate"
                        " without one (docs/howto-tls-etcd.md)")
            status = ExitStatus.CONFIG
    if status:
        return status
    reachable = []
    for endpoint in config.etcd_endpoints:
        warning: str | None = None
        try:  # before connecting: a certificate that does not name the host fails that
            if config.tls is not None:
                warning = certs.server_name_warning(endpoint, config.tls, config.etcd_timeout)
        except (OSError, ssl.SSLError, ValueError):
            warning = None  # unreachable: the probe says so
        if warning:
            say("warn", f"TLS: {warning}")
        try:
            revision = trio.run(_probe, endpoint, config)
        except CertificateRefused as e:
            say("FAIL", str(e))
            return e.status
        except LoginRefused as e:
            say("FAIL", f"{endpoint}: etcd refused the login: {e}")
            return ExitStatus.NOPERM
        except EtcdError as e:
            # Without a user, a read refused as an invalid argument: "user name is empty".
            if config.etcd_auth is None and (e.needs_user or e.code == Code.INVALID_ARGUMENT):
                say("FAIL", f"{endpoint}: etcd has auth enabled: set ETCD_USERNAME and"
                            " ETCD_PASSWORD (or a password file) for a user with the role in"
                            " docs/reference.md")
                return ExitStatus.NOPERM
            if e.denied:
                say("FAIL", f"permission: read {config.prefix} (the probe, and rrwatch's own"
                            f" keys): {e}")
                return ExitStatus.NOPERM
            say("FAIL", f"{endpoint}: cannot be reached: {e}")
            continue
        except (OSError, ssl.SSLError) as e:
            say("FAIL", f"{endpoint}: cannot be reached: {e}")
            continue
        say("ok", f"{endpoint}: etcd serves, revision {revision}")
        reachable.append(endpoint)
    if not reachable:
        return ExitStatus.UNAVAILABLE
    try:
        refused = trio.run(_permissions, reachable[0], config)
    except EtcdError as e:
        say("FAIL", f"{reachable[0]}: {e}")
        return ExitStatus.UNAVAILABLE
    for grant, error in refused:
        say("FAIL", f"permission: {'readwrite' if grant.write else 'read'} {grant.prefix}"
                    f" ({grant.why}): {error}")
    if not refused:
        say("ok", "permissions: " + ", ".join(
            f"{'readwrite' if g.write else 'read'} {g.prefix}" for g in grants(config)))
    if len(reachable) < len(config.etcd_endpoints):
        status = ExitStatus.UNAVAILABLE
    return ExitStatus.NOPERM if refused else status


async def _probe(endpoint: str, config: Config) -> int:
    etcd = Etcd.of(config, [endpoint])
    try:
        return await etcd.probe()
    finally:
        await etcd.close()


async def _permissions(endpoint: str, config: Config) -> list[tuple[Grant, str]]:
    """The grants etcd refuses, with its reason."""
    etcd = Etcd.of(config, [endpoint])
    refused = []
    try:
        for grant in grants(config):
            start = grant.prefix.encode()
            try:
                await etcd.range(start, prefix_end(start), limit=1, keys_only=True)
                if grant.write:
                    key = grant.prefix + _PROBE
                    # Never true: no key has mod revision -1. Both writes are still checked
                    # (on two keys: etcd refuses a transaction that writes one key twice).
                    await etcd.txn([mod_is(key, -1)], [put(key, b""), delete(key + "-")])
            except EtcdError as e:
                if not (e.denied or e.needs_user):
                    raise
                refused.append((grant, str(e)))
        try:
            lease = await etcd.grant(5)
            await etcd.revoke(lease)
        except EtcdError as e:
            if not (e.denied or e.needs_user):
                raise
            refused.append((Grant("(leases)", True, "leader election"), str(e)))
    finally:
        await etcd.close()
    return refused

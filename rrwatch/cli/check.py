"""`rrwatch check`: is the config right, and can rrwatch do its work in etcd with it?

It changes nothing. Permissions are asked of etcd itself: a read of each range rrwatch reads,
and a transaction that writes and deletes where rrwatch does, behind a condition that can never
hold. etcd checks the permissions of every operation in a transaction before it evaluates the
condition, so a refusal shows and nothing is ever written.

etcd with auth enabled refuses rrwatch altogether: rrwatch speaks to etcd's JSON gateway, where
etcd ignores the client certificate's common name (it says so in its reply), and rrwatch has no
user name and password to give instead. `check` says that in one line.
"""

from __future__ import annotations

import ssl

import attrs
import trio

from rrwatch import certs
from rrwatch.config import Config
from rrwatch.core import calico
from rrwatch.errors import ExitStatus
from rrwatch.etcd import Code, Etcd, EtcdError, delete, mod_is, prefix_end, put

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
        Grant(calico.PEERS, True, "writes the BGPPeers it owns"),
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
        except EtcdError as e:
            # A well-formed read refused as an invalid argument: "user name is empty".
            if e.needs_user or e.code == Code.INVALID_ARGUMENT:
                say("FAIL", f"{endpoint}: etcd has auth enabled, and ignores client certificate"
                            " names on its JSON gateway, which rrwatch uses: rrwatch needs an"
                            " etcd that authorizes by client certificate alone")
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
    etcd = Etcd([endpoint], config.tls, timeout=config.etcd_timeout)
    try:
        return await etcd.probe()
    finally:
        await etcd.close()


async def _permissions(endpoint: str, config: Config) -> list[tuple[Grant, str]]:
    """The grants etcd refuses, with its reason."""
    etcd = Etcd([endpoint], config.tls, timeout=config.etcd_timeout)
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

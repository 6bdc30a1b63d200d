"""`rrwatch report` against real speakers: an RR node running calico-node's BIRD 1.6, with
Calico's protocol names, a BIRD 2 client, and a neighbour that never answers; the report lands in
a real etcd, follows BIRD through a restart, and goes with the reporter's lease."""

from __future__ import annotations

import os
import signal

import trio

from rrwatch.core.reports import Report, parse_report
from rrwatch.etcd import Etcd
from tests import support
from tests.bgp.lab import Lab, Speaker

KEY = "/rrwatch/v1/sessions/rr-1"
GHOST = "10.99.0.250"  # on the lab's network, but no speaker has it

def calico_rr(rr: Speaker, neighbours: list[str]) -> str:
    """BIRD 1.6 as calico-node's confd writes it for an RR (bird.cfg.template): a template,
    and a `Node_<ip>` protocol per client with `rr client` and the cluster ID."""
    protocols = "".join(f"""
protocol bgp Node_{ip.replace('.', '_')} from bgp_template {{
  neighbor {ip} as 64512;
  source address {rr.ipv4};
  rr client;
  rr cluster id 224.0.0.1;
}}
""" for ip in neighbours)
    return f"""router id {rr.ipv4};
protocol device {{ scan time 2; }}
template bgp bgp_template {{
  local as 64512;
  multihop;
  gateway recursive;
  import all;
  export all;
  add paths on;
  graceful restart;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 2;
}}
{protocols}"""


def bird2_client(client: Speaker, rr: Speaker) -> str:
    return f"""router id {client.ipv4};
protocol device {{}}
protocol bgp to_rr {{
  local {client.ipv4} as 64512;
  neighbor {rr.ipv4} as 64512;
  connect retry time 1;
  ipv4 {{ import all; export all; add paths on; }};
}}
"""


async def report(etcd: Etcd) -> tuple[Report, int] | None:
    kv = await etcd.get(KEY)
    return None if kv is None else (parse_report(KEY, kv.value), kv.mod_revision)


async def test_reports_follow_bird_and_go_with_the_lease(lab: Lab, etcd, start_daemon):
    rr, client = lab.add("rr-1"), lab.add("client")
    bird16 = os.path.join(lab.bird1, "bird")
    rr.start(calico_rr(rr, [client.ipv4, GHOST]), bird=bird16)
    client.start(bird2_client(client, rr))
    reporter = start_daemon({"RRWATCH_LEASE_TTL": "3"}, "--node", "rr-1", "--socket",
                            rr.socket_path, "--socket", "/nonexistent/bird6.ctl",
                            "--report-interval", "0.2", command="report")
    seen: list[tuple[Report, int] | None] = [None]

    async def established() -> bool:
        seen[0] = await report(etcd)
        session = seen[0] and seen[0][0].sessions.get(client.ipv4)
        return session is not None and session.established

    await wait_for(established)
    assert seen[0] is not None
    first, _ = seen[0]
    assert first.ok and first.unreachable.keys() == {"/nonexistent/bird6.ctl"}
    assert first.sessions.keys() == {client.ipv4, GHOST}
    up = first.sessions[client.ipv4]
    assert up.protocol == "Node_" + client.ipv4.replace(".", "_")
    assert not first.sessions[GHOST].established

    # Read five times a second, the report is written only when it changes: no two versions of
    # the key in etcd's history are the same.
    await trio.sleep(2)
    assert len(versions := await history(etcd)) >= 1
    assert all(a != b for a, b in zip(versions, versions[1:], strict=False)), versions

    rr.kill()  # BIRD gone: the report says so, and keeps no session
    await wait_for(lambda: _ok(etcd, False))
    rr.start(bird=bird16)
    await wait_for(established)
    assert seen[0] is not None
    assert seen[0][0].sessions[client.ipv4].since >= up.since

    reporter.signal(signal.SIGTERM)  # stopping revokes the lease: the report goes at once
    assert reporter.proc.wait(timeout=10) == 0
    assert await report(etcd) is None

    killed = start_daemon({"RRWATCH_LEASE_TTL": "3"}, "--node", "rr-1", "--socket",
                          rr.socket_path, "--report-interval", "0.2", command="report")
    await wait_for(established)
    killed.signal(signal.SIGKILL)  # no revoke: the report goes when its lease expires
    await wait_for(lambda: _gone(etcd))
    assert "Traceback" not in reporter.log() + killed.log()


async def history(etcd: Etcd) -> list[bytes]:
    """Every value the key has had since it was created, oldest first."""
    kv = await etcd.get(KEY)
    assert kv is not None
    values = []
    for revision in range(kv.create_revision, kv.mod_revision + 1):
        _, kvs, _ = await etcd.range(KEY.encode(), KEY.encode() + b"\0", revision=revision)
        if kvs and kvs[0].mod_revision == revision:
            values.append(kvs[0].value)
    return values


async def wait_for(condition) -> None:
    with trio.fail_after(support.CONVERGE):
        while not await condition():
            await trio.sleep(0.1)


async def _ok(etcd: Etcd, ok: bool) -> bool:
    got = await report(etcd)
    return got is not None and got[0].ok == ok and (ok or not got[0].sessions)


async def _gone(etcd: Etcd) -> bool:
    return await report(etcd) is None

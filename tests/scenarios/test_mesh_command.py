"""`rrwatch mesh off` and `mesh on` against a real etcd: off is refused, naming the client,
while one of its RR sessions is reported down; once every client's sessions are up it turns the
mesh off with a guarded write that keeps every other byte; on turns it back."""

from __future__ import annotations

import datetime
import json

from rrwatch.core import calico
from rrwatch.core.reports import Report, Session, dumps
from rrwatch.testing import simulate
from tests.support import read_cluster, rr_names, wait_until

SESSIONS = "/rrwatch/v1/sessions/"
AT = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC)
# As calicoctl leaves it: fields rrwatch does not own, before and after the one it sets.
CONFIG = (b'{"kind":"BGPConfiguration","apiVersion":"projectcalico.org/v3","metadata":{"name":'
          b'"default","uid":"5d2e"},"spec":{"logSeverityScreen":"Info","nodeToNodeMeshEnabled":'
          b'true,"asNumber":64512,"listenPort":179}}')


def addresses(data: dict[str, bytes]) -> dict[str, list[str]]:
    out = {}
    for key, value in data.items():
        if key.startswith(calico.NODES):
            node = json.loads(value)
            bgp = node["spec"]["bgp"]
            out[node["metadata"]["name"]] = [bgp[f].split("/")[0] for f in
                                             ("ipv4Address", "ipv6Address") if f in bgp]
    return out


def report(rr: str, nodes: dict[str, list[str]], down: str | None = None) -> bytes:
    """`rr`'s sessions with every other node, Established but for `down`'s."""
    return dumps(Report(True, {address: Session("Active" if name == down else "Established", AT)
                               for name, both in nodes.items() if name != rr
                               for address in both}))


async def test_mesh_off_waits_for_every_clients_rr_sessions(etcd, start_daemon, rrwatch):
    await simulate.put_all(etcd, {**simulate.nodes("a", range(5)), calico.BGP_CONFIG: CONFIG})
    daemon = start_daemon({"ROUTE_REFLECTOR_MIN": "2", "ROUTE_REFLECTOR_MAX": "2"})
    # Converged: a leader's plan has found nothing to write (pending_changes is 0 before its
    # first plan too, so that alone could be read before any RR is written).
    await wait_until(lambda: (m := daemon.metrics()).get("rrwatch_leader") == 1
                     and m.get("rrwatch_last_reconcile_timestamp_seconds", 0) > 0)
    _, data = await read_cluster(etcd)
    rrs, nodes = sorted(rr_names(data)), addresses(data)
    assert len(rrs) == 2
    client = sorted(set(nodes) - set(rrs))[0]
    await simulate.put_all(etcd, {SESSIONS + rrs[0]: report(rrs[0], nodes, down=client),
                                  SESSIONS + rrs[1]: report(rrs[1], nodes)})

    refused = rrwatch("mesh", "off")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"  {client} (IPv4): 1 of 2 RR sessions Established ({rrs[0]}: Active)" \
        in refused.stderr.splitlines()
    assert all(client in line for line in refused.stderr.splitlines()[1:]), refused.stderr
    assert ": 1 client lacks Established sessions to 2 RRs" in refused.stderr  # not per family
    assert rrwatch("mesh", "off", "--rrs", "1").returncode == 0  # one RR is enough for it
    assert (await etcd.get(calico.BGP_CONFIG)).value == CONFIG.replace(
        b'"nodeToNodeMeshEnabled":true', b'"nodeToNodeMeshEnabled":false')
    assert rrwatch("mesh", "on").returncode == 0
    assert (await etcd.get(calico.BGP_CONFIG)).value == CONFIG

    await simulate.put_all(etcd, {SESSIONS + rrs[0]: report(rrs[0], nodes)})
    assert rrwatch("mesh", "off", "--dry-run").returncode == 0
    assert (await etcd.get(calico.BGP_CONFIG)).value == CONFIG
    done = rrwatch("mesh", "off")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("the node-to-node mesh is off (revision ")
    assert (await etcd.get(calico.BGP_CONFIG)).value == CONFIG.replace(
        b'"nodeToNodeMeshEnabled":true', b'"nodeToNodeMeshEnabled":false')
    assert rrwatch("mesh", "off").stdout == "the node-to-node mesh is off already\n"

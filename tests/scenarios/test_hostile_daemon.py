"""Hostile records (issue 20) against the real TLS etcd, the real daemon and the real CLI."""

from __future__ import annotations

import json

import trio

from rrwatch.core import calico, edits
from rrwatch.testing import simulate
from tests.support import (
    CONVERGE,
    CRASHERS,
    OWNER,
    ZONES,
    converged,
    node_value,
    read_cluster,
    rr_names,
    seed,
    wait_until,
)

POLICY_KEY = "/rrwatch/v1/policy"
BGP_CONFIG = json.dumps({"kind": "BGPConfiguration", "apiVersion": "projectcalico.org/v3",
                         "metadata": {"name": "default"},
                         "spec": {"nodeToNodeMeshEnabled": False, "asNumber": 65001}}).encode()


def host_peers(data: dict[str, bytes]) -> dict[str, dict]:
    return {key.removeprefix(calico.PEERS): json.loads(value)["spec"]
            for key, value in data.items() if key.startswith(calico.PEERS + "rrwatch-host-")}


async def test_no_node_record_crashes_the_daemon_or_the_cli(etcd, start_daemon, rrwatch):
    """Deep JSON, a 5,000-digit number and asNumber "²" at node keys: the daemon converges the
    others, logs each key once and counts it; plan, verify, status and graph still answer."""
    await seed(etcd, per_zone=8)
    # No BGP address on the last, so that the test's own check of the mesh skips it too.
    bad = {calico.NODES + f"evil-{i}": value for i, value in enumerate(CRASHERS.values())}
    bad[calico.NODES + "evil-2"] = node_value({"asNumber": "²"})
    await simulate.put_all(etcd, bad)
    daemon = start_daemon()
    await converged(etcd)
    for key in bad:
        await daemon.wait_for_log(f"skipping {key}")
    await wait_until(lambda: daemon.metrics().get("rrwatch_bad_records_current") == len(bad))
    for command in (["plan"], ["verify"], ["status"], ["graph"]):
        result = rrwatch(*command)
        assert "Traceback" not in result.stderr, (command, result.stderr)
        assert result.returncode in (0, 1, 2), (command, result.returncode, result.stderr)
    assert daemon.proc.poll() is None


async def test_a_labelled_peer_outside_the_name_prefix_is_left_alone(etcd, start_daemon):
    """A ToR uplink copied with rrwatch's ownership label is reported, never deleted."""
    await seed(etcd, per_zone=4)
    tor = calico.PEERS + "tor-uplink"
    value = edits.dumps({"kind": "BGPPeer", "apiVersion": "projectcalico.org/v3",
                          "metadata": {"name": "tor-uplink", "labels": OWNER},
                          "spec": {"peerIP": "192.0.2.1", "asNumber": 65000}})
    await simulate.put_all(etcd, {tor: value})
    daemon = start_daemon()
    await daemon.wait_for_log("BGPPeer tor-uplink carries rrwatch's ownership label")
    await wait_until(lambda: daemon.metrics().get("rrwatch_pending_changes") == 0)
    await trio.sleep(2)  # four settle times: a break that was due would have run
    _, data = await read_cluster(etcd)
    assert data[tor] == value


async def test_registrations_that_do_not_hold_make_no_peers(etcd, start_daemon):
    """A registration whose ip is not its key's, and one of a node's address, make no BGPPeer;
    a good one beside them does."""
    nodes = simulate.nodes("a", range(4))
    await simulate.put_all(etcd, nodes)
    node_ip = json.loads(next(iter(nodes.values())))["spec"]["bgp"]["ipv4Address"].split("/")[0]
    await simulate.put_all(etcd, {
        calico.RR_V4 + "192.0.2.9": b'{"ip": "192.0.2.10"}',
        calico.RR_V4 + node_ip: json.dumps({"ip": node_ip}).encode(),
        calico.RR_V4 + "192.0.2.7": b'{"ip": "192.0.2.7"}',
    })
    daemon = start_daemon()
    await daemon.wait_for_log(f"skipping {calico.RR_V4}192.0.2.9")
    await daemon.wait_for_log(f"registration {calico.RR_V4}{node_ip} refused")

    async def peers() -> set[str]:
        return set(host_peers((await read_cluster(etcd))[1]))

    with trio.fail_after(CONVERGE):
        while await peers() != {"rrwatch-host-192-0-2-7"}:
            await trio.sleep(0.1)
    await wait_until(lambda: daemon.metrics().get("rrwatch_pending_changes") == 0)
    assert await peers() == {"rrwatch-host-192-0-2-7"}


async def test_a_hostile_policy_object_is_bounded_or_refused(etcd, start_daemon):
    """{"min":1000,"max":1000,"ratio":1} gives at most half of each zone as RRs; an object
    naming `team`, a label the nodes carry, is refused and no `team` value changes."""
    seeded = await seed(etcd, per_zone=10)
    daemon = start_daemon()
    await converged(etcd)
    await simulate.put_all(etcd, {POLICY_KEY: b'{"min": 1000, "max": 1000, "ratio": 1}'})
    with trio.fail_after(CONVERGE):
        while True:
            _, data = await read_cluster(etcd)
            if all(len(rr_names(data, zone)) == 5 for zone in ZONES):
                break
            await trio.sleep(0.1)
    await simulate.put_all(etcd, {POLICY_KEY: b'{"node_label": "team=payments"}'})
    await daemon.wait_for_log(f"skipping {POLICY_KEY}")
    assert "'team' is carried by 15 nodes rrwatch did not mark" in daemon.log()  # the non-RRs
    await wait_until(lambda: daemon.metrics().get("rrwatch_pending_changes") == 0)
    _, data = await read_cluster(etcd)
    for key, value in seeded.items():
        if key.startswith(calico.NODES):
            assert (json.loads(data[key])["metadata"]["labels"]["team"]
                    == json.loads(value)["metadata"]["labels"]["team"])


async def test_an_unreadable_bgp_configuration_changes_no_as(etcd, start_daemon):
    """With the BGPConfiguration broken, the host peers keep the last good AS and no new host
    peer is written; once it is readable again, the new host gets its peer."""
    await seed(etcd, per_zone=4)
    await simulate.put_all(etcd, {calico.BGP_CONFIG: BGP_CONFIG,
                                  calico.RR_V4 + "192.0.2.7": b'{"ip": "192.0.2.7"}'})
    daemon = start_daemon()

    async def peers() -> dict[str, dict]:
        return host_peers((await read_cluster(etcd))[1])

    with trio.fail_after(CONVERGE):
        while (await peers()).get("rrwatch-host-192-0-2-7", {}).get("asNumber") != 65001:
            await trio.sleep(0.1)
    await simulate.put_all(etcd, {calico.BGP_CONFIG: b'{"kind": "BGPConfiguration", oops'})
    await daemon.wait_for_log(f"skipping {calico.BGP_CONFIG}")
    await simulate.put_all(etcd, {calico.RR_V4 + "192.0.2.8": b'{"ip": "192.0.2.8"}'})
    await daemon.wait_for_log("the RR host peers, which carry its AS, wait until it can")
    await wait_until(lambda: daemon.metrics().get("rrwatch_pending_changes") == 0)
    assert await peers() == {"rrwatch-host-192-0-2-7": {"peerIP": "192.0.2.7", "asNumber": 65001}}
    await simulate.put_all(etcd, {calico.BGP_CONFIG: BGP_CONFIG.replace(b"65001", b"65002")})
    with trio.fail_after(CONVERGE):
        while {p.get("asNumber") for p in (await peers()).values()} != {65002} or len(
                await peers()) != 2:
            await trio.sleep(0.1)


async def test_a_leader_key_without_a_lease_does_not_stop_every_instance(etcd, start_daemon):
    """A leader key written by hand without a lease is no leader: the daemon warns, counts it,
    takes the key and converges the cluster."""
    await seed(etcd, per_zone=4)
    await simulate.put_all(etcd, {"/rrwatch/v1/leader": b"someone"})
    daemon = start_daemon()
    await daemon.wait_for_log("the leader key is held by someone without a lease")
    await converged(etcd)
    await wait_until(lambda: daemon.metrics().get("rrwatch_leader_key_takeovers_total") == 1)
    assert daemon.leading()

"""Each topology on the real etcd with the real daemon, judged by `rrwatch verify`."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import trio

from rrwatch.core import calico, edits
from rrwatch.etcd import Compacted, Etcd, EtcdError
from rrwatch.testing import simulate
from tests.support import HOSTS, MESH_OFF, ZONES, layout, seed_topology, settled


def owned_peers(data: dict[str, bytes]) -> dict[str, dict]:
    out = {}
    for key, value in data.items():
        if key.startswith(calico.PEERS):
            obj = json.loads(value)
            if obj["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == "rrwatch":
                out[obj["metadata"]["name"]] = obj["spec"]
    return out


@pytest.mark.parametrize("topology", ["simple", "zoned", "multi"])
async def test_topology_converges_and_verifies(etcd, start_daemon, daemon_env, rrwatch,
                                               topology):
    """3 zones × 12 nodes and two registered hosts: the daemon converges to the topology's
    shape, and `rrwatch verify --failures 1` finds every route reaching every node."""
    seeded = await seed_topology(etcd, per_zone=12)
    env = {**daemon_env, "ROUTE_REFLECTOR_TOPOLOGY": topology}
    daemon = start_daemon(env)
    data_revision, data = await settled(etcd, env)

    reflectors, clients = layout(data)
    assert Counter(zone for zone, _ in reflectors.values()) == {zone: 3 for zone in ZONES}
    ids = {cluster for _, cluster in reflectors.values()}
    assert "224.0.0.1" not in ids  # the registered host has it
    if topology == "simple":
        assert len(ids) == 1 and all(not named for named in clients.values())
    elif topology == "zoned":
        by_zone = {zone: {c for z, c in reflectors.values() if z == zone} for zone in ZONES}
        assert all(len(c) == 1 for c in by_zone.values())
        assert len(set.union(*by_zone.values())) == 3
    else:
        assert len(ids) == len(reflectors)
        zone_of = {cluster: zone for zone, cluster in reflectors.values()}
        for name, named in clients.items():
            assert len(named) == 3 and named <= ids, name
            assert len({zone_of[c] for c in named}) >= 2, name

    peers = owned_peers(data)
    assert peers["rrwatch-host-10-200-0-1"] == {"peerIP": "10.200.0.1", "asNumber": 65010}
    assert peers["rrwatch-host-fd00-200--1"] == {"peerIP": "[fd00:200::1]:179",
                                                 "asNumber": 65010}
    assert len(peers) <= len(reflectors) + len(HOSTS) + len(ZONES) + 2
    for key in HOSTS:
        assert data[key] == seeded[key]

    result = rrwatch("verify", "--failures", "1", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every node's routes reach every other node" in result.stdout
    result = rrwatch("plan", "--detailed-exitcode", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    result = rrwatch("status", "--output", "json", env=env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert {z["zone"]: {rr["name"] for rr in z["reflectors"]} for z in status["zones"]} == {
        zone: {name for name, (z, _) in reflectors.items() if z == zone} for zone in ZONES}
    assert {h["ip"] for h in status["hosts"]} == {"10.200.0.1", "fd00:200::1"}
    assert status["leader"] and status["revision"] >= data_revision
    assert "Traceback" not in daemon.log()


async def test_verify_fails_a_hand_made_calico_2735_layout(etcd, rrwatch):
    """Calico issue 2735 by hand: two RR hosts on one cluster ID, node-1 and node-2 peered with
    the first only, node-3 and node-4 with the second. `rrwatch verify` exits 1 and names
    exactly the pairs across the halves: each host drops the other's reflections."""
    items = {calico.BGP_CONFIG: MESH_OFF}
    for index, name in enumerate(["node-1", "node-2", "node-3", "node-4"]):
        half = "one" if index < 2 else "two"
        value = json.loads(simulate.node_value(name, "a", index, labels={"half": half}))
        del value["spec"]["bgp"]["ipv6Address"]  # IPv4 only, like the cluster
        items[calico.NODES + name] = edits.dumps(value)
    for half, ip in (("one", "10.200.0.1"), ("two", "10.200.0.2")):
        items[calico.RR_V4 + ip] = json.dumps({"ip": ip, "cluster_id": "224.0.0.1"}).encode()
        items[calico.PEERS + f"half-{half}"] = edits.dumps({
            "kind": "BGPPeer", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": f"half-{half}"},
            "spec": {"nodeSelector": f"half == '{half}'", "peerIP": ip, "asNumber": 65010}})
    await simulate.put_all(etcd, items)

    result = rrwatch("verify")
    assert result.returncode == 1, result.stdout + result.stderr
    pairs = {(a, b) for a in ("node-1", "node-2") for b in ("node-3", "node-4")}
    pairs |= {(b, a) for a, b in pairs}
    names = ["node-1", "node-2", "node-3", "node-4"]
    named = {(a, b) for a in names for b in names if f"{a} -> {b}" in result.stdout}
    assert named == pairs

    # The same layout with a cluster ID per host is sound.
    for ip, cluster in (("10.200.0.1", "224.0.0.1"), ("10.200.0.2", "224.0.0.2")):
        await simulate.put_all(etcd, {calico.RR_V4 + ip: json.dumps(
            {"ip": ip, "cluster_id": cluster}).encode()})
    result = rrwatch("verify")
    assert result.returncode == 0, result.stdout + result.stderr


async def written_keys(etcd: Etcd, start: int, end: int) -> list[str]:
    """The keys written in revisions (start, end], in order."""
    keys: list[str] = []
    if end <= start:
        return keys
    async with etcd.watch("/calico/", start + 1) as stream:
        async for message in stream:
            if isinstance(message, (Compacted, EtcdError)):
                raise message
            keys += [event.key for event in message.events]
            if message.events and message.events[-1].revision >= end:
                return keys
    return keys


async def test_a_first_start_in_multi_writes_client_labels_in_batches(
        etcd, start_daemon, daemon_env):
    """1,002 nodes in `multi` with no labels yet: every client needs a write, and they go to
    etcd up to 127 to a transaction (200 per step), not one transaction each."""
    await seed_topology(etcd, per_zone=334)
    env = {**daemon_env, "ROUTE_REFLECTOR_TOPOLOGY": "multi"}
    daemon = start_daemon(env)
    _, data = await settled(etcd, env)
    _, clients = layout(data)
    _, kvs = await etcd.snapshot([calico.NODES])
    revisions = {kv.mod_revision for kv in kvs if kv.key[len(calico.NODES):] in clients}
    assert len(clients) > 900 and all(len(rrs) == 3 for rrs in clients.values())
    # Every node is written once (the RRs too); a step of 200 node writes is 2 transactions.
    assert len(revisions) <= 2 * math.ceil(len(kvs) / 200)
    assert "Traceback" not in daemon.log()


async def test_a_node_added_to_a_1000_node_multi_cluster_writes_only_that_node(
        etcd, start_daemon, daemon_env):
    """1,002 nodes in `multi`: one more node costs exactly one write, to that node."""
    await seed_topology(etcd, per_zone=334)
    env = {**daemon_env, "ROUTE_REFLECTOR_TOPOLOGY": "multi"}
    daemon = start_daemon(env)
    before, _ = await settled(etcd, env)

    name = simulate.node_name("b", 5000)
    await simulate.put_all(etcd, {calico.NODES + name: simulate.node_value(name, "b", 5000)})
    after, data = await settled(etcd, env)
    await trio.sleep(1)  # twice the settle time: a break phase would have run by now
    assert (await etcd.snapshot(["/calico/"]))[0] == after

    keys = await written_keys(etcd, before, after)
    assert keys == [calico.NODES + name, calico.NODES + name]  # ours, then rrwatch's
    _, clients = layout(data)
    assert len(clients[name]) == 3
    assert "Traceback" not in daemon.log()


async def test_verify_fails_on_a_peer_ip_without_as_number_and_names_the_nodes(etcd, rrwatch):
    """A foreign BGPPeer to a top-of-rack router without asNumber: confd writes `as 0`, which
    BIRD refuses, so BGP is down on the node it applies to. `rrwatch verify` says so, as fatal,
    and exits 1; with the AS set, the same records verify."""
    items = {calico.BGP_CONFIG: MESH_OFF}
    items.update(simulate.nodes("a", range(3)))
    items[calico.PEERS + "tor"] = edits.new_peer("tor", {"node": "node-a-00001",
                                                        "peerIP": "10.99.0.1"})
    await simulate.put_all(etcd, items)
    result = rrwatch("verify")
    assert result.returncode == 1, result.stdout + result.stderr
    fatal = [line.strip() for line in result.stdout.splitlines() if "fatal:" in line]
    assert fatal == ["fatal: BGPPeer tor: peerIP 10.99.0.1 without asNumber: confd writes"
                     " `as 0`, which BIRD refuses, so BGP is down on node-a-00001"]
    await simulate.put_all(etcd, {calico.PEERS + "tor": edits.new_peer(
        "tor", {"node": "node-a-00001", "peerIP": "10.99.0.1", "asNumber": 65001})})
    assert "fatal:" not in rrwatch("verify").stdout

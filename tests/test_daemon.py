"""The real daemon against a real TLS etcd: convergence, steady state, scaling, foreign data."""

from __future__ import annotations

import json
import math

import trio

from rrwatch import calico, simulate
from rrwatch.etcd import Compacted, Etcd, EtcdError, put

ZONES = ("a", "b", "c")
RR_LABEL = "calico-route-reflector"
SHARED_ID = "224.0.0.1"
OWNER = {"app.kubernetes.io/managed-by": "rrwatch"}
CONVERGE = 30  # seconds a convergence may take before the test fails


def expected_rrs(eligible: int) -> int:
    """The seed defaults written out independently: ratio 0.005, min 3, max 25."""
    return min(eligible, max(3, min(25, math.ceil(eligible * 0.005))))


async def read_cluster(etcd: Etcd) -> tuple[int, dict[str, bytes]]:
    revision, kvs = await etcd.snapshot(["/calico/"])
    return revision, {kv.key: kv.value for kv in kvs}


def strip_owned(value: bytes) -> dict:
    """A node as a dict, without the fields rrwatch owns."""
    obj = json.loads(value)
    labels = obj["metadata"].get("labels", {})
    labels.pop(RR_LABEL, None)
    if not labels:
        obj["metadata"].pop("labels", None)
    obj["spec"]["bgp"].pop("routeReflectorClusterID", None)
    return obj


def mesh_problems(data: dict[str, bytes]) -> list[str]:
    """Why the etcd contents are not the simple topology the seed defaults ask for."""
    problems = []
    per_zone: dict[str, list[str]] = {}
    rrs: dict[str, list[str]] = {}
    for key, value in data.items():
        if not key.startswith(calico.NODES):
            continue
        try:
            obj = json.loads(value)
            bgp = obj["spec"]["bgp"]
        except (ValueError, KeyError, TypeError):
            continue  # a bad record: not part of the mesh
        name = obj["metadata"]["name"]
        labels = obj["metadata"].get("labels", {})
        zone = labels.get(simulate.ZONE_LABEL, "")
        cluster = bgp.get("routeReflectorClusterID")
        eligible = bool(bgp.get("ipv4Address") or bgp.get("ipv6Address"))
        if eligible:
            per_zone.setdefault(zone, []).append(name)
        if cluster is not None or RR_LABEL in labels:
            if not eligible or cluster != SHARED_ID or labels.get(RR_LABEL) != "":
                problems.append(f"{name}: half-made or ineligible RR")
            rrs.setdefault(zone, []).append(name)
    for zone, names in per_zone.items():
        want = expected_rrs(len(names))
        if len(rrs.get(zone, ())) != want:
            problems.append(f"zone {zone}: {len(rrs.get(zone, ()))} RRs, want {want}")
    rr = f"{RR_LABEL} == ''"
    want_peers = {
        "rrwatch-rr-mesh": {"nodeSelector": rr, "peerSelector": rr},
        "rrwatch-rr-clients": {"nodeSelector": f"{RR_LABEL} != ''", "peerSelector": rr},
    }
    owned = {}
    for key, value in data.items():
        if key.startswith(calico.PEERS):
            obj = json.loads(value)
            if obj["metadata"].get("labels") == OWNER:
                owned[obj["metadata"]["name"]] = obj["spec"]
    if owned != want_peers:
        problems.append(f"owned BGPPeers {owned} != {want_peers}")
    return problems


async def converged(etcd: Etcd) -> tuple[int, dict[str, bytes]]:
    """Wait until etcd holds the expected mesh; its revision and contents."""
    problems: list[str] = []
    try:
        with trio.fail_after(CONVERGE):
            while True:
                revision, data = await read_cluster(etcd)
                problems = mesh_problems(data)
                if not problems:
                    return revision, data
                await trio.sleep(0.1)
    except trio.TooSlowError:
        raise AssertionError(f"no convergence: {problems}") from None


def rr_names(data: dict[str, bytes], zone: str | None = None) -> set[str]:
    names = set()
    for key, value in data.items():
        if key.startswith(calico.NODES) and b"routeReflectorClusterID" in value:
            obj = json.loads(value)
            if zone is None or obj["metadata"]["labels"].get(simulate.ZONE_LABEL) == zone:
                names.add(obj["metadata"]["name"])
    return names


FOREIGN_PEER = calico.PEERS + "peer-with-tor"
FOREIGN_PEER_VALUE = (
    b'{"kind":"BGPPeer","apiVersion":"projectcalico.org/v3","metadata":{"name":"peer-with-tor",'
    b'"uid":"9b1f","creationTimestamp":"2024-05-01T12:00:00Z"},"spec":{"peerIP":"10.255.0.1",'
    b'"asNumber":65001}}'
)


async def seed(etcd: Etcd, per_zone: int = 40) -> dict[str, bytes]:
    items = {}
    for zone in ZONES:
        items.update(simulate.nodes(zone, range(per_zone)))
    items[FOREIGN_PEER] = FOREIGN_PEER_VALUE
    await simulate.put_all(etcd, items)
    return items


async def test_converges_and_keeps_foreign_bytes(etcd, start_daemon):
    """3 zones × 40 nodes converge to the expected RRs and peers; nothing else changes."""
    seeded = await seed(etcd)
    bad = {
        calico.NODES + "garbage": b"{not json",
        calico.NODES + "no-bgp": calico.dumps(
            {"kind": "Node", "apiVersion": "projectcalico.org/v3",
             "metadata": {"name": "no-bgp"}, "spec": {}}),
    }
    await simulate.put_all(etcd, bad)
    daemon = start_daemon()
    with trio.fail_after(CONVERGE):
        _, data = await converged(etcd)
    rrs = rr_names(data)
    for key, value in {**seeded, **bad}.items():
        if key.removeprefix(calico.NODES) in rrs:
            assert strip_owned(data[key]) == strip_owned(value), key
            assert json.loads(data[key])["metadata"]["labels"][RR_LABEL] == ""
        else:
            assert data[key] == value, f"{key} changed"
    for key in bad:
        await daemon.wait_for_log(f"skipping {key}")
    assert "Traceback" not in daemon.log()


async def test_steady_state_writes_nothing_even_after_restart(etcd, start_daemon):
    """Once converged the revision stays put for 5 s, and a restarted daemon writes nothing."""
    await seed(etcd)
    first = start_daemon()
    with trio.fail_after(CONVERGE + 20):
        revision, _ = await converged(etcd)
        await trio.sleep(5)
        assert (await read_cluster(etcd))[0] == revision
        assert first.stop() == 0
        second = start_daemon()
        await second.wait_for_log("in sync with")
        await trio.sleep(3)  # several settle times: any pending demotion would have run
        assert (await read_cluster(etcd))[0] == revision
    assert "promote" not in second.log() and "demote" not in second.log()


async def node_history(etcd: Etcd, start: int, end: int) -> list[tuple[int, str, bool]]:
    """(revision, node, is RR after) for every node write in (start, end]."""
    history = []
    async with etcd.watch(calico.NODES, start + 1) as stream:
        async for message in stream:
            if isinstance(message, (Compacted, EtcdError)):
                raise message
            for event in message.events:
                is_rr = event.value is not None and b"routeReflectorClusterID" in event.value
                history.append((event.revision, event.key[len(calico.NODES):], is_rr))
            if message.events and message.events[-1].revision >= end:
                return history
    return history


async def test_scaling_follows_the_ratio_make_before_break(etcd, start_daemon):
    """600 more nodes in one zone add an RR, removing them drops it; replacements come first."""
    await seed(etcd)
    start_daemon()
    with trio.fail_after(4 * CONVERGE):
        _, data = await converged(etcd)
        before = rr_names(data, "a")
        big = simulate.nodes("a", range(1000, 1600))
        await simulate.put_all(etcd, big)
        _, data = await converged(etcd)
        assert len(rr_names(data, "a")) == expected_rrs(640) == 4
        assert before < rr_names(data, "a")  # sticky: the old RRs stay

        await simulate.delete_all(etcd, big)
        _, data = await converged(etcd)
        assert len(rr_names(data, "a")) == 3

        # An RR loses its BGP address: a replacement is promoted before it is demoted.
        victim = sorted(rr_names(data, "b"))[0]
        key = calico.NODES + victim
        obj = json.loads(data[key])
        obj["spec"]["bgp"].pop("ipv4Address")
        obj["spec"]["bgp"].pop("ipv6Address")
        start = (await etcd.txn([], [put(key, calico.dumps(obj))])).revision
        end, data = await converged(etcd)
        assert victim not in rr_names(data)
        history = await node_history(etcd, start, end)
        promoted = [rev for rev, _, is_rr in history if is_rr]
        demoted = [rev for rev, name, is_rr in history if name == victim and not is_rr]
        assert promoted and demoted
        assert max(promoted) < min(demoted)

    _, data = await read_cluster(etcd)
    assert data[FOREIGN_PEER] == FOREIGN_PEER_VALUE
    for key, value in data.items():
        if key.startswith(calico.NODES):
            assert json.loads(value)["metadata"]["labels"]["rack"].startswith("r")


async def test_dry_run_plans_but_never_writes(etcd, start_daemon):
    """`run --dry-run` logs the promotions it would make and leaves etcd's revision alone."""
    await seed(etcd)
    revision, _ = await read_cluster(etcd)
    daemon = start_daemon({}, "--dry-run")
    with trio.fail_after(CONVERGE):
        await daemon.wait_for_log("would create BGPPeer rrwatch-rr-mesh")
    assert daemon.log().count("would promote") == 3 * expected_rrs(40)
    assert (await read_cluster(etcd))[0] == revision

"""A simulated Calico cluster in the test etcd, and independent checks of its mesh."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import trio

from rrwatch import config
from rrwatch.core import calico
from rrwatch.core.model import CLIENT_LABEL_PREFIX
from rrwatch.core.plan import Planner
from rrwatch.daemon.live import Live
from rrwatch.daemon.records import load
from rrwatch.etcd import Etcd, EtcdError
from rrwatch.testing import simulate

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
    for key in [k for k in labels if k.startswith(CLIENT_LABEL_PREFIX)]:
        del labels[key]
    if not labels:
        obj["metadata"].pop("labels", None)
    annotations = obj["metadata"].get("annotations", {})
    annotations.pop(calico.LABEL_ANNOTATION, None)
    if not annotations:
        obj["metadata"].pop("annotations", None)
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
        except (ValueError, KeyError, TypeError, RecursionError):
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
                try:
                    revision, data = await read_cluster(etcd)
                except EtcdError as e:  # etcd restarting under a fault test
                    problems = [str(e)]
                else:
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


async def settled(etcd: Etcd, env: dict[str, str]) -> tuple[int, dict[str, bytes]]:
    """Wait until a fresh plan from etcd's contents is empty; the revision and the contents."""
    settings = config.load(env)
    with trio.fail_after(2 * CONVERGE):
        while True:
            live = Live(settings)  # the policy object in etcd, if any, laid over `env`
            snapshot = await load(etcd, live.records)
            if not Planner(live.settings.policy).plan(snapshot.state)[1]:
                break
            await trio.sleep(0.2)
    revision, kvs = await etcd.snapshot(["/calico/"])
    assert revision == snapshot.revision, "etcd moved while the test read it"
    return revision, {kv.key: kv.value for kv in kvs}


async def wait_until(condition: Callable[[], object], timeout: float = CONVERGE) -> None:
    """Return once `condition()` is true; fail after `timeout` seconds."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.1)

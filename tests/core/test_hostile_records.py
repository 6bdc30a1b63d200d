"""Hostile records (issue 20): no value can crash a reader, steer the mesh or be rewritten.

Pure: the parsers, the model, the planner and the live settings, without etcd. The same
findings against the real etcd and daemon are in tests/scenarios/test_hostile_daemon.py.
"""

from __future__ import annotations

import ipaddress
import json

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrwatch.config import load
from rrwatch.config.settings import Settings, overlay
from rrwatch.core import calico, edits
from rrwatch.core.mesh import desired
from rrwatch.core.model import BgpConfig, ClusterState, Node, Peer, RRLabel
from rrwatch.core.plan import DeletePeer, Planner, PutPeer
from rrwatch.core.policy import Policy
from rrwatch.core.reachability import verify
from rrwatch.daemon.live import Live
from tests import support as s
from tests.support import CRASHERS, converge, node_value, state_of

KEY = calico.NODES + "node-1"
POLICY_KEY = "/rrwatch/v1/policy"


# -- one record never crashes anything (CRASHERS) -------------------------------------------------

@pytest.mark.parametrize("value", CRASHERS.values(), ids=CRASHERS.keys())
def test_each_crash_trigger_is_a_bad_record_and_the_node_leaves_the_model(value):
    """The three values that crashed every instance are bad records: the model drops the node
    and marks its key unreadable."""
    state = ClusterState("zone", RRLabel("rr", ""))
    calico.apply(state, KEY, node_value({"ipv4Address": "10.0.0.1"}), 1)
    with pytest.raises(calico.BadRecord) as error:
        calico.apply(state, KEY, value, 2)
    assert error.value.key == KEY
    assert "node-1" not in state.nodes and KEY in state.unreadable


PARSED_KEYS = [calico.NODES + "n1", calico.PEERS + "rrwatch-p", calico.BGP_CONFIG,
               calico.RR_V4 + "10.0.0.5", calico.RR_V6 + "fd00::5"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=30,
)


def shaped(doc: object) -> object:
    """`doc` placed where a record's fields are read, so that the parsers get past the
    envelope and meet it in every field."""
    return {"kind": "Node", "metadata": {"name": "n1", "labels": doc, "annotations": doc},
            "spec": {"bgp": doc if isinstance(doc, dict) else {"asNumber": doc,
                                                               "ipv4Address": doc}},
            "ip": doc, "cluster_id": doc}


@given(st.sampled_from(PARSED_KEYS),
       st.binary(max_size=200) | json_values.map(lambda d: json.dumps(d).encode())
       | json_values.map(lambda d: json.dumps(shaped(d)).encode()),
       st.sampled_from([0, 1, 3000, 100_000]))
def test_any_bytes_or_json_is_parsed_or_a_bad_record(key, value, depth):
    """Arbitrary bytes and arbitrary JSON, wrapped up to 100,000 deep, in any record:
    calico.apply either takes the value or raises BadRecord, never anything else."""
    if depth:
        value = b"[" * depth + value + b"]" * depth
    state = ClusterState("zone", RRLabel("rr", ""))
    try:
        calico.apply(state, key, value, 1)
    except calico.BadRecord as e:
        assert e.key == key


@given(json_values.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=100),
       st.sampled_from([0, 50_000]))
def test_any_policy_object_is_taken_or_a_bad_record(value, depth):
    """The policy object's reader, too, takes any value or calls it a bad record."""
    value = b"[" * depth + value + b"]" * depth
    live = Live(load({}))
    try:
        live.apply(ClusterState("", RRLabel("calico-route-reflector", "")), POLICY_KEY, value, 1)
    except calico.BadRecord as e:
        assert e.key == POLICY_KEY


# -- exact types and bytes -----------------------------------------------------------------------

@pytest.mark.parametrize(("bgp", "reason"), [
    ({"ipv4Address": 167772161}, "not a string"),
    ({"ipv4Address": "10.0.0.1", "routeReflectorClusterID": 3758096385}, "not a string"),
    ({"asNumber": "\u0666\u0664\u0665\u0661\u0662"}, "not an AS number"),  # Arabic-Indic
    ({"asNumber": "1" * 30}, "not an AS number"),
])
def test_types_calico_refuses_are_refused(bgp, reason):
    """A number where Calico has a string, or digits other than ASCII, are bad records."""
    with pytest.raises(calico.BadRecord) as error:
        calico.parse_node(KEY, node_value(bgp), 1)
    assert reason in error.value.reason


@pytest.mark.parametrize("value", [
    node_value({"ipv4Address": "10.0.0.1"}, x=1).replace(b'"x": 1', b'"x": 1e400'),
    node_value({"ipv4Address": "10.0.0.1"}, x=1).replace(b'"x": 1', b'"x": 1.50'),
    node_value({"ipv4Address": "10.0.0.1"}, x=1).replace(b'"x": 1', b'"x": NaN'),
    node_value({"ipv4Address": "10.0.0.1"}, x=1).replace(b'"x": 1', b'"x": 1, "x": 2'),
])
def test_values_an_edit_could_not_write_back_exactly_are_bad_records(value):
    """1e400 (it would become Infinity), 1.50 (1.5), NaN (not JSON) and a repeated key (one
    would be lost) are refused, so an edit never changes a field rrwatch does not own."""
    with pytest.raises(calico.BadRecord):
        calico.parse_node(KEY, value, 1)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_python_writes_are_kept_exactly(number):
    """A float as the encoder writes it is read, and written back, unchanged."""
    value = node_value({"ipv4Address": "10.0.0.1"}, x=number)
    assert calico.parse_node(KEY, value, 1).ipv4 == ipaddress.IPv4Address("10.0.0.1")
    assert json.loads(edits.edit_node(value, RRLabel("rr", ""), None))["metadata"]["x"] == number


# -- registrations -------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "ip"), [
    (calico.RR_V4 + "10.0.0.5", "10.0.0.6"),
    (calico.RR_V6 + "fd00:0::5", "fd00::5"),  # one address, two keys
])
def test_a_registration_must_be_its_keys_address(key, ip):
    """A registration whose ip is not its key's address, in canonical form, is a bad record."""
    with pytest.raises(calico.BadRecord, match="not the key's address"):
        calico.parse_reflector(key, json.dumps({"ip": ip}).encode(), 1)


def host_state(*nodes: Node, prefixes: str = "") -> ClusterState:
    state = ClusterState("zone", RRLabel("rr", ""), host_prefixes=tuple(
        ipaddress.ip_network(p) for p in prefixes.split(",") if p))
    for node in nodes:
        state.put_node(node)
    return state


def register(state: ClusterState, ip: str) -> str:
    key, value = edits.registration(ip)
    calico.apply(state, key, value, 1)
    return key


def test_a_registration_of_a_nodes_address_is_refused_whichever_comes_first():
    """A registration of a node's address is not in force, whether the node or the
    registration came first, and comes into force when the node lets the address go."""
    node = Node("n1", 1, {}, ipaddress.IPv4Address("10.0.0.5"))
    first = host_state(node)
    key = register(first, "10.0.0.5")
    later = host_state()
    register(later, "10.0.0.5")
    later.put_node(node)
    for state in (first, later):
        assert key not in state.reflectors and "a Calico node's address" in state.refused[key]
        assert not [p for p in desired(state, Policy()).peers if p.startswith("rrwatch-host-")]
    first.remove_node("n1")
    assert key in first.reflectors and key not in first.refused


def test_registrations_outside_the_allowed_prefixes_are_refused():
    """With an allow-list, only registrations inside it make BGPPeers; the refusal is a
    problem the reconciler logs."""
    state = host_state(prefixes="192.0.2.0/24")
    inside, outside = register(state, "192.0.2.7"), register(state, "10.0.0.5")
    assert set(state.reflectors) == {inside}
    mesh = desired(state, Policy())
    assert [n for n in mesh.peers if n.startswith("rrwatch-host-")] == ["rrwatch-host-192-0-2-7"]
    assert any(outside in p and "allowed RR host prefixes" in p for p in mesh.problems)


# -- the policy object is privileged input -------------------------------------------------------

def zone_nodes(zone: str, count: int, **labels: str) -> list[Node]:
    return [Node(f"{zone}-{i}", 1, {"zone": zone, **labels},
                 ipaddress.IPv4Address(f"10.{ord(zone[0])}.0.{i + 1}")) for i in range(count)]


def live_with(env: dict[str, str], nodes: list[Node], *, mesh: bool = True
              ) -> tuple[Live, ClusterState]:
    live = Live(load({"ROUTE_REFLECTOR_ZONE_LABEL": "zone", **env}))
    state = live.settings_state()
    state.set_bgp(BgpConfig(mesh_enabled=mesh))
    for node in nodes:
        state.put_node(node)
    live.loaded(state, [])
    return live, state


def test_an_object_cannot_make_every_node_an_rr():
    """{"min":1000,"max":1000,"ratio":1} is bounded by the local max_rr_fraction."""
    live, state = live_with({}, zone_nodes("a", 40))
    live.apply(state, POLICY_KEY, b'{"min": 1000, "max": 1000, "ratio": 1}', 2)
    mesh = desired(state, live.settings.policy)
    assert len(mesh.reflectors) == 20  # 0.5 of 40, the default bound


def test_the_local_bounds_are_not_the_objects_to_set():
    """The object cannot raise the bounds, nor turn itself back on."""
    for field in ("max_rr_fraction", "max_zones", "object"):
        with pytest.raises(calico.BadRecord, match="unknown key"):
            overlay(Settings.of(load({})), POLICY_KEY, json.dumps({field: 1}).encode())


def test_policy_object_false_ignores_the_object():
    """With [policy] object = false the object changes nothing."""
    live, state = live_with({"RRWATCH_POLICY_OBJECT": "false"}, zone_nodes("a", 5))
    before = live.settings
    live.apply(state, POLICY_KEY, b'{"topology": "multi"}', 2)
    assert live.settings == before and not live.from_object


def test_an_exclude_that_empties_a_zone_is_refused_while_the_mesh_is_off():
    """{"exclude":"all()"} would remove every RR: refused with the mesh off, and the policy
    before it stays in force."""
    live, state = live_with({}, zone_nodes("a", 5) + zone_nodes("b", 5), mesh=False)
    before = live.settings
    with pytest.raises(calico.BadRecord, match="without candidates"):
        live.apply(state, POLICY_KEY, b'{"exclude": "all()"}', 2)
    with pytest.raises(calico.BadRecord, match="'b'"):
        live.apply(state, POLICY_KEY, b'{"exclude": "zone == \'b\'"}', 3)
    assert live.settings == before
    live.apply(state, POLICY_KEY, b'{"exclude": "zone == \'b\' && has(x)"}', 4)  # leaves some
    assert live.settings.policy.exclude is not None


def test_an_object_cannot_adopt_a_label_other_writers_own():
    """node_label team=payments is refused while nodes rrwatch did not mark carry `team`."""
    live, state = live_with({}, zone_nodes("a", 3, team="frontend"))
    with pytest.raises(calico.BadRecord, match="'team' is carried by 3 nodes"):
        live.apply(state, POLICY_KEY, b'{"node_label": "team=payments"}', 2)
    assert live.settings.policy.rr_label == RRLabel("calico-route-reflector", "")


def test_a_local_label_other_writers_own_holds_every_write():
    """A typo in ROUTE_REFLECTOR_NODE_LABEL that names another writer's label holds the
    reconciler: the settings in force say why, and nothing is planned with them."""
    live, _ = live_with({"ROUTE_REFLECTOR_NODE_LABEL": "team=payments"},
                        zone_nodes("a", 3, team="frontend"))
    assert live.settings.held is not None and "'team'" in live.settings.held


def test_demotion_removes_only_the_label_rrwatch_set():
    """After the RR label changes from a= to b=, a demotion removes the b= label rrwatch set and
    the stale a= label it set before, but a node's own label with key a stays."""
    node = s.node_json(Node("n1", 1, {"a": "mine"}, ipaddress.IPv4Address("10.0.0.1")))
    promoted = edits.edit_node(node, RRLabel("b", ""), "224.0.0.1")
    assert json.loads(promoted)["metadata"]["annotations"] == {calico.LABEL_ANNOTATION: "b"}
    demoted = edits.edit_node(promoted, RRLabel("a", "x"), None)
    assert demoted == node
    relabelled = edits.edit_node(promoted, RRLabel("c", ""), "224.0.0.1")
    labels = json.loads(relabelled)["metadata"]["labels"]
    assert labels == {"a": "mine", "c": ""}


def test_zones_beyond_the_bound_get_no_rrs_of_their_own():
    """60 single-node zones, with max_zones 4: RRs go to the 4 largest zones only."""
    nodes = [n for z in range(60) for n in zone_nodes(f"z{z:02}", 2 if z < 4 else 1)]
    state = state_of(attrs.evolve(n, labels={"zone": n.labels["zone"]}) for n in nodes)
    mesh = desired(state, Policy(max_zones=4, min_rrs=1))
    assert {state.nodes[n].labels["zone"] for n in mesh.reflectors} == {"z00", "z01", "z02", "z03"}
    assert any("60 zones" in p for p in mesh.problems)


@pytest.mark.parametrize("bgp", [
    {"asNumber": 0, "ipv4Address": "10.0.0.1"},
    {"asNumber": 23456, "ipv4Address": "10.0.0.1"},
    {"ipv6Address": "fe80::1/64"},
    {"ipv6Address": "::/0"},
])
def test_nodes_bird_would_refuse_are_never_rrs(bgp):
    """A node with AS 0 or AS_TRANS, or a link-local or unspecified address, is not eligible."""
    state = ClusterState("zone", RRLabel("rr", ""))
    calico.apply(state, KEY, node_value(bgp), 1)
    assert not state.eligible(state.nodes["node-1"])
    assert not desired(state, Policy(min_rrs=1)).reflectors


# -- ownership of BGPPeers -----------------------------------------------------------------------

def test_a_labelled_peer_outside_the_prefix_is_reported_and_never_deleted():
    """A ToR uplink copied with rrwatch's label is not rrwatch's: no op touches it, and the
    plan's problems name it."""
    value = edits.new_peer("tor-uplink", {"peerIP": "192.0.2.1", "asNumber": 65000})
    state = state_of(zone_nodes("a", 3))
    calico.apply(state, calico.PEERS + "tor-uplink", value, 1)
    peer = state.peers["tor-uplink"]
    assert not peer.owned and peer.disowned
    mesh, plan = Planner(Policy()).plan(state)
    assert not [op for op in plan.make + plan.brk
                if isinstance(op, PutPeer | DeletePeer) and op.name == "tor-uplink"]
    assert any("tor-uplink" in p for p in mesh.problems)


# -- the last good BGPConfiguration --------------------------------------------------------------

def test_an_unreadable_bgp_configuration_keeps_the_last_good_one_and_holds_host_peers():
    """A BGPConfiguration that cannot be read leaves the last good AS in force; host peers are
    neither rewritten nor created until it can be read again."""
    state = state_of(zone_nodes("a", 3))
    good = json.dumps({"kind": "BGPConfiguration", "metadata": {"name": "default"},
                       "spec": {"asNumber": 65001, "nodeToNodeMeshEnabled": False}}).encode()
    calico.apply(state, calico.BGP_CONFIG, good, 1)
    register(state, "192.0.2.7")
    converge(state, Policy())
    assert state.peers["rrwatch-host-192-0-2-7"].spec["asNumber"] == 65001
    with pytest.raises(calico.BadRecord):
        calico.apply(state, calico.BGP_CONFIG, b"{broken", 2)
    assert (state.bgp.asn, state.bgp.mesh_enabled) == (65001, False)
    register(state, "192.0.2.8")
    _, plan = Planner(Policy()).plan(state)
    assert not [op for op in plan.make + plan.brk if isinstance(op, PutPeer | DeletePeer)]
    calico.apply(state, calico.BGP_CONFIG, good.replace(b"65001", b"65002"), 3)
    converge(state, Policy())
    assert {p.spec["asNumber"] for n, p in state.peers.items()
            if n.startswith("rrwatch-host-")} == {65002}
    assert isinstance(state.peers["rrwatch-host-192-0-2-8"], Peer)


@pytest.mark.parametrize("selector",
                         ["has(", "(" * 5000 + "all()" + ")" * 5000, "!" * 900 + "all()"])
def test_a_foreign_peer_whose_selector_does_not_parse_is_reported(selector):
    """A foreign BGPPeer with a selector that does not parse (broken, or nested to exhaust
    the stack) is named in the plan's problems, and verify says it configures nothing."""
    state = state_of(zone_nodes("a", 3))
    calico.apply(state, calico.PEERS + "broken", edits.dumps(
        {"kind": "BGPPeer", "metadata": {"name": "broken"},
         "spec": {"nodeSelector": selector, "peerSelector": "all()"}}), 1)
    mesh = desired(state, Policy())
    assert any(p.startswith("BGPPeer broken: its nodeSelector does not parse")
               for p in mesh.problems)
    assert any("broken" in p and "selects nothing" in p for p in verify(state).fatal)

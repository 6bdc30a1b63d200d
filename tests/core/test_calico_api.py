"""Every record rrwatch writes passes Calico's v3 validation, for what applies to it."""

from __future__ import annotations

import json
from ipaddress import IPv4Address

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrwatch.core import calico, calico_api, edits
from rrwatch.core.model import Node
from rrwatch.core.plan import Planner
from tests.support import (
    RR_LABEL,
    clusters,
    converge,
    node_json,
    policies,
    reflectors,
    state_of,
)

NODE = calico.NODES + "n1"
PEER = calico.PEERS + "p1"


def peer(**spec: object) -> dict:
    return {"kind": "BGPPeer", "metadata": {"name": "p1"}, "spec": spec}


def node(bgp: object = None, **labels: str) -> dict:
    obj: dict = {"kind": "Node", "metadata": {"name": "n1", "labels": labels}, "spec": {}}
    if bgp is not None:
        obj["spec"]["bgp"] = bgp
    return obj


@pytest.mark.parametrize(("record", "key", "wrong"), [
    (node({}), NODE, "spec.bgp is present but empty"),
    (node({"routeReflectorClusterID": "1.2.3"}), NODE, "not a dotted-quad"),
    (node({"routeReflectorClusterID": "01.2.3.4"}), NODE, "not a dotted-quad"),
    (node({"ipv4Address": "10.0.0.1/24"}, **{"-x": ""}), NODE, "not a qualified name"),
    (node({"ipv4Address": "10.0.0.1/24"}, **{"a/b/c": ""}), NODE, "not a qualified name"),
    (node({"ipv4Address": "10.0.0.1/24"}, **{"Big.io/x": ""}), NODE, "not a qualified name"),
    (node({"ipv4Address": "10.0.0.1/24"}, x="a b"), NODE, "not a valid label value"),
    (node({"ipv4Address": "10.0.0.1/24"}, x="v" * 64), NODE, "not a valid label value"),
    ({"metadata": {"name": "Up"}, "spec": {}}, PEER, "not a DNS-1123 subdomain"),
    ({"metadata": {"name": "a" * 254}, "spec": {}}, PEER, "not a DNS-1123 subdomain"),
    ({"metadata": {"name": "rr:1"}, "spec": {}}, PEER, "not a DNS-1123 subdomain"),
    (peer(node="n1", nodeSelector="all()"), PEER, "node and nodeSelector are both set"),
    (peer(peerIP="10.0.0.1", peerSelector="all()"), PEER, "peerIP and peerSelector"),
    (peer(asNumber=64512, peerSelector="all()"), PEER, "asNumber is set with peerSelector"),
    (peer(peerIP="10.0.0.1", asNumber=2**32), PEER, "not an AS number"),
    (peer(peerIP="rr.example:179"), PEER, "not an address, ip:port or [ip]:port"),
    (peer(peerIP="10.0.0.1:x"), PEER, "not an address, ip:port or [ip]:port"),
    (peer(peerSelector="has(a"), PEER, "does not parse"),
    (peer(peerSelector="has(a) || " * 110 + "has(b)"), PEER, "longer than 1024"),
])
def test_calicos_rules_refuse(record, key, wrong):
    found = calico_api.problems(key, record)
    assert any(wrong in p for p in found), found


@pytest.mark.parametrize(("record", "key"), [
    (node({"ipv4Address": "10.0.0.1/24", "routeReflectorClusterID": "224.0.0.1"},
          **{"calico-route-reflector": "", "x.io/rr": "a-b_c.d", "zone": ""}), NODE),
    (node(), NODE),  # no bgp key at all: a node that runs no BGP
    (peer(node="n1", peerIP="[fd00::1]:179", asNumber=64512), PEER),
    (peer(nodeSelector="all( )", peerSelector="has(x.io/rr)"), PEER),
    (peer(peerIP="10.0.0.1:1790", asNumber=0), PEER),
])
def test_calicos_rules_take(record, key):
    assert calico_api.problems(key, record) == []


def test_a_demoted_rr_without_an_address_keeps_no_bgp_key():
    """Its `spec.bgp` held only the cluster ID: Calico's API refuses `"bgp":{}`, and calicoctl
    would then refuse every later update of the node."""
    raw = edits.dumps({"kind": "Node", "metadata": {"name": "n1", "labels": {RR_LABEL.key: ""}},
                       "spec": {"bgp": {"routeReflectorClusterID": "224.0.0.1"}, "x": 1}})
    demoted = json.loads(edits.edit_node(raw, RR_LABEL, None))
    assert demoted["spec"] == {"x": 1}
    assert calico_api.problems(NODE, demoted) == []
    promoted = json.loads(edits.edit_node(edits.dumps(demoted), RR_LABEL, "224.0.0.2"))
    assert promoted["spec"] == {"x": 1, "bgp": {"routeReflectorClusterID": "224.0.0.2"}}


def test_what_others_wrote_wrong_is_not_rrwatchs_to_answer_for():
    """A label someone else set that Calico would refuse stays as it is (rrwatch never changes
    what it does not own), and does not stop rrwatch's own edit: only problems the edit brings
    count."""
    before = node_json(Node("n1", 1, {"bad key!": "x"}, ipv4=IPv4Address("10.0.0.1")))
    after = edits.edit_node(before, RR_LABEL, "224.0.0.1")
    assert calico_api.problems(NODE, after)
    assert calico_api.introduced(NODE, before, after) == []
    assert calico_api.introduced(NODE, before, after.replace(b'"224.0.0.1"', b'"224.0.0"'))


@settings(max_examples=150, deadline=None)
@given(clusters(max_size=30), policies(), st.lists(reflectors(), max_size=2), st.booleans())
def test_every_write_of_every_plan_passes_calicos_validation(nodes, policy, hosts, midway):
    """From scratch or part of the way to its mesh, every value every op of the plan writes
    brings no problem Calico's validation would find into its record."""
    state = state_of(nodes, policy)
    for host in hosts:
        state.put_reflector(host)
    if midway:
        converge(state, attrs.evolve(policy, topology="simple"))
    records = {calico.NODES + n.name: node_json(n) for n in state.nodes.values()}
    _, plan = Planner(policy).plan(state)
    for op in plan.make + plan.brk:
        current = records.get(op.key) if op.key.startswith(calico.NODES) else (
            edits.new_peer(op.key[len(calico.PEERS):], state.peers[op.key[len(
                calico.PEERS):]].spec) if op.revision else None)
        value = edits.written(op, current, policy.rr_label)
        if value is not None:
            assert calico_api.introduced(op.key, current, value) == [], (op, value)

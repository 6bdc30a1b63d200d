"""The desired mesh: sizing, deterministic and sticky choice of route reflectors."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrwatch.mesh import Policy, PolicyError, choose_reflectors, desired
from rrwatch.plan import make_plan
from rrwatch.selector import parse, render
from tests import strategies as s
from tests.helpers import carry_out, state_of

POLICY = Policy(rr_label=s.RR_LABEL, ratio=0.05, min_rrs=2, max_rrs=5)


@given(st.integers(0, 100_000), st.floats(0.0001, 1), st.integers(0, 30), st.integers(0, 30))
def test_rr_count_formula(eligible, ratio, low, high):
    """RRs per zone = clamp(ceil(eligible × ratio), min, max), at most the eligible count."""
    low, high = min(low, high), max(low, high)
    policy = Policy(ratio=ratio, min_rrs=low, max_rrs=high)
    wanted = math.ceil(eligible * ratio)
    assert policy.rr_count(eligible) == min(eligible, max(low, min(high, wanted)))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ratio": 0}, "ratio"),
    ({"min_rrs": 4, "max_rrs": 3}, "min 4 and max 3"),
    ({"cluster_id_template": "224.0.0.%s.%d"}, "template"),
    ({"cluster_id_template": "300.0.0.%d"}, "template"),
    ({"topology": "ring"}, "topology"),
])
def test_bad_policies_are_rejected(kwargs, message):
    """Impossible sizes, bad templates and unknown topologies are refused at construction."""
    with pytest.raises(PolicyError, match=message):
        Policy(**kwargs)


@given(s.clusters(), st.randoms(use_true_random=False))
def test_choice_does_not_depend_on_event_order(nodes, random):
    """The same nodes, put in any order (with deletes and re-puts), give the same RRs."""
    shuffled = list(nodes)
    random.shuffle(shuffled)
    state = state_of(shuffled)
    for node in shuffled[: len(shuffled) // 2]:
        state.remove_node(node.name)
    for node in shuffled[: len(shuffled) // 2]:
        state.put_node(node)
    assert choose_reflectors(state, POLICY) == choose_reflectors(state_of(nodes), POLICY)


@given(s.clusters())
def test_each_zone_gets_the_formula_count_of_eligible_nodes(nodes):
    """Every zone gets rr_count(eligible) RRs, all of them eligible nodes of that zone."""
    state = state_of(nodes)
    chosen = choose_reflectors(state, POLICY)
    for zone, index in state.zones.items():
        assert len(chosen[zone]) == POLICY.rr_count(len(index))
        for name in chosen[zone]:
            node = state.nodes[name]
            assert node.has_bgp_address and state.zone_of(node) == zone


@given(s.clusters(min_size=1), s.nodes())
def test_adding_a_node_keeps_every_rr(nodes, newcomer):
    """Sticky: after convergence, a new node never displaces a current route reflector."""
    state = state_of(nodes)
    plan = make_plan(state, desired(state, POLICY))
    carry_out(state, plan.make + plan.brk)
    before = {name for names in choose_reflectors(state, POLICY).values() for name in names}
    if newcomer.name in state.nodes:
        return
    state.put_node(attrs.evolve(newcomer, cluster_id=None,
                                labels={k: v for k, v in newcomer.labels.items()
                                        if k != s.RR_LABEL.key}))
    after = {name for names in choose_reflectors(state, POLICY).values() for name in names}
    assert before <= after


def test_simple_topology_peers():
    """`simple`: RRs mesh with each other, clients peer with every RR, by label selectors."""
    mesh = desired(state_of([]), POLICY)
    rr = "calico-route-reflector == ''"
    assert mesh.peers == {
        "rrwatch-rr-mesh": {"nodeSelector": rr, "peerSelector": rr},
        "rrwatch-rr-clients": {"nodeSelector": "calico-route-reflector != ''", "peerSelector": rr},
    }


def test_written_selectors_parse_and_select_the_right_nodes():
    """The selectors of the desired BGPPeers parse and split RRs from clients exactly."""
    rr, client = {"calico-route-reflector": ""}, {"other": "x"}
    peers = desired(state_of([]), POLICY).peers
    mesh, clients = peers["rrwatch-rr-mesh"], peers["rrwatch-rr-clients"]
    for spec in peers.values():
        for text in spec.values():
            assert render(parse(text)) == text
    assert parse(mesh["nodeSelector"]).matches(rr)
    assert not parse(mesh["nodeSelector"]).matches(client)
    assert parse(clients["nodeSelector"]).matches(client)
    assert not parse(clients["nodeSelector"]).matches(rr)
    assert parse(clients["peerSelector"]).matches(rr)

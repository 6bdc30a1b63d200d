"""A new cluster ID for an RR is a break. BIRD restarts a protocol whose `rr cluster id` or `rr
client` changes, so an RR that takes a new ID drops every session it has until they come up
again. Found in the BGP lab: `multi` -> `simple` gave every RR but one a new ID in one make step,
and clients whose RRs were all among them lost every route for a second or two.

So a re-ID waits in the break phase, paced like a demotion, and the gate lets it through only
when every speaker with a session with that RR keeps enough verified sessions elsewhere."""

from __future__ import annotations

import ipaddress

import attrs
from hypothesis import given

from rrwatch.core import calico
from rrwatch.core.breaks import step
from rrwatch.core.model import BgpConfig, ClusterState, Node
from rrwatch.core.plan import DeletePeer, Limits, Planner, SetNode, outcome
from rrwatch.core.policy import Policy
from rrwatch.core.reachability import unreachable
from rrwatch.core.sessions import FAMILIES, fabric
from rrwatch.core.steps import applied, check
from rrwatch.testing import simulate
from tests.support import (
    POLICY,
    RR_LABEL,
    clusters,
    converge,
    policies,
    session_evidence,
    session_report,
    state_of,
)

MULTI = attrs.evolve(POLICY, topology="multi", client_rrs=2, min_rrs=4, max_rrs=4)
SIMPLE = attrs.evolve(MULTI, topology="simple")


def cluster() -> ClusterState:
    """Eight nodes in one zone, mesh off, converged in `multi` (4 RRs, each its own ID)."""
    state = state_of([Node(f"n{i}", 1, {"zone": "a"}, ipaddress.IPv4Address(f"10.0.0.{i}"))
                      for i in range(1, 9)], MULTI)
    state.set_bgp(BgpConfig(mesh_enabled=False))
    converge(state, MULTI)
    return state


def to_simple() -> tuple[ClusterState, tuple, set[str]]:
    """The cluster after `simple`'s make phase: its break phase, and the RRs it re-IDs."""
    state = cluster()
    planner = Planner(SIMPLE)
    while (plan := planner.plan(state)[1]).make:
        outcome(state, plan.make)
    reids = {op.name for op in plan.brk if isinstance(op, SetNode) and op.why == "re-id"}
    return state, plan.brk, reids


def test_a_new_cluster_id_for_an_rr_is_a_break_not_a_make():
    state = cluster()
    plan = Planner(SIMPLE).plan(state)[1]
    rrs = {n for n, node in state.nodes.items() if node.cluster_id}
    reids = {op.name for op in plan.brk if isinstance(op, SetNode) and op.why == "re-id"}
    assert len(reids) == len(rrs) - 1  # all share one ID now: one keeps its own
    assert not any(isinstance(op, SetNode) and op.cluster for op in plan.make)
    assert "its sessions restart" in str(next(op for op in plan.brk if op.name in reids))


def test_re_ids_go_one_step_at_a_time_like_demotions():
    state, brk, reids = to_simple()
    taken = Limits(demotions=1).step(brk)
    assert sum(isinstance(op, SetNode) and op.why in ("re-id", "demote") for op in taken) == 1


def test_a_re_id_waits_until_the_clients_other_rr_sessions_are_verified():
    """Every session of the RR taking a new ID goes down as it lands: its clients must keep
    verified sessions with the others. The RR itself holds nothing up."""
    state, brk, reids = to_simple()
    first = next(op for op in brk if isinstance(op, SetNode) and op.why == "re-id")
    others = {n for n, node in state.nodes.items() if node.cluster_id} - {first.name}
    for rr in others:  # the clients' sessions with the RRs that keep their ID: not up
        state.put_report(rr, session_report(state, rr, False), 5)
    state.put_report(first.name, session_report(state, first.name, True), 5)
    ops, judgement = step(state, [first], session_evidence(state), "require")
    assert ops == ()
    assert {h.rr for h in judgement.holds} <= others and first.name not in {
        h.speaker for h in judgement.holds}
    for rr in others:  # up, and seen long enough ago: the re-ID goes
        state.put_report(rr, session_report(state, rr, True), 6)
    ops, judgement = step(state, [first], session_evidence(state), "require")
    assert judgement.ok and ops == (first,)


@given(clusters(max_size=30), policies())
def test_every_plan_converges_with_re_ids_one_at_a_time(nodes, policy):
    """A pending re-ID keeps its target (the RR's BGPPeer names it in `multi`), so taking the
    break phase a re-ID at a time ends: converge() fails after 1,000 steps."""
    state = state_of(nodes, policy)
    converge(state, policy, Limits(demotions=1))
    assert not Planner(policy).plan(state)[1]


def three_zones_to_multi() -> tuple[ClusterState, tuple]:
    """3 zones of 4 nodes, 2 RRs a zone sharing one ID (`simple`, mesh off), after the make
    phase of `multi` (2 RRs a client): its break phase."""
    simple = Policy(rr_label=RR_LABEL, ratio=0.005, min_rrs=2, max_rrs=2, topology="simple")
    multi = attrs.evolve(simple, topology="multi", client_rrs=2)
    state = ClusterState(simulate.ZONE_LABEL, RR_LABEL, None, None)
    for zone in "abc":
        for i, (key, value) in enumerate(simulate.nodes(zone, range(4)).items()):
            calico.apply(state, key, value, i + 1)
    state.set_bgp(BgpConfig(mesh_enabled=False))
    converge(state, simple)
    planner = Planner(multi)
    while (plan := planner.plan(state)[1]).make:
        outcome(state, plan.make)
    return state, plan.brk


def test_a_re_id_is_judged_while_its_rr_restarts_and_goes_before_the_peer_deletes():
    """`simple` -> `multi` in the BGP lab: deleting the peer that gives every client every RR
    in the step that re-IDs some RRs is whole before and after, but while those RRs restart, a
    client whose other RR still shares the old ID with the rest is heard by nobody else (the
    other RRs take the reflection for a loop). The route check judges that moment too, and the
    plan re-IDs first, while every client still has every RR."""
    state, brk = three_zones_to_multi()
    reids = [op for op in brk if isinstance(op, SetNode) and op.why == "re-id"]
    delete = next(op for op in brk if isinstance(op, DeletePeer))
    assert brk[:len(reids)] == tuple(reids)
    step = (delete, *reids[:3])
    after = applied(state, step)
    assert all(set(unreachable(fabric(after, f))) <= set(unreachable(fabric(state, f)))
               for f in FAMILIES)  # whole after the step
    verdict = check(state, step)
    assert not verdict.ok and verdict.count
    assert check(state, reids[:3]).ok

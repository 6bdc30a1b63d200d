"""Plans: only differences, make before break, churn limits, incremental planning."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rrwatch.core.mesh import desired
from rrwatch.core.model import CLIENT_LABEL_PREFIX, Peer, client_labels
from rrwatch.core.plan import (
    DeletePeer,
    Limits,
    Plan,
    Planner,
    PutPeer,
    SetNode,
    make_plan,
    outcome,
)
from tests import support as s
from tests.support import POLICY, converge, fresh, state_of

limits = st.builds(Limits, st.integers(1, 5), st.integers(1, 3))


@given(s.clusters(), s.policies(), limits)
def test_plans_converge_within_the_churn_limits(nodes, policy, limits):
    """Steps of at most `limits` node writes and demotions reach a state needing no writes."""
    state = state_of(nodes, policy)

    def check(step):
        writes = [op for op in step if isinstance(op, SetNode)]
        assert len(writes) <= limits.node_writes
        assert sum(op.why == "demote" for op in writes) <= limits.demotions

    planner = Planner(policy)
    for _ in range(1000):
        _, plan = planner.plan(state)
        if not plan:
            break
        step = limits.step(plan.make or plan.brk)
        check(step)
        outcome(state, step)
    assert not make_plan(state, desired(state, policy))


@given(s.clusters(), s.policies())
def test_make_phase_never_breaks(nodes, policy):
    """`make` only adds: promotions (never a new ID for an RR: BIRD would restart its
    sessions), peer writes, client labels kept for every live RR; `brk` only removes: demotions,
    re-IDs, peer deletes, client labels dropped."""
    state = state_of(nodes, policy)
    plan = make_plan(state, desired(state, policy))
    live = {CLIENT_LABEL_PREFIX + state.nodes[n].cluster_id for n in state.marked
            if state.nodes[n].cluster_id}
    for op in plan.make:
        assert isinstance(op, PutPeer) or op.why in ("promote", "peer")
        if isinstance(op, SetNode) and op.why == "promote":
            assert state.nodes[op.name].cluster_id in (None, op.cluster)
        if isinstance(op, SetNode) and op.why == "peer":
            assert client_labels(state.nodes[op.name]) & live <= op.clients
    for op in plan.brk:
        assert isinstance(op, DeletePeer) or op.why in ("demote", "re-id", "peer")
        if isinstance(op, SetNode) and op.why == "peer":
            assert op.clients <= client_labels(state.nodes[op.name])


@given(s.clusters(), s.policies())
def test_new_rrs_are_in_place_before_the_break_phase(nodes, policy):
    """After `make`, before `brk`, every desired RR has its cluster ID, but those that take a
    new one in `brk`, which keep the one they have."""
    state = state_of(nodes, policy)
    mesh = desired(state, policy)
    plan = make_plan(state, mesh)
    outcome(state, plan.make)
    reids = {op.name for op in plan.brk if isinstance(op, SetNode) and op.why == "re-id"}
    for name, cluster in mesh.reflectors.items():
        if name in reids:
            assert state.nodes[name].cluster_id not in (None, cluster)
        else:
            assert state.nodes[name].cluster_id == cluster


@given(s.clusters(), s.policies(), st.lists(st.tuples(st.booleans(), s.nodes()), max_size=8))
def test_incremental_plans_equal_full_plans(nodes, policy, events):
    """The Planner, which checks only changed nodes, plans exactly what a full pass plans."""
    state = state_of(nodes, policy)
    planner = Planner(policy)
    for put, node in events:
        mesh, plan = planner.plan(state)
        assert same(plan, make_plan(state, mesh))
        outcome(state, (plan.make or plan.brk)[:3])
        if put:
            state.put_node(fresh(node))
        else:
            state.remove_node(node.name)
    mesh, plan = planner.plan(state)
    assert same(plan, make_plan(state, mesh))


def same(incremental: Plan, full: Plan) -> bool:
    """The same ops, in the same order except among the client-label ops, which the Planner
    keeps in the order it last checked them."""
    def key(ops: tuple) -> tuple:
        clients = [op for op in ops if isinstance(op, SetNode) and op.why == "peer"]
        others = [op for op in ops if not (isinstance(op, SetNode) and op.why == "peer")]
        return tuple(others), sorted(clients, key=lambda op: op.name)
    return (key(incremental.make) == key(full.make) and key(incremental.brk) == key(full.brk)
            and incremental.blocked == full.blocked)


@given(s.clusters(), s.policies())
def test_preferred_rrs_are_demoted_last(nodes, policy):
    """In `brk`, demotions of non-preferred nodes come before those of preferred ones."""
    state = state_of(nodes, policy)
    demotions = [op for op in make_plan(state, desired(state, policy)).brk
                 if isinstance(op, SetNode) and op.why == "demote"]
    flags = [state.preferred(state.nodes[op.name]) for op in demotions]
    assert flags == sorted(flags)


def test_peer_not_owned_is_never_written():
    """A BGPPeer with a desired name but no ownership label is reported, never touched."""
    state = state_of([])
    state.put_peer(Peer("rrwatch-rr-mesh", 7, owned=False, spec={"peerIP": "10.0.0.1"}))
    plan = make_plan(state, desired(state, POLICY))
    assert plan.blocked == ("rrwatch-rr-mesh",)
    assert all(op.name != "rrwatch-rr-mesh" for op in plan.make + plan.brk)


def test_stale_owned_peer_is_deleted_after_the_make_phase():
    """An owned BGPPeer that the mesh no longer needs is deleted in `brk`, guarded."""
    state = state_of([])
    state.put_peer(Peer("rrwatch-old", 5, owned=True, spec={}))
    plan = make_plan(state, desired(state, POLICY))
    assert DeletePeer("rrwatch-old", 5) in plan.brk
    assert all(op.name != "rrwatch-old" for op in plan.make)


@given(s.clusters(), s.policies())
def test_a_converged_state_plans_nothing(nodes, policy):
    """Steady state: once converged, a fresh planner finds nothing to write."""
    state = state_of(nodes, policy)
    converge(state, policy)
    assert not Planner(policy).plan(state)[1]


def test_an_unreadable_owned_peer_is_left_alone_and_does_not_stall_the_break_phase():
    """A desired peer whose stored value cannot be read is blocked, not created over and over,
    so the break phase still runs."""
    from rrwatch.core import calico

    state = state_of([])
    state.put_peer(Peer("rrwatch-old", 5, owned=True, spec={}))
    key = calico.PEERS + "rrwatch-rr-mesh"
    try:
        calico.apply(state, key, b'{"metadata":{"name":"rrwatch-rr-mesh","labels":{"x":1}}}', 9)
    except calico.BadRecord:
        pass
    plan = make_plan(state, desired(state, POLICY))
    assert "rrwatch-rr-mesh" in plan.blocked
    assert all(op.name != "rrwatch-rr-mesh" for op in plan.make + plan.brk)
    assert DeletePeer("rrwatch-old", 5) in plan.brk
    calico.apply(state, key, None, 10)  # deleted: no longer in the way
    assert PutPeer("rrwatch-rr-mesh", None, desired(state, POLICY).peers["rrwatch-rr-mesh"]) in (
        make_plan(state, desired(state, POLICY)).make)


def test_a_zone_that_gains_rrs_keeps_its_fallback_until_the_break_phase():
    """`zoned`: when a zone without RRs gets some, its own peer comes in `make` and its
    fallback peer (to all RRs) goes only in `brk`."""
    import ipaddress

    import attrs

    from rrwatch.core.model import Node
    from rrwatch.core.selector import parse

    policy = attrs.evolve(POLICY, topology="zoned", exclude=parse("role == 'db'"))
    nodes = [Node(f"{z}{i}", 1, {"zone": z, **({"role": "db"} if z == "b" else {})},
                  ipv4=ipaddress.IPv4Address(f"10.0.{ord(z)}.{i + 1}"))
             for z in "ab" for i in range(3)]
    state = state_of(nodes, policy)
    converge(state, policy)
    assert "rrwatch-fallback-b" in state.peers
    for node in list(state.nodes.values()):  # b's nodes become eligible
        state.put_node(attrs.evolve(node, labels={**node.labels, "role": "rr"}))
    plan = make_plan(state, desired(state, policy))
    assert any(isinstance(op, PutPeer) and op.name == "rrwatch-zone-b" for op in plan.make)
    assert all(op.name != "rrwatch-fallback-b" for op in plan.make)
    assert DeletePeer("rrwatch-fallback-b", state.peers["rrwatch-fallback-b"].revision) in (
        plan.brk)


def test_a_step_takes_node_writes_up_to_the_limit_and_every_peer_write():
    ops = (SetNode("rr1", 1, "224.0.0.1", why="promote"), SetNode("old", 2, None, why="demote"),
           SetNode("old2", 3, None, why="demote"), PutPeer("rrwatch-rr-mesh", None, {}),
           *(SetNode(f"c{i}", 4, None) for i in range(5)), DeletePeer("rrwatch-old", 5))
    assert Limits(node_writes=3, demotions=1).step(ops) == (
        ops[0], ops[1], ops[3], ops[4], ops[-1])

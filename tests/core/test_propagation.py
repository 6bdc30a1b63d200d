"""Every topology rrwatch makes carries every route, at every step of every plan."""

from __future__ import annotations

import ipaddress

import attrs
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from rrwatch.core.mesh import desired
from rrwatch.core.model import BgpConfig, Node
from rrwatch.core.plan import Limits, Planner, outcome
from rrwatch.core.policy import Policy
from rrwatch.core.reachability import verify
from rrwatch.core.sessions import FAMILIES, fabric
from tests import support as s
from tests.support import converge, fresh, state_of

STACKS = st.sampled_from([(4,), (6,), (4, 6)])


def uniform(nodes: list[Node], stack: tuple[int, ...]) -> list[Node]:
    """The nodes with one address stack for all speakers (and distinct addresses)."""
    out = []
    for i, node in enumerate(nodes):
        if node.has_bgp_address:
            node = attrs.evolve(
                node,
                ipv4=ipaddress.IPv4Address(0x0A000001 + i) if 4 in stack else None,
                ipv6=ipaddress.IPv6Address(0xFD00 << 112 | i + 1) if 6 in stack else None)
        out.append(node)
    return out


def mesh_off(nodes, policy, hosts):
    state = state_of(nodes, policy)
    state.set_bgp(BgpConfig(mesh_enabled=False))
    for host in hosts:
        state.put_reflector(host)
    return state


def with_policy(state, policy):
    """The same records, indexed for another policy (as after a restart with new config)."""
    new = mesh_off(state.nodes.values(), policy, state.reflectors.values())
    for peer in state.peers.values():
        new.put_peer(peer)
    return new


def clients_and_rrs(state, family):
    fab = fabric(state, family)
    clients = {n for n, sp in fab.speakers.items() if sp.node and not sp.reflector}
    return fab, clients


@given(s.clusters(), s.policies(), st.lists(s.reflectors(), max_size=2), STACKS)
def test_every_topology_propagates_every_route(nodes, policy, hosts, stack):
    """Converged, with the node-to-node mesh off, every node hears every node's route whenever
    the cluster has a route reflector; and with two RRs per client, still after losing any one."""
    state = mesh_off(uniform(nodes, stack), policy, hosts)
    converge(state, policy)
    verdict = verify(state, failures=1)
    for family in FAMILIES:
        fab, clients = clients_and_rrs(state, family)
        if not fab.reflectors or not clients:
            continue
        assert (family, None) not in verdict.unreachable, verdict.lines()
        if all(len(fab.reflectors_of(name)) >= 2 for name in clients):
            assert not any(f == family for f, _ in verdict.unreachable), verdict.lines()


@given(s.clusters(min_size=2), s.policies(topology=st.just("multi")), STACKS)
def test_multi_with_k_of_two_or_more_survives_any_single_rr_failure(nodes, policy, stack):
    """`multi` with k ≥ 2 and at least two RRs: every route still reaches after any RR is lost."""
    assume(policy.client_rrs >= 2)
    state = mesh_off(uniform(nodes, stack), policy, [])
    converge(state, policy)
    assume(len(desired(state, policy).reflectors) >= 2)
    assert verify(state, failures=1).ok


changes = st.lists(st.tuples(st.sampled_from(["add", "remove", "unaddress"]), s.nodes()),
                   max_size=6)


@st.composite
def policy_changes(draw):
    """A policy and a variation of it: some of its settings drawn again."""
    before = draw(s.policies())
    fresh_draw = draw(s.policies())
    fields = draw(st.sets(st.sampled_from(
        ["topology", "max_rrs", "client_rrs", "ratio", "exclude", "prefer"]), min_size=1))
    changed = {f: getattr(fresh_draw, f) for f in fields}
    changed["max_rrs"] = max(changed.get("max_rrs", before.max_rrs), before.min_rrs)
    return before, attrs.evolve(before, **changed)


SHRINK = (Policy(rr_label=s.RR_LABEL, ratio=0.5, min_rrs=1, max_rrs=4, topology="multi",
                 client_rrs=1),
          Policy(rr_label=s.RR_LABEL, ratio=0.5, min_rrs=1, max_rrs=1, topology="multi",
                 client_rrs=1))


@settings(max_examples=150)
@example([Node(f"n{i}", 1, {"zone": "a"}, ipv4=ipaddress.IPv4Address(0x0A000001 + i))
          for i in range(8)], SHRINK, [], Limits(5, 2), (4,))
@given(s.clusters(), policy_changes(), changes,
       st.builds(Limits, st.integers(1, 4), st.integers(1, 2)), STACKS)
def test_no_client_loses_its_last_rr_session_at_any_step(nodes, policies, events, limits,
                                                        stack):
    """From a converged state, after node churn and a policy change (any topology to any), no
    node that has an RR session loses its last one at any single write of the plans that follow;
    and at the end every client has one when an RR exists."""
    before, after = policies
    state = mesh_off(uniform(nodes, stack), before, [])
    converge(state, before)
    kinds = [kind for kind, _ in events]
    for kind, node in zip(kinds, uniform([fresh(n) for _, n in events], stack), strict=True):
        if kind == "add":
            state.put_node(node)
        elif kind == "remove":
            state.remove_node(node.name)
        elif node.name in state.nodes:  # it loses its BGP address (an RR, perhaps)
            state.put_node(attrs.evolve(state.nodes[node.name], ipv4=None, ipv6=None))
    state = with_policy(state, after)

    def sessions(current):
        """(family, node) -> its RR neighbours, for clients; RRs map to None."""
        out = {}
        for family in FAMILIES:
            fab, clients = clients_and_rrs(current, family)
            out |= {(family, n): fab.reflectors_of(n) for n in clients}
            out |= {(family, n): None for n in fab.reflectors}
        return out

    # New sessions take a while to come up: the reconciler gives them the settle time between
    # its make and break phases, but none between the steps of one phase. So at every write,
    # a client that had an RR session must still have one that was up when the phase began.
    planner, phase, up = Planner(after), None, {}
    # When the new policy leaves no RR at all (every node excluded, say), demoting the last ones
    # is what the operator asked for: nobody can keep an RR session then.
    keeps_rrs = bool(desired(state, after).reflectors)
    for _ in range(1000):
        _, plan = planner.plan(state)
        if not plan:
            break
        if phase != ("make" if plan.make else "brk"):
            phase, up = ("make" if plan.make else "brk"), sessions(state)
        for op in limits.step(plan.make or plan.brk):
            outcome(state, [op])
            for key, rrs in sessions(state).items():
                before = up.get(key, frozenset())
                if keeps_rrs and rrs is not None and (before is None or before):
                    assert rrs & (before or rrs), f"{key[1]} lost its last RR (IPv{key[0]})"
    else:
        raise AssertionError("no convergence")
    for family in FAMILIES:
        fab, clients = clients_and_rrs(state, family)
        if fab.reflectors:
            assert all(fab.reflectors_of(name) for name in clients)

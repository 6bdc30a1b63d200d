"""Plans verified step by step: a step is refused only for the routes it would lose."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address

import attrs
from hypothesis import event, given, settings
from hypothesis import strategies as st

from rrwatch.core import calico, reachability, stepping, steps
from rrwatch.core.model import BgpConfig, Node, Peer
from rrwatch.core.plan import DeletePeer, Limits, Planner, PutPeer, SetNode, outcome
from rrwatch.core.policy import Policy
from rrwatch.core.reachability import unreachable
from rrwatch.core.sessions import FAMILIES, fabric
from rrwatch.core.stepping import take_break, take_detour, take_make
from rrwatch.core.steps import Steps, check
from rrwatch.testing import simulate
from tests import support as s
from tests.support import fresh, state_of

RR = s.RR_LABEL.key


def node(name: str, n: int, cluster: str | None = None, **labels: str) -> Node:
    """`name` at 10.0.0.n, labelled with its name (for the sessions below); an RR with a
    cluster ID."""
    labels = {"name": name, **labels}
    if cluster is not None:
        labels[RR] = ""
    return Node(name, 1, labels, ipv4=IPv4Address(f"10.0.0.{n}"), cluster_id=cluster)


def session(a: str, b: str) -> dict[str, object]:
    """A BGPPeer spec that brings up a session between nodes a and b."""
    return {"node": a, "peerSelector": f"name == '{b}'"}


def build(nodes, sessions) -> object:
    state = state_of(nodes)
    state.set_bgp(BgpConfig(mesh_enabled=False))
    for a, b in sessions:
        state.put_peer(Peer(f"{a}-{b}", 1, True, session(a, b)))
    return state


def lost(state, ops) -> set[tuple[int, str, str]]:
    """The (family, origin, receiver) that the plain simulation finds reaching before `ops`
    and not after; if none, and `ops` give RRs a new cluster ID, those not reaching while
    the RRs restart their sessions (the RRs gone, their own pairs aside)."""
    after = steps.applied(state, ops)
    found = _lost(state, after)
    restarted = {op.name for op in ops if isinstance(op, SetNode) and op.why == "re-id"}
    if found or not restarted:
        return found
    for name in restarted:
        after.remove_node(name)
    return {(f, o, t) for f, o, t in _lost(state, after) if not {o, t} & restarted}


def _lost(state, after) -> set[tuple[int, str, str]]:
    return {(family, *pair) for family in FAMILIES for pair in
            set(unreachable(fabric(after, family))) - set(unreachable(fabric(state, family)))}


# -- hidden routes -------------------------------------------------------------------------------


def deception():
    """o is a client of x (cluster 1); x reflects to y (cluster 3), y to b (cluster 2), b to its
    client t. b2 shares b's cluster ID and peers with b. Every route reaches."""
    nodes = [node("o", 1), node("x", 10, "224.0.0.1"), node("y", 30, "224.0.0.3"),
             node("b", 20, "224.0.0.2"), node("b2", 5, "224.0.0.2"), node("t", 2)]
    return build(nodes, [("o", "x"), ("x", "y"), ("y", "b"), ("b", "b2"), ("t", "b")])


def test_a_new_session_hides_no_route_since_calico_sets_add_paths():
    """What would be an iBGP deception: give o a session with b2 as well. b2 reflects o's route
    to b with a cluster list as short as y's, and b2's lower address wins the tie; that path
    carries b's own cluster ID, so b may not reflect it to t. Passing on its best path only, b
    would leave t without o's route. With ADD-PATH b holds y's path too, and reflects it."""
    state = deception()
    assert not any(unreachable(fabric(state, 4)))
    add = [PutPeer("o-b2", None, session("o", "b2"))]
    assert check(state, add).ok
    assert lost(state, add) == set()
    assert not any(unreachable(fabric(steps.applied(state, add), 4)))


@st.composite
def fabrics(draw):
    """Up to 8 nodes, most RRs on one of three cluster IDs, some in another AS, and BGPPeer
    sessions between them; and a pair of nodes without a session. (Best-path propagation
    loses a route in such a fabric within a few hundred examples.)"""
    count = draw(st.integers(3, 8))
    nodes = [attrs.evolve(node(f"n{i}", i + 1, draw(st.sampled_from(
        [None, "224.0.0.1", "224.0.0.2", "224.0.0.3"]))),
        asn=draw(st.sampled_from([None, None, None, None, 65001]))) for i in range(count)]
    pairs = [(f"n{a}", f"n{b}") for a in range(count) for b in range(a + 1, count)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, min_size=count - 1,
                            max_size=len(pairs) - 1))
    new = draw(st.sampled_from([p for p in pairs if p not in chosen]))
    return build(nodes, chosen), new


@settings(max_examples=500, deadline=None)
@given(fabrics())
def test_adding_a_session_never_loses_a_route(drawn):
    """Every path passes on (ADD-PATH), so a new session only adds paths: whatever the RRs,
    cluster IDs and ASes, a pair that reaches before reaches after."""
    state, (a, b) = drawn
    add = [PutPeer(f"{a}-{b}", None, session(a, b))]
    assert lost(state, add) == set()
    assert check(state, add).ok


def mesh_of_three():
    """Three nodes in the node-to-node mesh; promoting one takes it out of the mesh."""
    state = state_of([node(f"n{i}", i) for i in (1, 2, 3)])
    return state, SetNode("n1", 1, "224.0.0.1", why="promote")


def test_a_make_op_that_cuts_a_node_off_is_refused():
    """A promotion before the peers that serve the new RR: it leaves the mesh, and with it every
    session it had."""
    state, promote = mesh_of_three()
    verdict = check(state, [promote])
    assert verdict.count == 4  # n1 to and from n2 and n3
    assert lost(state, [promote]) == {(4, "n1", "n2"), (4, "n1", "n3"), (4, "n2", "n1"),
                                      (4, "n3", "n1")}


def test_a_break_that_removes_the_last_path_between_two_clusters_is_refused():
    """Two RRs, each with its clients, joined by one session: deleting it cuts every route
    across, and the check names them (the first few, and how many)."""
    state = build([node("r1", 1, "224.0.0.1"), node("a1", 2), node("a2", 3),
                   node("r2", 4, "224.0.0.2"), node("b1", 5), node("b2", 6)],
                  [("a1", "r1"), ("a2", "r1"), ("b1", "r2"), ("b2", "r2"), ("r1", "r2")])
    verdict = check(state, [DeletePeer("r1-r2", 1)])
    across = {(a, b) for a in ("r1", "a1", "a2") for b in ("r2", "b1", "b2")}
    across |= {(b, a) for a, b in across}
    assert verdict.count == len(across) == 18
    assert set(verdict.losses[0].pairs) <= across and len(verdict.losses[0].pairs) == steps.SHOWN
    assert "and 13 more" in str(verdict)
    assert lost(state, [DeletePeer("r1-r2", 1)]) == {(4, *pair) for pair in across}
    assert check(state, [DeletePeer("a1-r1", 1)]).count == 2 * 5  # a1 alone is cut off


def test_a_step_that_repairs_is_taken_and_one_that_trades_a_pair_is_refused():
    """Relative to now: in a cluster where b1 and b2 are already cut off, a session that brings
    b1 back is taken; one that brings b2 back while cutting a2 off is refused for a2 only."""
    state = build([node("r1", 1, "224.0.0.1"), node("a1", 2), node("a2", 3), node("b1", 4),
                   node("b2", 5)], [("a1", "r1"), ("a2", "r1")])
    assert check(state, [PutPeer("b1-r1", None, session("b1", "r1"))]).ok
    trade = [PutPeer("b2-r1", None, session("b2", "r1")), DeletePeer("a2-r1", 1)]
    verdict = check(state, trade)
    assert verdict.count == 2 * 2  # a2 to and from r1 and a1; b1 never reached a2
    assert {p for loss in verdict.losses for p in loss.pairs} == {
        ("a2", "r1"), ("a2", "a1"), ("r1", "a2"), ("a1", "a2")}


def test_a_step_that_changes_no_session_loses_nothing():
    state = deception()
    assert check(state, [SetNode("t", 1, None, why="peer")]).ok
    assert check(state, []).ok and str(check(state, [])) == (
        "every route that reaches now still reaches")


def test_names_from_records_are_shown_as_text():
    """A node name with a newline and an escape cannot forge a line or drive a terminal."""
    evil = "t\n2026 WARNING forged\x1b[31m"
    state, promote = mesh_of_three()
    state.remove_node("n3")
    state.put_node(attrs.evolve(node("n3", 3), name=evil))
    verdict = check(state, [promote])
    assert ("n1", evil) in verdict.losses[0].pairs
    text = str(verdict)
    assert "\n" not in text and "\x1b" not in text and "\\n2026 WARNING forged\\x1b[31m" in text
    assert "\n" not in str(verdict.losses[0])


# -- which ops go --------------------------------------------------------------------------------


def mesh_on_first_start(n: int = 12) -> tuple[object, Policy]:
    state = state_of([Node(f"n{i:02d}", 1, {"zone": "a"}, ipv4=IPv4Address(f"10.0.1.{i + 1}"))
                      for i in range(n)])
    return state, Policy(rr_label=s.RR_LABEL, ratio=0.05, min_rrs=3, max_rrs=3,
                         topology="multi", client_rrs=2)


def test_a_make_step_that_cuts_the_phase_badly_gives_way_to_the_whole_phase():
    """Node-to-node mesh on, a first start in `multi`: promoted RRs leave the mesh at once, so a
    step of two client writes cuts the other clients off the RRs' routes. The whole phase loses
    nothing, so it goes in one: holding would never converge."""
    state, policy = mesh_on_first_start()
    _, plan = Planner(policy).plan(state)
    step = Limits(node_writes=5).step(plan.make)  # the 3 promotions, 2 clients, the peers
    assert len(step) < len(plan.make)
    assert not check(state, step).ok
    ops, verdict = take_make(Steps(), state, plan.make, step)
    assert ops == plan.make and verdict.ok
    small, _ = take_make(Steps(), state, plan.make, plan.make)
    assert small == plan.make


def test_a_make_phase_that_loses_routes_is_held_with_its_own_check():
    """If the whole phase would lose routes too, nothing is taken, and the phase's check says
    why."""
    state, promote = mesh_of_three()
    idle = PutPeer("idle", None, session("nobody", "nothing"))  # brings up no session
    phase = (promote, idle)
    ops, verdict = take_make(Steps(), state, phase, phase[:1])
    assert ops == () and verdict == check(state, phase) and verdict.count == 4
    assert take_make(Steps(), state, phase, phase[1:]) == ((idle,), check(state, (idle,)))


def test_a_break_step_that_would_lose_routes_goes_as_far_as_its_first_part_that_does_not():
    state = build([node("r1", 1, "224.0.0.1"), node("a1", 2), node("r2", 4, "224.0.0.2"),
                   node("b1", 5)],
                  [("a1", "r1"), ("b1", "r2"), ("r1", "r2"), ("a1", "r2")])
    harmless, cutting = DeletePeer("a1-r2", 1), DeletePeer("r1-r2", 1)
    ops, verdict = take_break(Steps(), state, (harmless, cutting))
    assert ops == (harmless,) and verdict.ok
    ops, verdict = take_break(Steps(), state, (cutting, harmless))
    assert ops == () and verdict == check(state, (cutting, harmless))


def test_phases_judge_each_step_on_the_one_before_and_stop_at_the_first_held():
    """...with the detour the daemon would take there: the first break op that loses nothing
    on its own."""
    state = build([node("r1", 1, "224.0.0.1"), node("a1", 2), node("r2", 4, "224.0.0.2"),
                   node("b1", 5)], [("a1", "r1"), ("b1", "r2"), ("r1", "r2")])
    make = (PutPeer("a1-r2", None, session("a1", "r2")),)
    brk = (DeletePeer("r1-r2", 1), DeletePeer("b1-r2", 1), DeletePeer("a1-r1", 1))
    out = list(stepping.phases(state, make, brk, Limits()))
    # The make phase gives a1 a second way to r2; the break step also takes b1's only session,
    # and its first op r1's only way to b1. a1 leaving r1 loses nothing: a1 keeps r2.
    assert [(name, ops, v.ok) for name, ops, v in out] == [
        ("make phase", make, True), ("break step 1", brk, False),
        ("detour", brk[2:], True)]
    cut = list(stepping.phases(state, (), brk[:1], Limits()))
    assert [(name, v.ok) for name, _, v in cut] == [("break step 1", False)]


def test_a_held_step_gives_way_to_the_first_break_op_that_loses_nothing_on_its_own():
    state = build([node("r1", 1, "224.0.0.1"), node("a1", 2), node("r2", 4, "224.0.0.2"),
                   node("b1", 5)],
                  [("a1", "r1"), ("b1", "r2"), ("r1", "r2"), ("a1", "r2")])
    harmless, cutting = DeletePeer("a1-r2", 1), DeletePeer("r1-r2", 1)
    assert take_detour(Steps(), state, (cutting, harmless)) == (
        (harmless,), check(state, (harmless,)))
    assert take_detour(Steps(), state, (cutting,)) == ((), steps.Check())
    # It judges a few ops at most: a held step is judged again at every change.
    many = (cutting,) * stepping.DETOUR + (harmless,)
    assert take_detour(Steps(), state, many) == ((), steps.Check())


def test_a_detour_takes_each_op_of_its_window_that_loses_nothing_with_those_before():
    """a1 and c1 are clients of both RRs. a1 may leave either RR, but not both: the second of
    its deletes stays out, and c1's goes with the first."""
    state = build([node("r1", 1, "224.0.0.1"), node("a1", 2), node("r2", 4, "224.0.0.2"),
                   node("c1", 5)],
                  [("a1", "r1"), ("a1", "r2"), ("c1", "r1"), ("c1", "r2"), ("r1", "r2")])
    a1_off_r2, a1_off_r1, c1_off_r2 = (DeletePeer("a1-r2", 1), DeletePeer("a1-r1", 1),
                                       DeletePeer("c1-r2", 1))
    assert check(state, (a1_off_r1,)).ok and not check(state, (a1_off_r2, a1_off_r1)).ok
    taken, verdict = take_detour(Steps(), state, (a1_off_r2, a1_off_r1, c1_off_r2))
    assert taken == (a1_off_r2, c1_off_r2) and verdict == check(state, taken) and verdict.ok
    assert not lost(state, taken)


def meddled(draw_ops, topology: str) -> tuple[object, Policy]:
    """Three zones of 20 nodes converged in `topology`; then another writer took RR labels
    off (with their cluster IDs), put RR labels on, and stamped one cluster ID on any node,
    as the fault tests' foreign writer does."""
    policy = attrs.evolve(s.POLICY, topology=topology)
    state = state_of([], policy)
    for zone in "abc":
        for i, (key, value) in enumerate(simulate.nodes(zone, range(20)).items()):
            calico.apply(state, key, value, i + 1)
    s.converge(state, policy)
    names = sorted(state.nodes)
    for index, action in draw_ops:
        one = state.nodes[names[index % len(names)]]
        labels = dict(one.labels)
        if action == "unlabel":
            labels.pop(RR, None)
            one = attrs.evolve(one, labels=labels, cluster_id=None)
        elif action == "label":
            one = attrs.evolve(one, labels={**labels, RR: ""})
        else:
            one = attrs.evolve(one, cluster_id="224.0.0.99")
        state.put_node(one)
    return state, policy


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 59), st.sampled_from(["unlabel", "label", "stamp"])),
                min_size=5, max_size=60),
       st.sampled_from(["simple", "zoned", "multi"]))
def test_after_a_foreign_writer_the_steps_and_detours_converge_losing_nothing(meddles, topology):
    """The route check alone can hold a plan for good in such a state: every order its phases
    allow loses routes on the way (found by the fault tests' foreign writer). Taking steps as
    the reconciler does, with a detour whenever a step is held, every plan ends, and nothing
    taken loses a route that reached."""
    state, policy = meddled(meddles, topology)
    planner, judge, limits = Planner(policy), Steps(), Limits(demotions=1)
    for _ in range(300):
        _, plan = planner.plan(state)
        if not plan:
            break
        step = limits.step(plan.make or plan.brk)
        if plan.make:
            ops, _ = take_make(judge, state, plan.make, step)
        else:
            ops, _ = take_break(judge, state, step)
        if not ops:
            ops, _ = take_detour(judge, state, plan.brk)
            event("detour" if ops else "held")
        assert ops, f"held for good at: {step[0]}"
        assert not lost(state, ops)
        outcome(state, ops)
    else:
        raise AssertionError("no convergence")


# -- against the plain simulation ----------------------------------------------------------------

STACKS = st.sampled_from([(4,), (6,), (4, 6)])


def addressed(nodes: list[Node], stack: tuple[int, ...], asns: list[int | None]) -> list[Node]:
    """The nodes with distinct addresses of one stack, some in another AS (eBGP sessions)."""
    out = []
    for i, (one, asn) in enumerate(zip(nodes, asns, strict=False)):
        if one.has_bgp_address:
            one = attrs.evolve(
                one, asn=asn,
                ipv4=ipaddress.IPv4Address(0x0A000001 + i) if 4 in stack else None,
                ipv6=ipaddress.IPv6Address(0xFD00 << 112 | i + 1) if 6 in stack else None)
        out.append(one)
    return out


def rebuild(state, policy: Policy, nodes=None):
    """The same records (or `nodes` instead), indexed for `policy`."""
    new = state_of(state.nodes.values() if nodes is None else nodes, policy)
    new.set_bgp(state.bgp)
    for peer in state.peers.values():
        new.put_peer(peer)
    for host in state.reflectors.values():
        new.put_reflector(host)
    return new


@st.composite
def states(draw, max_size: int = 30):
    """A cluster part of the way to its policy's mesh (any topology, the node-to-node mesh on
    or off, RR hosts, some nodes in another AS), and the policy."""
    policy = draw(s.policies())
    nodes = draw(s.clusters(max_size=max_size))
    asns = draw(st.lists(st.sampled_from([None, None, None, 65001]), min_size=len(nodes),
                         max_size=len(nodes)))
    state = state_of(addressed([fresh(n) for n in nodes], draw(STACKS), asns), policy)
    state.set_bgp(BgpConfig(mesh_enabled=draw(st.booleans())))
    for host in draw(st.lists(s.reflectors(), max_size=2)):
        state.put_reflector(host)
    planner, limits = Planner(policy), Limits(draw(st.integers(1, 4)), 1)
    for _ in range(draw(st.integers(0, 8))):
        _, plan = planner.plan(state)
        if not plan:
            break
        outcome(state, limits.step(plan.make or plan.brk))
    return state, policy


@settings(max_examples=150, deadline=None)
@given(states())
def test_the_pairs_missed_are_the_plain_simulations(drawn):
    """Grouping origins by their AS and loud neighbours finds exactly the pairs that the plain
    simulation, every origin on its own with every speaker, finds; and the judge tells silent
    speakers as the simulation does."""
    state, _ = drawn
    judge = Steps()
    for family in FAMILIES:
        fab = fabric(state, family)
        net = reachability.index_net(fab, None, everyone=False)
        assert steps._view(fab).silent == {n for n, quiet in zip(net.names, net.silent,
                                                                 strict=True) if quiet}
        assert judge.unreachable(state, family) == unreachable(fabric(state, family),
                                                               group=False)


@settings(max_examples=120, deadline=None)
@given(states(), s.policies(), st.builds(Limits, st.integers(1, 4), st.integers(1, 2)))
def test_taking_steps_with_the_check_never_loses_a_route_that_reaches(drawn, policy, limits):
    """From a cluster part of the way to one policy, planning for another (any topology to
    any) and taking steps as the reconciler does (the make step, else the whole phase; the
    break step, else its first half, quarter, ...): every check names exactly what the plain
    simulation finds lost, and no pair that reaches before a step taken misses after it."""
    before, _ = drawn
    state = rebuild(before, policy)
    planner, judge = Planner(policy), Steps()
    for _ in range(200):
        _, plan = planner.plan(state)
        if not plan:
            break
        step = limits.step(plan.make or plan.brk)
        verdict, expected = judge.check(state, step), lost(state, step)
        assert verdict.count == len(expected)
        assert {(loss.family, *pair) for loss in verdict.losses for pair in loss.pairs} <= expected
        if plan.make:
            ops, verdict = take_make(judge, state, plan.make, step)
        else:
            ops, verdict = take_break(judge, state, step)
        event("held" if not ops else "whole phase" if len(ops) > len(step) else
              "part of a step" if len(ops) < len(step) else "step")
        if not ops:
            assert not verdict.ok
            break
        assert verdict.ok and not lost(state, ops)
        outcome(state, ops)
    else:
        raise AssertionError("no convergence")

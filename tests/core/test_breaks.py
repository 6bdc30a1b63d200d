"""The break gate: RRs move to dedicated machines, and the old ones go only once the clients'
sessions with the new ones are reported Established, in an episode seen after they were
configured, for the dwell time."""

from __future__ import annotations

import copy
import ipaddress

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrwatch.core.breaks import Evidence, Fabrics, _after, judge, next_dwell, sightings, step
from rrwatch.core.model import BgpConfig, ClusterState, Node
from rrwatch.core.plan import Planner, SetNode, outcome
from rrwatch.core.reports import Report, Session
from rrwatch.core.selector import parse
from rrwatch.core.sessions import fabric
from tests.support import (
    POLICY,
    RR_LABEL,
    SESSIONS_AT,
    SESSIONS_DWELL,
    ZONE_LABEL,
    clusters,
    configured_all,
    policies,
    rr_host_state,
    session_evidence,
    session_report,
    state_of,
)

AT, DWELL = SESSIONS_AT, SESSIONS_DWELL
evidence, report = session_evidence, session_report


def nodes() -> list[Node]:
    ordinary = [Node(f"n{i}", 1, {ZONE_LABEL: "a"}, ipaddress.IPv4Address(f"10.0.0.{i}"))
                for i in range(1, 9)]
    dedicated = [Node(f"d{i}", 1, {ZONE_LABEL: "a", "dedicated": ""},
                      ipaddress.IPv4Address(f"10.0.1.{i}")) for i in (1, 2)]
    return ordinary + dedicated


def moving() -> tuple[ClusterState, list, set[str], set[str]]:
    """RRs on ordinary nodes, then a policy that keeps them to dedicated machines, its make
    phase done: the state, the break step (the old RRs' demotions), the old and new RRs."""
    state = ClusterState(ZONE_LABEL, RR_LABEL, parse("has(dedicated)"))  # dedicated: not yet
    state.set_bgp(BgpConfig(mesh_enabled=False))
    for node in nodes():
        state.put_node(node)
    planner = Planner(POLICY)
    while (plan := planner.plan(state)[1]):
        outcome(state, plan.make or plan.brk)
    old = {n for n, node in state.nodes.items() if node.cluster_id}
    moved = attrs.evolve(POLICY, exclude=parse("!has(dedicated)"))
    state.reshape(ZONE_LABEL, RR_LABEL, moved.exclude, None)
    planner = Planner(moved)
    while (plan := planner.plan(state)[1]).make:
        outcome(state, plan.make)
    new = {n for n, node in state.nodes.items() if node.cluster_id} - old
    assert old and new and {op.name for op in plan.brk if op.why == "demote"} == old
    return state, list(plan.brk), old, new


def reporting(state: ClusterState, old: set[str], new: set[str], *, new_up: bool,
              revision: int = 5) -> None:
    for rr in old:
        state.put_report(rr, report(state, rr, True), revision)
    for rr in new:
        state.put_report(rr, report(state, rr, new_up), revision)


@pytest.mark.parametrize("mode", ["require", "auto"])
def test_old_rrs_stay_while_the_new_ones_sessions_are_down(mode):
    state, brk, old, new = moving()
    reporting(state, old, new, new_up=False)
    ops, judgement = step(state, brk, evidence(state), mode)
    assert ops == ()
    clients = {n for n in state.nodes if n not in old | new}
    assert {h.speaker for h in judgement.holds} >= clients
    assert {h.rr for h in judgement.holds} == new
    assert {(h.state, h.error) for h in judgement.holds} == {
        ("Active", "Socket: Connection timed out")}


def test_they_go_once_the_new_sessions_are_established_for_the_dwell():
    state, brk, old, new = moving()
    reporting(state, old, new, new_up=True)
    assert step(state, brk, evidence(state, seen_at=95.0), "require")[0] == ()  # 5 s < dwell
    ops, judgement = step(state, brk, evidence(state, seen_at=90.0), "require")
    assert judgement.ok and set(ops) == set(brk)


def test_an_episode_seen_before_the_session_was_configured_does_not_count():
    """A report from before the write that configured the session (revision 5 <= 7) proves
    nothing about the session as it is now."""
    state, brk, old, new = moving()
    reporting(state, old, new, new_up=True, revision=5)
    assert step(state, brk, evidence(state, seen_at=0.0, configured=7), "require")[0] == ()
    assert step(state, brk, evidence(state, seen_at=0.0, configured=4), "require")[0]


def test_require_holds_without_reports_and_auto_goes_on_the_timer():
    state, brk, old, new = moving()
    ops, judgement = step(state, brk, evidence(state), "require")
    assert ops == () and {h.state for h in judgement.holds} == {"not reported"}
    ops, judgement = step(state, brk, evidence(state), "auto")
    assert set(ops) == set(brk) and judgement.ok and judgement.timer
    assert step(state, brk, evidence(state), "off")[0] == tuple(brk)


def test_a_client_with_no_session_up_anywhere_holds_nothing():
    state, brk, old, new = moving()
    reporting(state, old, new, new_up=False)
    down = Report(True, {s: attrs.evolve(v, state="Active") for s, v in
                         report(state, "x", True).sessions.items()})
    for rr in old:
        state.put_report(rr, down, 5)
    assert step(state, brk, evidence(state), "require")[0] == tuple(brk)


def test_sightings_keep_an_episode_while_its_since_holds():
    state, brk, old, new = moving()
    reporting(state, old, new, new_up=True)
    first = sightings(state, {}, 1.0)
    assert sightings(state, first, 50.0) == first
    rr = sorted(new)[0]
    state.put_report(rr, Report(True, {a: attrs.evolve(s, since=AT.replace(hour=13))
                                       for a, s in state.reports[rr].sessions.items()}), 9)
    again = sightings(state, first, 50.0, [rr])
    assert {k: v for k, v in again.items() if k != rr} == {k: v for k, v in first.items()
                                                           if k != rr}
    assert again[rr] and all(up.seen_at == 50.0 and up.revision == 9
                             for up in again[rr].values())
    state.remove_report(rr)
    assert rr not in sightings(state, again, 60.0, [rr])
    assert next_dwell(again, 55.0, DWELL) == 60.0 and next_dwell(again, 60.0, DWELL) is None


@given(st.dictionaries(st.sampled_from([f"n{i}" for i in range(1, 9)] + ["d1", "d2"]),
                       st.tuples(st.booleans(), st.floats(0, 100), st.integers(0, 10)),
                       max_size=10),
       st.sampled_from(["require", "auto"]), st.integers(0, 10))
def test_no_step_leaves_a_speaker_below_its_need(reported, mode, configured):
    """Whatever the reports say, the ops a step lets go leave every speaker that loses a
    session as many verified RR sessions as it needs."""
    state, brk, old, new = moving()
    for rr, (up, _, revision) in reported.items():
        state.put_report(rr, report(state, rr, up), revision)
    seen = {rr: at for rr, (_, at, _) in reported.items()}
    ups = {rr: {a: attrs.evolve(u, seen_at=seen[rr]) for a, u in by_address.items()}
           for rr, by_address in sightings(state, {}, 0.0).items()}
    ev = Evidence(ups, configured_all(state, configured), 100.0, DWELL)
    ops, _ = step(state, brk, ev, mode)
    after = copy.deepcopy(state)
    outcome(after, ops)
    assert judge(state, after, ev, mode).ok
    # The same, counted here from the reports: every speaker that loses a session keeps its
    # need, or had nothing up, or (auto) nothing reported about it.
    old, new = fabric(state, 4), fabric(after, 4)
    for name in new.speakers:
        if old.sessions[name] <= new.sessions[name]:
            continue

        def said(rr: str, name: str = name) -> list[tuple[str, Session]]:
            """What each of rr and `name` that reports on their session says, and who."""
            out = []
            for reporter, other in ((rr, name), (name, rr)):
                report = state.reports.get(reporter)
                found = report and report.sessions.get(str(old.speakers[other].address))
                if found:
                    out.append((reporter, found))
            return out

        def up(rr: str) -> bool:  # every side that reports it says so
            return bool(said(rr)) and all(s.established for _, s in said(rr))

        def verified(rr: str, name: str = name) -> bool:
            if mode == "auto" and not {rr, name} & state.reports.keys():
                return True  # the timer's to judge
            return up(rr) and all(seen.get(who, 100.0) <= 100.0 - DWELL
                                  and reported_at(state, who) > configured
                                  for who, _ in said(rr))

        if not any(up(rr) for rr in old.sessions[name]) or (
                mode == "auto" and not any(said(rr) for rr in old.sessions[name])):
            continue
        keep = new.reflectors_of(name)
        need = min(len(keep), sum(up(rr) for rr in old.reflectors_of(name)))
        assert sum(verified(rr) for rr in keep) >= need, (name, ops)


def reported_at(state: ClusterState, rr: str) -> int:
    return state.report_revisions.get(rr, 0)


@given(clusters(max_size=30), policies(), st.booleans(), st.booleans())
def test_the_state_after_a_step_configures_what_the_model_would(nodes, policy, mesh, hosts):
    """The gate's after-state (the changed nodes and peers copied, the rest shared) configures
    the same sessions as the whole model copied with the ops applied, but none of an RR that
    takes a new cluster ID (BIRD restarts them), and leaves the model as it was."""
    state = rr_host_state() if hosts else state_of([], policy)
    state.reshape(ZONE_LABEL, RR_LABEL, policy.exclude, policy.prefer)
    state.set_bgp(BgpConfig(mesh_enabled=mesh))
    for node in nodes:
        state.put_node(node)
    _, plan = Planner(policy).plan(state)
    ops = plan.make + plan.brk
    before = copy.deepcopy(state)
    whole = copy.deepcopy(state)
    outcome(whole, ops)
    for op in ops:
        if isinstance(op, SetNode) and op.why == "re-id":
            whole.remove_node(op.name)
    after = _after(state, ops)
    for family in (4, 6):
        assert fabric(after, family) == fabric(whole, family)
    assert (state.nodes, state.peers, state.marked, state.zones) == (
        before.nodes, before.peers, before.marked, before.zones)


def test_kept_fabrics_follow_the_model_as_it_changes_in_place():
    """The gate keeps fabrics from one report change to the next; a model changed in place
    (the break step landed) is judged by its own sessions, never by those of its past."""
    state, brk, _, _ = moving()
    fabrics = Fabrics()
    first = fabrics.of(state, 4)
    assert fabrics.of(state, 4) is first  # the same records: kept
    outcome(state, brk)
    assert fabrics.of(state, 4) == fabric(state, 4) != first

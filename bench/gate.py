"""The cost of the break gate while breaks are held, in process (no etcd).

    python -m bench.gate                 100 / 1,000 / 5,000 nodes
    python -m bench.gate 5000 20000      other sizes

For each size: 3 zones of simulated nodes (the simple topology, the node-to-node mesh off) are
converged as the reconciler would; then the RRs move to other nodes (the old ones are
excluded), the promotions land, and every RR reports its sessions, the new RRs' sessions
Active: the demotions are held. Measured then:

G1 per report change: one session of one new RR flips between Active and Established, and the
   leader does what it does for that change: `Verifier.observe` (sightings) and
   `Verifier.gate` (the judgement of the break step), beside a plan of the same state for scale.
G2 `rrwatch status`'s listing of held breaks (cli.commands._held: a plan, sightings of every
   report, the judgement).

No figure is asserted; docs/performance.md records a run.
"""

from __future__ import annotations

import datetime
import logging
import statistics
import sys
import time
from collections.abc import Callable

import attrs
import trio

from rrwatch import config
from rrwatch.cli.commands import _held
from rrwatch.core import calico
from rrwatch.core.model import ClusterState
from rrwatch.core.plan import Planner, outcome
from rrwatch.core.reports import Report, Session
from rrwatch.core.sessions import fabric
from rrwatch.daemon.live import Live
from rrwatch.daemon.verifier import Verifier
from rrwatch.testing import simulate

ZONES = ("a", "b", "c")
SIZES = (100, 1000, 5000)
CHANGES = 20  # report changes timed per size, at most
BUDGET = 30.0  # seconds of gates timed per size, at most (but 3 changes at least)
DWELL = 1e9  # nothing completes its dwell while measured: the holds stay as they are
AT = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC)


@attrs.frozen
class Held:
    """A cluster whose RR move is held, and the leader's view of it."""

    state: ClusterState
    settings: object
    verifier: Verifier
    ops: tuple
    new: tuple[str, ...]  # the new RRs, which report their sessions Active


def timed(call: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


def held_cluster(size: int) -> Held:
    conf = config.load({"ROUTE_REFLECTOR_ZONE_LABEL": simulate.ZONE_LABEL,
                        "RRWATCH_EXCLUDE": "has(old)", "RRWATCH_VERIFY_SESSIONS": "require"})
    live = Live(conf)
    state = live.records.new_state()
    revision = 1
    items = {calico.BGP_CONFIG: simulate.mesh_off()}
    for zone in ZONES:
        items.update(simulate.nodes(zone, range(size // len(ZONES))))
    for key, value in items.items():
        calico.apply(state, key, value, revision)
        revision += 1
    planner = Planner(live.settings.policy)
    while plan := planner.plan(state)[1]:
        outcome(state, plan.make or plan.brk)
    old = sorted(state.marked)
    for name in old:  # the RRs move: the old ones are excluded from now on
        node = state.nodes[name]
        state.put_node(attrs.evolve(node, labels={**node.labels, "old": ""}))
    verifier = Verifier("require", DWELL)
    plan = planner.plan(state)[1]
    while plan.make:
        before = verifier.pairs(state)
        outcome(state, plan.make)
        revision += 1
        verifier.made(state, before, plan.make, revision)
        plan = planner.plan(state)[1]
    new = tuple(sorted(state.marked - set(old)))
    fab = fabric(state, 4)
    for rr in (*old, *new):  # every RR reports every session it has
        revision += 1
        state.put_report(rr, Report(True, {
            str(fab.speakers[peer].address): Session("Active" if rr in new else "Established",
                                                     AT) for peer in fab.sessions[rr]}),
            revision)
    ops = live.settings.limits.step(plan.brk)
    assert ops, "no break to hold"
    return Held(state, live.settings, verifier, ops, new)


def flip(held: Held, i: int) -> None:
    """One report change: a session of a new RR goes Established, or back to Active."""
    rr = held.new[i % len(held.new)]
    report = held.state.reports[rr]
    address = sorted(report.sessions)[i % len(report.sessions)]
    session = report.sessions[address]
    state = "Active" if session.established else "Established"
    since = AT + datetime.timedelta(seconds=i + 1)
    sessions = {**report.sessions, address: attrs.evolve(session, state=state, since=since)}
    held.state.put_report(rr, Report(True, sessions), held.state.report_revisions[rr] + 1)


async def measure(size: int) -> dict:
    built = time.perf_counter()
    held = held_cluster(size)
    build_s = time.perf_counter() - built
    held.verifier.observe(held.state)
    assert not await held.verifier.gate(held.state, held.ops), "the break was not held"
    planner = Planner(held.settings.policy)  # type: ignore[attr-defined]
    gate, observe = [], []
    for i in range(CHANGES):
        flip(held, i)
        observe += timed(lambda: held.verifier.observe(held.state), 1)
        started = time.perf_counter()  # the copy, the thread and the judgement
        await held.verifier.gate(held.state, held.ops)
        gate.append(time.perf_counter() - started)
        if i >= 2 and sum(gate) > BUDGET:
            break
    plan = timed(lambda: planner.plan(held.state), 5)
    status = timed(lambda: _held(held.state, held.settings, "require"), 3)  # type: ignore
    return {"nodes": len(held.state.nodes), "rrs": len(held.state.marked),
            "reports": len(held.state.reports), "ops": len(held.ops),
            "holds": len(held.verifier.holds), "build_s": build_s,
            "observe": statistics.median(observe), "gate": statistics.median(gate),
            "gate_max": max(gate), "plan": statistics.median(plan),
            "status": statistics.median(status)}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def main(argv: list[str] | None = None) -> None:
    logging.getLogger("rrwatch").setLevel(logging.ERROR)  # each hold is logged once, as WARNING
    sizes = tuple(int(a) for a in (sys.argv[1:] if argv is None else argv)) or SIZES
    rows = [trio.run(measure, size) for size in sizes]
    print("| nodes | RRs | reports | break ops held | holds | observe ms | gate ms (max) |"
          " plan ms | gate / plan | status held-break listing ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['nodes']} | {r['rrs']} | {r['reports']} | {r['ops']} | {r['holds']} |"
              f" {ms(r['observe'])} | {ms(r['gate'])} ({ms(r['gate_max'])}) |"
              f" {ms(r['plan'])} | {r['gate'] / r['plan']:.1f} | {ms(r['status'])} |")
    for small, large in zip(rows, rows[1:], strict=False):
        times = large["nodes"] / small["nodes"]
        print(f"{small['nodes']} -> {large['nodes']} nodes (x{times:.0f}):"
              f" gate x{large['gate'] / small['gate']:.1f},"
              f" status x{large['status'] / small['status']:.1f}")


if __name__ == "__main__":
    main()

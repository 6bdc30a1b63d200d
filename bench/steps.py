"""The cost of judging plan steps (core/steps.py) against the cost of a plan, in process.

    python -m bench.steps                  100 / 1,000 / 5,000 nodes (about two minutes)
    python -m bench.steps --sizes 1000     one size

For each size, 3 zones of nodes with IPv4 and IPv6 addresses and the node-to-node mesh off:

- first start: `multi` from nothing, taken as the reconciler takes it (steps of 200 node
  writes, each judged with `stepping.take_make` before it is applied), against the plan that made
  each step; and `verify`, the whole simulation, once on the converged cluster;
- node add: on the converged cluster, a new node's plan (its client labels) and the judgement
  of that one-op step, as each event costs the daemon; the judge has seen the cluster before,
  as the daemon's has;
- RR loss: the converged cluster loses an RR; the plan and the judgement of its make step
  (a promotion: the core changes, so every origin is simulated again).

docs/performance.md records a run.
"""

from __future__ import annotations

import argparse
import ipaddress
import platform
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

from rrwatch.core import stepping, steps
from rrwatch.core.model import BgpConfig, ClusterState, Node, RRLabel
from rrwatch.core.plan import Limits, Planner, outcome
from rrwatch.core.policy import Policy
from rrwatch.core.reachability import verify

RR = RRLabel("calico-route-reflector", "")
ZONE = "topology.kubernetes.io/zone"
ZONES = ("a", "b", "c")
T = TypeVar("T")


def node(i: int) -> Node:
    zone = ZONES[i % len(ZONES)]
    return Node(f"node-{zone}-{i:05d}", 1, {ZONE: zone}, ipaddress.IPv4Address(0x0A000001 + i),
                ipaddress.IPv6Address(0xFD00 << 112 | i + 1))


def cluster(size: int, mesh: bool = False) -> ClusterState:
    state = ClusterState(ZONE, RR)
    state.set_bgp(BgpConfig(mesh_enabled=mesh))
    for i in range(size):
        state.put_node(node(i))
    return state


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def timed(call: Callable[..., T], *args: object) -> tuple[T, float]:
    started = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - started


def first_start(size: int, policy: Policy, limits: Limits, mesh: bool = False) -> dict:
    """Converge from nothing, judging every step; the plans' and the judgements' times."""
    state, planner, judge = cluster(size, mesh), Planner(policy), steps.Steps()
    plans, checks, whole = [], [], 0
    while True:
        (_, plan), took = timed(planner.plan, state)
        plans.append(took)
        if not plan:
            break
        step = limits.step(plan.make or plan.brk)
        if plan.make:
            (ops, verdict), took = timed(stepping.take_make, judge, state, plan.make, step)
            whole += len(ops) > len(step)
        else:
            (ops, verdict), took = timed(stepping.take_break, judge, state, step)
        checks.append(took)
        if not ops:
            raise AssertionError(f"held at {size} nodes: {verdict}")
        outcome(state, ops)
    _, verified = timed(verify, state)
    return {"state": state, "judge": judge, "planner": planner, "plans": plans,
            "checks": checks, "whole": whole, "verify": verified}


def events(run: dict, size: int, count: int = 20) -> dict:
    """Node adds one at a time on the converged cluster, each planned and judged, then
    removed again; then one RR lost."""
    state, planner, judge = run["state"], run["planner"], run["judge"]
    limits = Limits()
    plans, checks = [], []
    for i in range(size, size + count):
        state.put_node(node(i))
        (_, plan), took = timed(planner.plan, state)
        plans.append(took)
        _, took = timed(stepping.take_make, judge, state, plan.make, limits.step(plan.make))
        checks.append(took)
        state.remove_node(node(i).name)
        planner.plan(state)
    rr = sorted(state.marked)[0]
    state.remove_node(rr)
    (_, plan), rr_plan = timed(planner.plan, state)
    _, rr_check = timed(stepping.take_make, judge, state, plan.make, limits.step(plan.make))
    return {"plan": statistics.median(plans), "check": statistics.median(checks),
            "rr_plan": rr_plan, "rr_check": rr_check}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    args = parser.parse_args()
    policy, limits = Policy(rr_label=RR, topology="multi"), Limits()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("| nodes | first start: steps | plan per step ms (median / max) | judgement per step ms"
          " (median / max) | judgement / plan | whole phases taken | verify ms |"
          " node add: plan ms | node add: judgement ms | judgement / plan |"
          " RR loss: plan ms | RR loss: judgement ms |")
    print("|" + "---:|" * 12)
    for size in args.sizes:
        run = first_start(size, policy, limits)
        event = events(run, size)
        plans, checks = run["plans"][:-1], run["checks"]
        print(f"| {size} | {len(checks)} | {ms(statistics.median(plans))} / {ms(max(plans))} |"
              f" {ms(statistics.median(checks))} / {ms(max(checks))} |"
              f" {statistics.median(checks) / statistics.median(plans):.0f}x | {run['whole']} |"
              f" {ms(run['verify'])} | {ms(event['plan'])} | {ms(event['check'])} |"
              f" {event['check'] / event['plan']:.0f}x | {ms(event['rr_plan'])} |"
              f" {ms(event['rr_check'])} |", flush=True)
    # The node-to-node mesh on: a first start's cut steps would lose routes (promoted RRs
    # leave the mesh), so the whole make phase goes at once; the mesh is O(nodes²) sessions.
    for size in [s for s in args.sizes if s <= 1000]:
        run = first_start(size, policy, limits, mesh=True)
        print(f"mesh on, {size} nodes: {len(run['checks'])} steps, {run['whole']} whole make"
              f" phases; judgements {', '.join(ms(c) for c in run['checks'])} ms; verify"
              f" {ms(run['verify'])} ms", flush=True)


if __name__ == "__main__":
    main()

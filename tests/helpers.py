"""Test helpers for the pure core: build states, and converge them as the reconciler would."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rrwatch.core.model import ClusterState, Node
from rrwatch.core.plan import Limits, Planner, outcome
from rrwatch.core.policy import Policy
from tests.strategies import RR_LABEL, ZONE_LABEL


def state_of(nodes: Iterable[Node], policy: Policy | None = None) -> ClusterState:
    state = ClusterState(ZONE_LABEL, RR_LABEL, policy and policy.exclude,
                         policy and policy.prefer)
    for node in nodes:
        state.put_node(node)
    return state


def converge(state: ClusterState, policy: Policy, limits: Limits = Limits(),
             after_each: Callable[[ClusterState], None] | None = None) -> int:
    """Plan and carry out steps, as the reconciler does, until nothing is left; the step count.

    `after_each` is called after every single operation, to check invariants mid-plan.
    """
    planner = Planner(policy)
    for steps in range(1000):
        _, plan = planner.plan(state)
        if not plan:
            return steps
        for op in limits.step(plan.make or plan.brk):
            outcome(state, [op])
            if after_each:
                after_each(state)
    raise AssertionError("no convergence after 1000 steps")

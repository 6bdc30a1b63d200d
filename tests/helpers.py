"""Test helpers for the pure core: build states, and carry out plans as etcd would."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from rrwatch.mesh import Policy
from rrwatch.model import CLIENT_LABEL_PREFIX, ClusterState, Node, Peer
from rrwatch.plan import DeletePeer, Limits, Op, Planner, PutPeer, SetNode
from tests.strategies import RR_LABEL, ZONE_LABEL


def state_of(nodes: Iterable[Node], policy: Policy | None = None) -> ClusterState:
    state = ClusterState(ZONE_LABEL, RR_LABEL, policy and policy.exclude,
                         policy and policy.prefer)
    for node in nodes:
        state.put_node(node)
    return state


def carry_out(state: ClusterState, ops: Iterable[Op]) -> None:
    """Apply ops to the model the way their writes would come back through the watch."""
    for op in ops:
        if isinstance(op, SetNode):
            node = state.nodes[op.name]
            labels = {k: v for k, v in node.labels.items()
                      if k != RR_LABEL.key and not k.startswith(CLIENT_LABEL_PREFIX)}
            if op.cluster is not None:
                labels[RR_LABEL.key] = RR_LABEL.value
            labels.update(dict.fromkeys(op.clients, ""))
            state.put_node(attrs.evolve(node, cluster_id=op.cluster, labels=labels,
                                        revision=node.revision + 1))
        elif isinstance(op, PutPeer):
            state.put_peer(Peer(op.name, (op.revision or 0) + 1, True, op.spec))
        elif isinstance(op, DeletePeer):
            state.remove_peer(op.name)


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
            carry_out(state, [op])
            if after_each:
                after_each(state)
    raise AssertionError("no convergence after 1000 steps")

"""Test helpers for the pure core: build states, and carry out plans as etcd would."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from rrwatch.model import ClusterState, Node, Peer
from rrwatch.plan import DeletePeer, Op, PutPeer, SetNode
from tests.strategies import RR_LABEL, ZONE_LABEL


def state_of(nodes: Iterable[Node]) -> ClusterState:
    state = ClusterState(ZONE_LABEL, RR_LABEL)
    for node in nodes:
        state.put_node(node)
    return state


def carry_out(state: ClusterState, ops: Iterable[Op]) -> None:
    """Apply ops to the model the way their writes would come back through the watch."""
    for op in ops:
        if isinstance(op, SetNode):
            node = state.nodes[op.name]
            labels = {k: v for k, v in node.labels.items() if k != RR_LABEL.key}
            if op.cluster is not None:
                labels[RR_LABEL.key] = RR_LABEL.value
            state.put_node(attrs.evolve(node, cluster_id=op.cluster, labels=labels,
                                        revision=node.revision + 1))
        elif isinstance(op, PutPeer):
            state.put_peer(Peer(op.name, (op.revision or 0) + 1, True, op.spec))
        elif isinstance(op, DeletePeer):
            state.remove_peer(op.name)

"""The difference between the desired mesh and the model, as guarded operations. Pure code.

A plan has two phases, so that it is make-before-break: `make` promotes nodes, writes peers and
gives clients their new RRs; `brk` gives RRs new cluster IDs, takes clients off old RRs, deletes
peers and demotes nodes, and the reconciler runs it only once `make` is empty and the new
sessions have had time to settle. A client therefore always keeps an RR session that is up.
Every operation names the revision it was planned from; a write that finds another revision
fails and the plan is made again from the next event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeGuard

import attrs

from rrwatch.core import calico
from rrwatch.core.mesh import Mesh, client_label, desired
from rrwatch.core.model import (
    CLIENT_LABEL_PREFIX,
    ClusterState,
    Peer,
    client_labels,
    owned_labels,
    rank,
)
from rrwatch.core.policy import Policy


@attrs.frozen
class SetNode:
    """Set the fields rrwatch owns on a node: cluster ID and RR label, and client labels.

    `why` is "promote" (cluster set), "re-id" (an RR's cluster ID changes), "demote" (cluster
    None: back to a client) or "peer" (a client's labels only). Each but "peer" changes the
    node's BIRD protocols, which BIRD restarts: a re-ID takes the RR from its clients until its
    sessions are up again, so it is a break, paced like a demotion.
    """

    name: str
    revision: int
    cluster: str | None
    clients: frozenset[str] = frozenset()
    why: str = "peer"

    @property
    def key(self) -> str:
        return calico.NODES + self.name

    def __str__(self) -> str:
        if self.why == "promote":
            return f"promote {self.name} (cluster ID {self.cluster})"
        if self.why == "re-id":
            return f"re-ID {self.name} (cluster ID {self.cluster}; its sessions restart)"
        if self.why == "demote":
            return f"demote {self.name}"
        ids = ", ".join(sorted(label[len(CLIENT_LABEL_PREFIX):] for label in self.clients))
        return f"peer {self.name} with {ids or 'no RR by label'}"


@attrs.frozen
class PutPeer:
    """Create (revision None) or update an owned BGPPeer."""

    name: str
    revision: int | None
    spec: Mapping[str, object]

    @property
    def key(self) -> str:
        return calico.PEERS + self.name

    def __str__(self) -> str:
        return f"{'create' if self.revision is None else 'update'} BGPPeer {self.name}"


@attrs.frozen
class DeletePeer:
    name: str
    revision: int

    @property
    def key(self) -> str:
        return calico.PEERS + self.name

    def __str__(self) -> str:
        return f"delete BGPPeer {self.name}"


Op = SetNode | PutPeer | DeletePeer
# Ops that take an RR's sessions down (BIRD restarts them): at most Limits.demotions a step.
PACED = ("demote", "re-id")


def reids(ops: Iterable[Op]) -> frozenset[str]:
    """The RRs that `ops` give a new cluster ID: BIRD restarts each of their sessions."""
    return frozenset(op.name for op in ops if isinstance(op, SetNode) and op.why == "re-id")


@attrs.frozen
class Limits:
    """Churn limit per step: the reconciler applies at most this much, then plans again."""

    node_writes: int = 200
    demotions: int = 1

    def step(self, ops: tuple[Op, ...]) -> tuple[Op, ...]:
        """The first ops within the limits, in plan order (peer writes are not limited)."""
        out: list[Op] = []
        writes = demotions = 0
        for i, op in enumerate(ops):
            if isinstance(op, SetNode):
                if writes >= self.node_writes:
                    # The rest of a large plan (every client, on a first start): only its peer
                    # writes still fit.
                    out += (op for op in ops[i:] if not isinstance(op, SetNode))
                    break
                if op.why in PACED and demotions >= self.demotions:
                    continue
                writes += 1
                demotions += op.why in PACED
            out.append(op)
        return tuple(out)


@attrs.frozen
class Plan:
    make: tuple[Op, ...] = ()
    brk: tuple[Op, ...] = ()
    # Desired peers whose name is taken by a BGPPeer rrwatch does not own or cannot read: left
    # alone, reported.
    blocked: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.make or self.brk)


def make_plan(state: ClusterState, mesh: Mesh, clients: Iterable[str] | None = None) -> Plan:
    """The operations that take the state to the mesh, make before break.

    `make`: promotions (preferred nodes first), peer writes, then clients gaining RRs (keeping
    the RRs they leave, while those live). `brk`: RRs taking a new cluster ID, clients
    dropping RRs, peer deletes, then demotions (preferred nodes last). `clients` limits which other
    nodes are checked for client labels (default: all); the Planner passes only those that may
    have changed.
    """
    label = state.rr_label
    make: list[Op] = []
    brk: list[Op] = []
    reids: list[Op] = []
    for name in sorted(mesh.reflectors, key=lambda n: state.candidate(state.nodes[n])):
        node = state.nodes[name]
        cluster = mesh.reflectors[name]
        if node.cluster_id not in (None, cluster):
            reids.append(SetNode(name, node.revision, cluster, why="re-id"))
        elif node.cluster_id != cluster or not label.on(node) or client_labels(node):
            make.append(SetNode(name, node.revision, cluster, why="promote"))

    demotions: list[Op] = []
    for name in state.marked - mesh.reflectors.keys():
        node = state.nodes[name]
        demotions.append(SetNode(name, node.revision, None, mesh.client_labels(state, name),
                                 why="demote"))
    demotions.sort(key=lambda op: (state.preferred(state.nodes[op.name]), rank(op.name)))

    live = {state.nodes[n].cluster_id for n in state.marked} - {None}
    for name in sorted(state.nodes if clients is None else clients):
        client = state.nodes.get(name)
        if client is None or name in mesh.reflectors or name in state.marked:
            continue
        want, have = mesh.client_labels(state, name), client_labels(client)
        if want == have:
            continue
        keep = {lab for lab in have - want if lab[len(CLIENT_LABEL_PREFIX):] in live}
        if want | keep != have:
            make.append(SetNode(name, client.revision, None, frozenset(want | keep)))
        else:
            brk.append(SetNode(name, client.revision, None, want))

    blocked = []
    for name, spec in sorted(mesh.peers.items()):
        peer = state.peers.get(name)
        if calico.PEERS + name in state.unreadable:
            blocked.append(name)
        elif peer is None:
            make.append(PutPeer(name, None, spec))
        elif not peer.owned:
            blocked.append(name)
        elif dict(peer.spec) != dict(spec):
            make.append(PutPeer(name, peer.revision, spec))
    for name, peer in sorted(state.peers.items()):
        if peer.owned and name not in mesh.peers:
            brk.append(DeletePeer(name, peer.revision))
    make.sort(key=_make_order)
    # Re-IDs first: while the clients still have every session the make phase left them (in
    # `simple` -> `multi`, the peer that gives every client every RR), an RR restarting its
    # sessions takes no route away, and after the peer deletes it would (core.steps).
    return Plan(make=tuple(make), brk=tuple(reids + brk + demotions), blocked=tuple(blocked))


def outcome(state: ClusterState, ops: Iterable[Op]) -> None:
    """Apply ops to the model as their writes will come back through the watch (for `plan`'s
    check of the result, and for tests)."""
    for op in ops:
        if isinstance(op, SetNode):
            node = state.nodes[op.name]
            labels = owned_labels(node.labels, state.rr_label, op.cluster, op.clients,
                                  node.rr_label)
            state.put_node(attrs.evolve(
                node, cluster_id=op.cluster, labels=labels, revision=node.revision + 1,
                rr_label=None if op.cluster is None else state.rr_label.key))
        elif isinstance(op, PutPeer):
            state.put_peer(Peer(op.name, (op.revision or 0) + 1, True, op.spec))
        else:
            state.remove_peer(op.name)


def _make_order(op: Op) -> int:
    """Promotions, then peers, then clients: each client label finds its RR ready."""
    if isinstance(op, SetNode):
        return 0 if op.why == "promote" else 2
    return 1


class Planner:
    """Plans from a changing ClusterState, checking client labels in proportion to the change.

    A client's desired labels depend only on the node itself and on the set of RRs, so while
    the RRs stay the same only the nodes that changed are checked; the client-label ops of the
    others carry over from the last plan. When an RR's cluster ID comes or goes (a promotion
    lands), only the clients whose labels name that ID are checked again. On a first start in
    `multi`, where every node needs a write, each step of the reconciler therefore costs what
    it writes, not the cluster.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._key: object = None
        self._live: frozenset[str] = frozenset()  # cluster IDs that RR nodes hold
        self._make: dict[str, SetNode] = {}  # client-label ops of the last plan, by node
        self._brk: dict[str, SetNode] = {}

    def plan(self, state: ClusterState) -> tuple[Mesh, Plan]:
        mesh = desired(state, self.policy)
        key = (mesh.assignment, frozenset(mesh.reflectors))
        live = frozenset(c for n in state.marked if (c := state.nodes[n].cluster_id) is not None)
        changed = state.take_changed()
        if key != self._key:
            self._key, self._make, self._brk = key, {}, {}
            plan = make_plan(state, mesh)
        else:
            # A client keeps labels of live RRs while it gains new ones (make_plan's `keep`).
            flipped = {client_label(cluster) for cluster in live ^ self._live}
            if flipped:
                changed |= {name for name, node in state.nodes.items()
                            if not flipped.isdisjoint(node.labels)}
            for name in changed:
                self._make.pop(name, None)
                self._brk.pop(name, None)
            plan = make_plan(state, mesh, changed)
        self._live = live
        make = [op for op in plan.make if not _client_op(op)]
        brk = [op for op in plan.brk if not _client_op(op)]
        self._make.update((op.name, op) for op in plan.make if _client_op(op))
        self._brk.update((op.name, op) for op in plan.brk if _client_op(op))
        # Clients last in make and first in brk, as make_plan puts them; those checked again
        # go after the others, since sorting them all again would cost the cluster each step.
        plan = attrs.evolve(plan, make=(*make, *self._make.values()),
                            brk=(*self._brk.values(), *brk))
        return mesh, plan


def _client_op(op: Op) -> TypeGuard[SetNode]:
    return isinstance(op, SetNode) and op.why == "peer"

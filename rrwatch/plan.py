"""The difference between the desired mesh and the model, as guarded operations. Pure code.

A plan has two phases, so that it is make-before-break: `make` promotes nodes and writes peers;
`brk` demotes nodes and deletes peers, and the reconciler runs it only once `make` is empty and
the new sessions have had time to settle. A client therefore always keeps an RR session.
Every operation names the revision it was planned from; a write that finds another revision
fails and the plan is made again from the next event.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from rrwatch import calico
from rrwatch.mesh import Mesh
from rrwatch.model import ClusterState


@attrs.frozen
class SetNode:
    """Promote a node (cluster ID + RR label) or, with cluster None, demote it (neither)."""

    name: str
    revision: int
    cluster: str | None

    @property
    def key(self) -> str:
        return calico.NODES + self.name

    def __str__(self) -> str:
        return f"promote {self.name} ({self.cluster})" if self.cluster else f"demote {self.name}"


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


@attrs.frozen
class Plan:
    make: tuple[Op, ...] = ()
    brk: tuple[Op, ...] = ()
    # Desired peers whose name is taken by a BGPPeer rrwatch does not own: left alone, reported.
    blocked: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.make or self.brk)


def make_plan(state: ClusterState, mesh: Mesh) -> Plan:
    label = state.rr_label
    make: list[Op] = []
    brk: list[Op] = []
    for name in sorted(mesh.reflectors):
        node = state.nodes[name]
        cluster = mesh.reflectors[name]
        if node.cluster_id != cluster or not label.on(node):
            make.append(SetNode(name, node.revision, cluster))
    for name in sorted(state.marked - mesh.reflectors.keys()):
        brk.append(SetNode(name, state.nodes[name].revision, None))

    blocked = []
    for name, spec in sorted(mesh.peers.items()):
        peer = state.peers.get(name)
        if peer is None:
            make.append(PutPeer(name, None, spec))
        elif not peer.owned:
            blocked.append(name)
        elif dict(peer.spec) != dict(spec):
            make.append(PutPeer(name, peer.revision, spec))
    for name, peer in sorted(state.peers.items()):
        if peer.owned and name not in mesh.peers:
            brk.append(DeletePeer(name, peer.revision))
    return Plan(make=tuple(make), brk=tuple(brk), blocked=tuple(blocked))

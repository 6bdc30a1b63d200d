"""The in-memory model of the cluster: parsed values, and the indexed state that events update.

Pure code: no I/O, no trio. One task owns a ClusterState and feeds it events; the indexes are
kept up to date on every event so that planning costs O(zones + route reflectors), not O(nodes).
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
from collections.abc import Iterator, Mapping

import attrs

DEFAULT_AS = 64512

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def rank(name: str) -> bytes:
    """A node's place in the deterministic order that RRs are chosen in.

    A hash rather than the name, so that choice does not follow naming schemes (racks, batches).
    """
    return hashlib.blake2b(name.encode(), digest_size=8).digest()


@attrs.frozen
class Node:
    """A Calico node, reduced to what route reflection needs."""

    name: str
    revision: int
    labels: Mapping[str, str] = attrs.field(factory=dict)
    ipv4: ipaddress.IPv4Address | None = None
    ipv6: ipaddress.IPv6Address | None = None
    asn: int | None = None
    cluster_id: str | None = None

    @property
    def has_bgp_address(self) -> bool:
        return self.ipv4 is not None or self.ipv6 is not None


@attrs.frozen
class Reflector:
    """An external route reflector registered under /calico/bgp/v1/rr_v4|rr_v6 (seed 004)."""

    key: str
    revision: int
    ip: IPAddress
    cluster_id: str | None = None


@attrs.frozen
class Peer:
    """A BGPPeer. `owned` peers carry rrwatch's ownership label; no others are ever written."""

    name: str
    revision: int
    owned: bool
    spec: Mapping[str, object] = attrs.field(factory=dict)


@attrs.frozen
class BgpConfig:
    """The default BGPConfiguration (absent: mesh on, AS 64512)."""

    asn: int = DEFAULT_AS
    mesh_enabled: bool = True
    revision: int = 0


@attrs.frozen
class RRLabel:
    """The node label that marks route reflectors, e.g. ``calico-route-reflector=``."""

    key: str
    value: str

    def on(self, node: Node) -> bool:
        return node.labels.get(self.key) == self.value


@attrs.define
class ZoneIndex:
    """The eligible nodes of one zone, kept sorted by rank so the best candidates come first."""

    eligible: list[tuple[bytes, str]] = attrs.field(factory=list)

    def add(self, name: str) -> None:
        bisect.insort(self.eligible, (rank(name), name))

    def remove(self, name: str) -> None:
        entry = (rank(name), name)
        i = bisect.bisect_left(self.eligible, entry)
        if i < len(self.eligible) and self.eligible[i] == entry:
            del self.eligible[i]

    def __len__(self) -> int:
        return len(self.eligible)

    def names(self) -> Iterator[str]:
        return (name for _, name in self.eligible)


@attrs.define
class ClusterState:
    """Everything rrwatch knows about the cluster, updated one event at a time.

    `marked` holds the nodes that carry any field rrwatch owns (a cluster ID or the RR label):
    the current route reflectors, and any stale marks that a plan must clear. It stays small.
    """

    zone_label: str
    rr_label: RRLabel
    nodes: dict[str, Node] = attrs.field(factory=dict)
    peers: dict[str, Peer] = attrs.field(factory=dict)
    reflectors: dict[str, Reflector] = attrs.field(factory=dict)
    bgp: BgpConfig = attrs.field(factory=BgpConfig)
    zones: dict[str, ZoneIndex] = attrs.field(factory=dict)
    marked: set[str] = attrs.field(factory=set)

    def zone_of(self, node: Node) -> str:
        return node.labels.get(self.zone_label, "") if self.zone_label else ""

    def eligible(self, node: Node) -> bool:
        return node.has_bgp_address

    def is_marked(self, node: Node) -> bool:
        return node.cluster_id is not None or self.rr_label.key in node.labels

    def put_node(self, node: Node) -> None:
        self.remove_node(node.name)
        self.nodes[node.name] = node
        if self.eligible(node):
            self.zones.setdefault(self.zone_of(node), ZoneIndex()).add(node.name)
        if self.is_marked(node):
            self.marked.add(node.name)

    def remove_node(self, name: str) -> None:
        old = self.nodes.pop(name, None)
        if old is None:
            return
        self.marked.discard(name)
        if self.eligible(old):
            zone = self.zone_of(old)
            index = self.zones[zone]
            index.remove(name)
            if not index:
                del self.zones[zone]

    def put_peer(self, peer: Peer) -> None:
        self.peers[peer.name] = peer

    def remove_peer(self, name: str) -> None:
        self.peers.pop(name, None)

    def put_reflector(self, reflector: Reflector) -> None:
        self.reflectors[reflector.key] = reflector

    def remove_reflector(self, key: str) -> None:
        self.reflectors.pop(key, None)

    def set_bgp(self, config: BgpConfig | None) -> None:
        self.bgp = config if config is not None else BgpConfig()

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

from rrwatch.core.reports import Report
from rrwatch.core.selector import Selector
from rrwatch.core.validate import speaker_problem

DEFAULT_AS = 64512

# Labels rrwatch owns on client nodes in the `multi` topology: `rr.rrwatch.io/<cluster ID>` means
# "peer with the route reflector of that cluster ID". Cluster IDs are valid label names.
CLIENT_LABEL_PREFIX = "rr.rrwatch.io/"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    rr_label: str | None = None  # the RR label key rrwatch set here, from the node's annotation

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
    disowned: bool = False  # carries the ownership label outside rrwatch's name prefix


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


def foreign_label(node: Node, key: str) -> bool:
    """`node` carries label `key` and rrwatch did not put it there: no annotation of rrwatch's
    names it, and the node is no route reflector (those rrwatch marked before it kept the
    annotation carry a cluster ID beside the label)."""
    return key in node.labels and node.rr_label != key and node.cluster_id is None


def client_labels(node: Node) -> frozenset[str]:
    """The `multi` client labels a node carries (keys; their values are empty)."""
    return frozenset(key for key in node.labels if key.startswith(CLIENT_LABEL_PREFIX))


def owned_labels(
    labels: Mapping[str, str], rr_label: RRLabel, cluster: str | None, clients: frozenset[str],
    marked_with: str | None = None,
) -> dict[str, str]:
    """`labels` with the ones rrwatch owns set: the RR label on a route reflector (`cluster`
    set), and exactly `clients` as client labels; every other label as it was.

    `marked_with` is the RR label key rrwatch set on this node (its annotation): that key is
    rrwatch's to remove, and no other. Nodes marked before the annotation existed have none:
    their key is taken to be the RR label's."""
    mine = rr_label.key if marked_with is None else marked_with
    out = {k: v for k, v in labels.items()
           if k != mine and not k.startswith(CLIENT_LABEL_PREFIX)}
    if cluster is not None:
        out[rr_label.key] = rr_label.value
    out.update(dict.fromkeys(clients, ""))
    return out


# A candidate's place in its zone: preferred nodes first, then by rank.
Candidate = tuple[bool, bytes, str]


@attrs.define
class ZoneIndex:
    """The eligible nodes of one zone, kept sorted so that the best candidates come first."""

    eligible: list[Candidate] = attrs.field(factory=list)

    def add(self, entry: Candidate) -> None:
        bisect.insort(self.eligible, entry)

    def remove(self, entry: Candidate) -> None:
        i = bisect.bisect_left(self.eligible, entry)
        if i < len(self.eligible) and self.eligible[i] == entry:
            del self.eligible[i]

    def __len__(self) -> int:
        return len(self.eligible)

    def names(self) -> Iterator[str]:
        return (name for _, _, name in self.eligible)


@attrs.define
class ClusterState:
    """Everything rrwatch knows about the cluster, updated one event at a time.

    `exclude` takes nodes out of the running for route reflector; `prefer` puts nodes (dedicated
    RR machines) ahead of the others. `marked` holds the nodes that carry a cluster ID or the RR
    label: the current route reflectors, and any stale marks that a plan must clear. It stays
    small. `changed` collects the names of nodes put or removed, for incremental planning.
    """

    zone_label: str
    rr_label: RRLabel
    exclude: Selector | None = None
    prefer: Selector | None = None
    nodes: dict[str, Node] = attrs.field(factory=dict)
    peers: dict[str, Peer] = attrs.field(factory=dict)
    reflectors: dict[str, Reflector] = attrs.field(factory=dict)
    bgp: BgpConfig = attrs.field(factory=BgpConfig)
    zones: dict[str, ZoneIndex] = attrs.field(factory=dict)
    speakers: dict[str, int] = attrs.field(factory=dict)  # zone -> nodes with a BGP address
    # cluster ID -> zone -> clients there whose labels name it
    referenced: dict[str, dict[str, int]] = attrs.field(factory=dict)
    marked: set[str] = attrs.field(factory=set)
    changed: set[str] = attrs.field(factory=set)
    unreadable: set[str] = attrs.field(factory=set)  # keys whose values are bad: never written
    bird_refuses: dict[str, str] = attrs.field(factory=dict)  # of those, BIRD refuses: why
    # Registered RR hosts: `reflectors` holds those in force; `refused` the others (key ->
    # why). A registration may not claim a node's address, nor one outside `host_prefixes`
    # (empty: anywhere). Node addresses are counted so that this costs O(1) per event.
    host_prefixes: tuple[Network, ...] = ()
    registrations: dict[str, Reflector] = attrs.field(factory=dict)
    refused: dict[str, str] = attrs.field(factory=dict)
    node_addresses: dict[IPAddress, int] = attrs.field(factory=dict)
    # The last readable BGPConfiguration stays in force while the stored one cannot be read;
    # until it can, nothing that depends on the AS is written (`bgp_readable`).
    bgp_readable: bool = True
    # Session reports (`rrwatch report`): speaker (a node, or host/<ip>) -> its BIRD's sessions,
    # and the revision each report was written at.
    reports: dict[str, Report] = attrs.field(factory=dict)
    report_revisions: dict[str, int] = attrs.field(factory=dict)

    @property
    def shape(self) -> tuple[str, RRLabel, Selector | None, Selector | None]:
        """The settings the indexes follow, as reshape() takes them."""
        return self.zone_label, self.rr_label, self.exclude, self.prefer

    def zone_of(self, node: Node) -> str:
        return node.labels.get(self.zone_label, "") if self.zone_label else ""

    def eligible(self, node: Node) -> bool:
        """Can be a route reflector: has a BGP address that BIRD would take, with an AS that
        BIRD would take, and is not excluded."""
        return (node.has_bgp_address
                and not (self.exclude and self.exclude.matches(node.labels))
                and speaker_problem(node.asn, (node.ipv4, node.ipv6)) is None)

    def preferred(self, node: Node) -> bool:
        return bool(self.prefer and self.prefer.matches(node.labels))

    def candidate(self, node: Node) -> Candidate:
        return (not self.preferred(node), rank(node.name), node.name)

    def is_marked(self, node: Node) -> bool:
        return (node.cluster_id is not None or self.rr_label.key in node.labels
                or node.rr_label is not None)

    def put_node(self, node: Node) -> None:
        self.remove_node(node.name)
        self.nodes[node.name] = node
        self.changed.add(node.name)
        zone = self.zone_of(node)
        if node.has_bgp_address:
            self.speakers[zone] = self.speakers.get(zone, 0) + 1
        if self.eligible(node):
            self.zones.setdefault(zone, ZoneIndex()).add(self.candidate(node))
        if self.is_marked(node):
            self.marked.add(node.name)
        for label in client_labels(node):
            cluster = label[len(CLIENT_LABEL_PREFIX):]
            zones = self.referenced.setdefault(cluster, {})
            zones[zone] = zones.get(zone, 0) + 1
        for ip in (node.ipv4, node.ipv6):
            if ip is not None:
                self.node_addresses[ip] = self.node_addresses.get(ip, 0) + 1
                self._judge_host(ip)

    def remove_node(self, name: str) -> None:
        old = self.nodes.pop(name, None)
        if old is None:
            return
        self.changed.add(name)
        self.marked.discard(name)
        zone = self.zone_of(old)
        if old.has_bgp_address:
            self.speakers[zone] -= 1
            if not self.speakers[zone]:
                del self.speakers[zone]
        for label in client_labels(old):
            cluster = label[len(CLIENT_LABEL_PREFIX):]
            zones = self.referenced[cluster]
            zones[zone] -= 1
            if not zones[zone]:
                del zones[zone]
            if not zones:
                del self.referenced[cluster]
        if self.eligible(old):
            index = self.zones[zone]
            index.remove(self.candidate(old))
            if not index:
                del self.zones[zone]
        for ip in (old.ipv4, old.ipv6):
            if ip is not None:
                self.node_addresses[ip] -= 1
                if not self.node_addresses[ip]:
                    del self.node_addresses[ip]
                self._judge_host(ip)

    def reshape(self, zone_label: str, rr_label: RRLabel, exclude: Selector | None,
                prefer: Selector | None) -> None:
        """Take new zone and RR settings: every node is indexed again (a policy change)."""
        nodes = list(self.nodes.values())
        for node in nodes:
            self.remove_node(node.name)
        self.zone_label, self.rr_label, self.exclude, self.prefer = (
            zone_label, rr_label, exclude, prefer)
        for node in nodes:
            self.put_node(node)

    def reflectors_by_zone(self) -> dict[str, int]:
        """Speakers with a cluster ID, per zone. O(marked); safe from the metrics thread, which
        reads copies of the small `marked` set."""
        out: dict[str, int] = {}
        for name in list(self.marked):
            node = self.nodes.get(name)
            if node is not None and node.cluster_id and node.has_bgp_address:
                zone = self.zone_of(node)
                out[zone] = out.get(zone, 0) + 1
        return out

    def take_changed(self) -> set[str]:
        """The nodes put or removed since the last call."""
        changed, self.changed = self.changed, set()
        return changed

    def put_peer(self, peer: Peer) -> None:
        self.peers[peer.name] = peer

    def remove_peer(self, name: str) -> None:
        self.peers.pop(name, None)

    def put_reflector(self, reflector: Reflector) -> None:
        self.registrations[reflector.key] = reflector
        self._judge(reflector)

    def remove_reflector(self, key: str) -> None:
        self.registrations.pop(key, None)
        self.reflectors.pop(key, None)
        self.refused.pop(key, None)

    def _judge_host(self, ip: IPAddress) -> None:
        """A node took or gave up `ip`: judge the registration of that address again."""
        registration = self.registrations.get(host_key(ip))
        if registration is not None:
            self._judge(registration)

    def _judge(self, reflector: Reflector) -> None:
        why = self.host_problem(reflector.ip)
        if why is None:
            self.reflectors[reflector.key] = reflector
            self.refused.pop(reflector.key, None)
        else:
            self.reflectors.pop(reflector.key, None)
            self.refused[reflector.key] = why

    def allow_hosts(self, prefixes: tuple[Network, ...]) -> None:
        """Take a new allow-list of RR host prefixes: every registration is judged again."""
        self.host_prefixes = prefixes
        for registration in self.registrations.values():
            self._judge(registration)

    def host_problem(self, ip: IPAddress) -> str | None:
        """Why a registration of `ip` cannot be in force, or None."""
        if self.node_addresses.get(ip):
            return f"{ip} is a Calico node's address"
        if self.host_prefixes and not any(ip in net for net in self.host_prefixes):
            return f"{ip} is outside the allowed RR host prefixes"
        return speaker_problem(None, (ip,))

    def put_report(self, speaker: str, report: Report, revision: int) -> None:
        self.reports[speaker] = report
        self.report_revisions[speaker] = revision

    def remove_report(self, speaker: str) -> None:
        self.reports.pop(speaker, None)
        self.report_revisions.pop(speaker, None)

    def set_bgp(self, config: BgpConfig | None) -> None:
        """The BGPConfiguration read (None: there is none, so Calico's defaults apply)."""
        self.bgp = config if config is not None else BgpConfig()
        self.bgp_readable = True

    def bgp_unreadable(self) -> None:
        """The BGPConfiguration cannot be read: keep the last good one, and say so."""
        self.bgp_readable = False


def host_key(ip: IPAddress) -> str:
    """The key that registers an RR host at `ip` (seed 004's layout)."""
    return f"/calico/bgp/v1/rr_v{ip.version}/{ip}"

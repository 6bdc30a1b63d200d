"""The route-reflector mesh the cluster should have, computed from the model. Pure code.

Three topologies (SPEC.md):
- `simple`: one shared cluster ID; every client peers with every RR; RRs mesh.
- `zoned`: one cluster ID per zone; clients peer with their zone's RRs (all RRs when their zone
  has none); RRs of all zones mesh.
- `multi`: every RR has its own cluster ID; each client peers with k RRs spread over zones, chosen
  by rendezvous hashing over cluster IDs, so a client's choice depends only on its name and the
  set of RR cluster IDs. An RR that replaces a lost one takes over its cluster ID, and with it
  exactly its clients, whose labels stay as they are.
  The choice is written as client labels (`rr.rrwatch.io/<cluster ID>`) and one BGPPeer per RR
  selects its clients by label: BGPPeers stay O(RRs), not O(nodes).
Registered RR hosts (rr_v4/rr_v6 keys) take part in every topology: every node peers with each
one by peerIP.

Cost: O(zones + route reflectors) per call, thanks to the model's per-zone candidate index.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections import Counter
from collections.abc import Mapping

import attrs

from rrwatch.core.calico import OWNED_PEER_PREFIX
from rrwatch.core.model import CLIENT_LABEL_PREFIX, ClusterState
from rrwatch.core.policy import Policy
from rrwatch.core.selector import And, Compare, Has, Not, Or, Selector, SelectorError, parse, render

MESH_PEER = "rrwatch-rr-mesh"
RR_PEER_PREFIX = OWNED_PEER_PREFIX + "rr-"  # in `multi`, an RR's BGPPeer: + its cluster ID
CLIENTS_PEER = "rrwatch-rr-clients"


def client_label(cluster: str) -> str:
    return CLIENT_LABEL_PREFIX + cluster


@attrs.frozen
class Assignment:
    """Which in-cluster RRs each client peers with in `multi` (empty in other topologies).

    Rendezvous hashing: a client ranks RRs by hash(client, cluster ID). It takes the best RR of
    its own zone, then the best RR of each other zone in rank order, then the best of the rest,
    up to k. So adding a client moves no other client, and losing an RR moves only that RR's
    clients.
    """

    reflectors: tuple[tuple[str, str, str], ...] = ()  # (name, zone, cluster ID), sorted
    k: int = 0
    _ids: tuple[bytes, ...] = attrs.field(init=False, eq=False, repr=False)

    @_ids.default
    def _encode_ids(self) -> tuple[bytes, ...]:
        return tuple(cluster.encode() for _, _, cluster in self.reflectors)

    def choose(self, client: str, zone: str) -> list[tuple[str, str, str]]:
        # The hash of (client, cluster ID) for each RR, made with as little Python as possible:
        # this runs for every client on a first start. Equal scores fall back to RR order.
        head = client.encode() + b"\0"
        ranked = [rr for _, rr in sorted(zip(
            [_blake2b(head + cluster, digest_size=8).digest() for cluster in self._ids],
            self.reflectors, strict=True))]
        own = next((rr for rr in ranked if rr[1] == zone), None)
        picked = [] if own is None else [own]
        zones = {zone}
        for rr in ranked:
            if rr[1] not in zones:
                picked.append(rr)
                zones.add(rr[1])
        picked = picked[: self.k]
        for rr in ranked:
            if len(picked) >= self.k:
                break
            if rr not in picked:
                picked.append(rr)
        return picked

    def labels(self, client: str, zone: str) -> frozenset[str]:
        if not self.k:
            return frozenset()
        return frozenset(client_label(cluster) for _, _, cluster in self.choose(client, zone))


_blake2b = hashlib.blake2b


@attrs.frozen
class Mesh:
    """The desired state: RR nodes with their cluster IDs, owned BGPPeers, client choices."""

    reflectors: Mapping[str, str]
    peers: Mapping[str, Mapping[str, object]]
    assignment: Assignment = Assignment()
    problems: tuple[str, ...] = ()

    def client_labels(self, state: ClusterState, name: str) -> frozenset[str]:
        """The client labels node `name` should carry (none for RRs and non-speakers)."""
        node = state.nodes[name]
        if name in self.reflectors or not node.has_bgp_address:
            return frozenset()
        return self.assignment.labels(name, state.zone_of(node))


def choose_reflectors(state: ClusterState, policy: Policy) -> dict[str, list[str]]:
    """Per zone, the nodes that should be route reflectors.

    Sticky: current RRs that are still eligible stay (preferred, then best-ranked, first when
    there are too many); free places go to the best other candidates (preferred first). The
    answer depends only on the state, never on the order in which events built it.
    """
    current: dict[str, list[tuple[bool, bytes, str]]] = {}
    for name in state.marked:
        node = state.nodes[name]
        if node.cluster_id is not None and state.eligible(node):
            current.setdefault(state.zone_of(node), []).append(state.candidate(node))

    chosen = {}
    for zone in served_zones(state, policy):
        index = state.zones[zone]
        wanted = policy.rr_count(len(index))
        picked = [name for *_, name in sorted(current.get(zone, ()))[:wanted]]
        taken = set(picked)
        for name in index.names():
            if len(picked) >= wanted:
                break
            if name not in taken:
                picked.append(name)
        chosen[zone] = sorted(picked)
    return chosen


def served_zones(state: ClusterState, policy: Policy) -> list[str]:
    """The zones that get RRs of their own: all, unless there are more than the bound allows,
    then the largest (by eligible nodes, then by name). Zone values come from the nodes
    themselves, so their number is not rrwatch's to trust."""
    zones = sorted(state.zones, key=lambda z: (-len(state.zones[z]), z))
    return zones[:policy.max_zones]


def allocate_ids(
    state: ClusterState, policy: Policy, groups: Mapping[str, tuple[str, list[str]]]
) -> tuple[dict[str, str], list[str]]:
    """A cluster ID for each group (name -> (zone, RRs)) of RRs that share one; problems when
    the template runs out.

    Sticky: a group keeps the ID most of its members carry, unless an earlier group or a
    registered RR host has it. Other groups get an ID that no node and no host carries, so an
    ID is never given to a second RR while the first still has it: first an ID that clients
    still name although no RR has it (a lost RR's, so its replacement inherits its clients;
    those whose clients are mostly in the group's zone first), then the template's IDs in order.
    """
    reserved = {r.cluster_id for r in state.reflectors.values() if r.cluster_id}
    ids: dict[str, str] = {}
    for group, (_, members) in sorted(groups.items()):
        votes = Counter(c for n in members if (c := state.nodes[n].cluster_id))
        for cluster, _ in sorted(votes.items(),
                                 key=lambda kv: (-kv[1], ipaddress.IPv4Address(kv[0]))):
            if cluster not in reserved:
                ids[group] = cluster
                reserved.add(cluster)
                break
    reserved |= {c for n in state.marked if (c := state.nodes[n].cluster_id) is not None}
    # An RR of its own whose new ID is still to come (a re-ID waits in the break phase) keeps
    # the one its BGPPeer already names: the clients' labels follow the peer, and inheriting
    # whatever they name would move the ID with every step.
    written = {str(peer.spec["node"]): name[len(RR_PEER_PREFIX):]
               for name, peer in state.peers.items()
               if peer.owned and name.startswith(RR_PEER_PREFIX) and peer.spec.get("node")}
    for group, (_, members) in sorted(groups.items()):
        if group not in ids and len(members) == 1 and (
                target := written.get(members[0])) and target not in reserved:
            ids[group] = target
            reserved.add(target)
    orphans: dict[str, list[str]] = {}  # zone -> IDs its clients name most, lowest first
    for address in sorted(filter(None, map(_ipv4, state.referenced.keys() - reserved))):
        zones = state.referenced[str(address)]
        orphans.setdefault(max(sorted(zones), key=zones.__getitem__), []).append(str(address))
    template = (c for c in map(policy.cluster_id, range(1, policy.id_capacity + 1))
                if c not in reserved)
    problems: list[str] = []
    for group in sorted(groups.keys() - ids.keys()):
        zone, members = groups[group]
        # Prefer an ID whose clients are mostly in this zone; any orphan beats a new ID, which
        # would draw clients away from other RRs.
        inherited = orphans.get(zone) or next((ids for ids in orphans.values() if ids), None)
        given = inherited.pop(0) if inherited else next(template, None)
        if given is None:
            problems.append(f"cluster ID template {policy.cluster_id_template!r} has no free"
                            f" ID left for {', '.join(members)}")
            continue
        ids[group] = given
        reserved.add(given)
    return ids, problems


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    """The address a client label names, if it is a cluster ID in canonical form."""
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        return None
    return address if str(address) == text else None


def desired(state: ClusterState, policy: Policy) -> Mesh:
    chosen = choose_reflectors(state, policy)
    if policy.topology == "simple":
        groups = {"": ("", sorted(n for names in chosen.values() for n in names))}
    elif policy.topology == "zoned":
        groups = {zone: (zone, names) for zone, names in chosen.items() if names}
    else:
        groups = {name: (zone, [name]) for zone, names in chosen.items() for name in names}
    ids, problems = allocate_ids(state, policy, groups)
    reflectors = {n: ids[g] for g, (_, names) in groups.items() if g in ids for n in names}

    rr = render(policy.rr())
    peers: dict[str, Mapping[str, object]] = {MESH_PEER: {"nodeSelector": rr, "peerSelector": rr}}
    assignment = Assignment()
    if policy.topology == "simple":
        peers[CLIENTS_PEER] = {"nodeSelector": render(policy.client()), "peerSelector": rr}
    elif policy.topology == "zoned":
        problems += _zoned_peers(state, policy, {state.zone_of(state.nodes[n])
                                                 for n in reflectors}, peers)
    else:
        entries = sorted((n, state.zone_of(state.nodes[n]), c) for n, c in reflectors.items())
        assignment = Assignment(tuple(entries), policy.client_rrs)
        for name, _, cluster in entries:
            peers[RR_PEER_PREFIX + cluster] = {
                "node": name, "peerSelector": render(Has(client_label(cluster)))}
    _host_peers(state, peers, problems)
    if len(state.zones) > policy.max_zones:
        problems.append(f"{len(state.zones)} zones, more than the {policy.max_zones} allowed"
                        " (policy.max_zones): the smallest have no RRs of their own")
    for name, peer in sorted(state.peers.items()):
        if peer.disowned:
            problems.append(f"BGPPeer {name} carries rrwatch's ownership label without its name"
                            f" prefix {OWNED_PEER_PREFIX!r}: it is someone else's, left alone")
        if not peer.owned:
            problems += (f"BGPPeer {name}: its {field} does not parse ({why}): Calico lets it"
                         " select nothing" for field in ("nodeSelector", "peerSelector")
                         if (why := _unparsable(peer.spec.get(field))))
    return Mesh(reflectors, peers, assignment, tuple(problems))


@functools.lru_cache(maxsize=256)
def _why_not(text: str) -> str | None:
    try:
        parse(text)
    except SelectorError as e:
        return str(e)
    return None


def _unparsable(text: object) -> str | None:
    """Why a foreign BGPPeer's selector field does not parse, or None (absent, or fine).
    Cached: the same few peers are checked at every plan."""
    if text in (None, ""):
        return None
    return _why_not(text) if isinstance(text, str) else "not a string"


def _host_peers(
    state: ClusterState, peers: dict[str, Mapping[str, object]], problems: list[str]
) -> None:
    """A global peerIP BGPPeer per registered RR host, with the cluster's AS; the refused
    registrations as problems. While the BGPConfiguration cannot be read, the AS is not known:
    host peers stay as they are, and none is added."""
    problems += (f"registration {key} refused: {why}" for key, why in sorted(state.refused.items()))
    if not state.bgp_readable:
        problems.append("the default BGPConfiguration cannot be read: the RR host peers, which"
                        " carry its AS, wait until it can")
    for reflector in state.reflectors.values():
        ip = reflector.ip
        name = "rrwatch-host-" + str(ip).replace(".", "-").replace(":", "-")
        name += "0" if name.endswith("-") else ""  # fd00:: -> rrwatch-host-fd00--0
        if state.bgp_readable:
            peer_ip = str(ip) if ip.version == 4 else f"[{ip}]:179"
            peers[name] = {"peerIP": peer_ip, "asNumber": state.bgp.asn}
        elif name in state.peers:
            peers[name] = state.peers[name].spec


def _zoned_peers(
    state: ClusterState, policy: Policy, served: set[str], peers: dict[str, Mapping[str, object]]
) -> list[str]:
    """Per zone with RRs, its clients peer with its RRs; per zone without, with all RRs.

    One peer per zone either way, so a zone that gains RRs gets its new peer in the make phase
    and loses its fallback peer only in the break phase.
    """
    problems = []
    for zone in sorted(set(state.speakers) | served):
        where = _in_zone(state.zone_label, zone)
        try:
            if zone in served:
                peers[_dns_name("rrwatch-zone-", zone)] = {
                    "nodeSelector": render(_both(policy.client(), where)),
                    "peerSelector": render(_both(policy.rr(), where)),
                }
            elif served:
                peers[_dns_name("rrwatch-fallback-", zone)] = {
                    "nodeSelector": render(_both(policy.client(), where)),
                    "peerSelector": render(policy.rr()),
                }
        except SelectorError as e:  # parse_node refuses such labels; this is the backstop
            problems.append(f"zone {zone!r} cannot be written as a selector: {e}")
    return problems


def _in_zone(zone_label: str, zone: str) -> Selector | None:
    if not zone_label:
        return None
    if not zone:  # no zone label, or an empty one: both count as zone ""
        return Or((Not(Has(zone_label)), Compare(zone_label, "==", "")))
    return Compare(zone_label, "==", zone)


def _both(a: Selector, b: Selector | None) -> Selector:
    if b is None:
        return a
    return And((a, *b.operands)) if isinstance(b, And) else And((a, b))


def _dns_name(prefix: str, text: str) -> str:
    """`prefix` + `text` made a DNS-1123 name; a hash keeps distinct texts distinct."""
    safe = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")
    if safe and safe == text:
        return prefix + safe
    digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    return prefix + (f"{safe}-{digest}" if safe else digest)

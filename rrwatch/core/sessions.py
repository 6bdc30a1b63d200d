"""Which BGP sessions the records configure: confd's reading of nodes, BGPPeers, the
BGPConfiguration and RR host registrations, as one fabric per address family."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Set

import attrs

from rrwatch.core import decoding
from rrwatch.core.bgp_peers import ByIP, ends
from rrwatch.core.model import ClusterState, IPAddress, Peer
from rrwatch.core.selector import SelectorError, parse
from rrwatch.core.validate import (
    address_problem,
    claim_problems,
    is_node_name,
    speaker_problem,
)

BGP_PORT = 179  # where calico-node's BIRD listens
HOST_PREFIX = "host/"  # external RR speakers are "host/<ip>"; node names cannot hold a slash
FAMILIES = (4, 6)


@attrs.frozen
class Speaker:
    """A BGP speaker of one family: a Calico node, or an external RR host (node=False)."""

    name: str
    asn: int
    cluster_id: str | None  # None: not a route reflector
    node: bool
    address: IPAddress

    @property
    def reflector(self) -> bool:
        return self.cluster_id is not None


@attrs.frozen
class Fabric:
    """The speakers of one address family and the sessions between them (symmetric, no self).

    `refused`: per RR host, the neighbours it has no session with because their records fail a
    check (`host_refusals`), each with why; the node that claims a host's address among them.
    """

    family: int
    speakers: Mapping[str, Speaker]
    sessions: Mapping[str, frozenset[str]]
    refused: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict)
    # (RR, node) whose peering is a peerIP one, which carries no cluster ID (`clients`).
    via_ip: frozenset[tuple[str, str]] = frozenset()
    reflectors: frozenset[str] = attrs.field(init=False, eq=False, repr=False)

    @reflectors.default
    def _reflectors(self) -> frozenset[str]:
        return frozenset(name for name, s in self.speakers.items() if s.reflector)

    def __attrs_post_init__(self) -> None:
        if self.speakers.keys() != self.sessions.keys():
            raise ValueError("every speaker needs an entry in sessions, and only speakers")

    def clients(self, name: str) -> frozenset[str]:
        """The neighbours that speaker `name` configures as `rr client` (confd's rule, per
        peering: an RR, a neighbour of its AS, and a peering that carries no cluster ID or
        another one than the RR's)."""
        me = self.speakers[name]
        if not me.reflector:
            return frozenset()
        return frozenset(
            t for t in self.sessions[name] if self.speakers[t].asn == me.asn
            and _known(me, self.speakers[t], (name, t) in self.via_ip) != me.cluster_id)

    def reflectors_of(self, name: str) -> frozenset[str]:
        """The neighbours of `name` that are route reflectors."""
        return self.sessions[name] & self.reflectors


def speaker_of(key: str, prefix: str) -> str:
    """The speaker a key under `prefix` names (a session report's): a node, or host/<ip> with
    the address canonical; BadRecord for anything else."""
    speaker = key[len(prefix):]
    host = speaker.removeprefix(HOST_PREFIX)
    if host == speaker and is_node_name(speaker):
        return speaker
    try:
        if host != speaker and str(ipaddress.ip_address(host)) == host:
            return speaker
    except ValueError:
        pass
    raise decoding.BadRecord(key, "not the report of a node (its name) or an RR host"
                                  " (host/<ip>)")


def fabric(state: ClusterState, family: int, *, hosts_only: bool = False) -> Fabric:
    """The sessions that the records in `state` bring up in one address family (4 or 6).

    `hosts_only`: only the sessions with registered RR hosts, at a cost in proportion to the
    nodes (the node-to-node mesh alone would cost their square).
    """
    return fabric_of(state, family, peerings(state, hosts_only))[0]


# -- sessions ------------------------------------------------------------------------------------


@attrs.frozen
class Peerings:
    """What BGPPeers and the mesh make each node configure, before families are known."""

    by_name: Mapping[str, set[str]]  # node -> nodes it configures sessions to
    by_ip: Mapping[str, list[ByIP]]  # node -> its peerIP peerings
    problems: tuple[str, ...]
    unfit: Mapping[str, str]  # node -> why RR hosts give it no session (host_refusals)
    # Faults that take a node's BGP down, or make a BGPPeer select nothing (verify reports
    # them as fatal); and the nodes whose BIRD refuses its configuration: no session at all.
    fatal: tuple[str, ...] = ()
    down: frozenset[str] = frozenset()
    # (node, node) whose first peering in confd's order is a peerIP one, and that peering: it
    # carries no cluster ID (so an RR takes even a same-ID RR there for a client), and a
    # later peering to that address, with the right AS or not, is dropped.
    first_ip: Mapping[tuple[str, str], ByIP] = attrs.field(factory=dict)


def peerings(state: ClusterState, hosts_only: bool = False) -> Peerings:
    """What the BGPPeers and the mesh configure, read once for both families (`fabric_of`)."""
    nodes = state.nodes
    by_name: dict[str, set[str]] = {name: set() for name in nodes}
    by_ip: dict[str, list[ByIP]] = {}
    problems = []
    fatal = []
    down: set[str] = set()
    matched: dict[str, frozenset[str]] = {}  # each selector text is evaluated once

    def select(text: str) -> frozenset[str]:
        if text not in matched:
            selector = parse(text)
            matched[text] = frozenset(n for n, node in nodes.items()
                                      if selector.matches(node.labels))
        return matched[text]

    # confd's order: the mesh, global BGPPeers, node-specific ones, then the reverse
    # peerings; the first peering of a node to an address wins. A selector or mesh one uses
    # the far node's AS and cluster ID; a peerIP one, its own AS and none. peerIP peerings
    # to nodes are few: each is checked against the selector peerings before it.
    selected: list[tuple[frozenset[str], frozenset[str]]] = []  # (local, remote), in order
    first_ip: dict[tuple[str, str], ByIP] = {}
    meshed = state.bgp.mesh_enabled and not hosts_only
    at: dict[IPAddress, str] = {}  # node addresses, read once a peerIP may name a node

    def node_at(address: IPAddress) -> str | None:
        if not at:
            for name, node in nodes.items():  # the first keeps a shared address, as fabric_of
                for ip in (node.ipv4, node.ipv6):
                    if ip is not None:
                        at.setdefault(ip, name)
        return at.get(address)

    def specific(peer: Peer) -> tuple[bool, str]:
        return bool(peer.spec.get("node") or peer.spec.get("nodeSelector")), peer.name

    for peer in sorted(state.peers.values(), key=specific):
        if hosts_only and not peer.spec.get("peerIP"):
            continue
        try:
            local, remote, endpoint, asn, reverse = ends(peer.spec, select, nodes.keys())
        except SelectorError as e:
            fatal.append(f"BGPPeer {peer.name}: {e}; confd selects nothing with it")
            continue
        except ValueError as e:
            reason = e.reason if isinstance(e, decoding.BadRecord) else e
            problems.append(f"BGPPeer {peer.name}: {reason}; it configures nothing")
            continue
        if endpoint is not None and not asn:
            # confd renders `neighbor <ip> as 0`; BIRD refuses the whole configuration, and
            # confd's check keeps every later one of these nodes from being installed.
            if local:
                down |= local
                fatal.append(f"BGPPeer {peer.name}: peerIP {endpoint[0]} without asNumber:"
                             f" confd writes `as 0`, which BIRD refuses, so BGP is down on"
                             f" {_named(local)}")
            continue
        by = ByIP(*endpoint, asn, peer.name, reverse) if endpoint is not None else None
        target = node_at(by.address) if by is not None else None
        for name in local:
            by_name[name].update(remote)
            if by is not None:
                by_ip.setdefault(name, []).append(by)
        if by is not None and target is not None:
            in_mesh = meshed and nodes[target].cluster_id is None
            for name in local:
                if not (in_mesh and nodes[name].cluster_id is None) and not any(
                        name in mine and target in theirs for mine, theirs in selected):
                    first_ip.setdefault((name, target), by)
        if remote:
            selected.append((local, remote))
        if reverse:
            for name in remote:
                by_name[name].update(local)
    if meshed:
        # Route reflectors leave the node-to-node mesh.
        mesh = {name for name, node in nodes.items() if node.cluster_id is None}
        for name in mesh:
            by_name[name].update(mesh)
    unfit = host_refusals(state) if state.reflectors else {}
    return Peerings(by_name, by_ip, tuple(problems), unfit, tuple(fatal), frozenset(down),
                    first_ip)


def _named(nodes: Set[str], shown: int = 5) -> str:
    """Some node names, for a problem's text."""
    names = sorted(nodes)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def host_refusals(state: ClusterState) -> dict[str, str]:
    """The nodes that RR hosts give no session, each with why: the node's AS or an address of
    it cannot be a neighbour's, an address of it is a registered host's, or another node
    claims that address too (then neither gets one). The node is refused in both families: its
    record is bad, and which of its values are right cannot be told.

    A host renders its BIRD from these records, and BIRD refuses a whole configuration over one
    bad neighbour; so checking each neighbour first keeps one record from blocking the others.
    """
    owners = {r.ip: f"RR host {r.ip}" for r in state.reflectors.values()}
    out = claim_problems(((name, ip) for name, node in state.nodes.items()
                          for ip in (node.ipv4, node.ipv6) if ip is not None), owners)
    for name, node in state.nodes.items():
        if name.startswith(HOST_PREFIX):
            out[name] = "a name of that form stands for a registered RR host"
        elif why := speaker_problem(node.asn, (node.ipv4, node.ipv6)):
            out[name] = why  # the record's own fault first: it may explain a shared address
    return out


def fabric_of(state: ClusterState, family: int, peering: Peerings) -> tuple[Fabric, set[str]]:
    """One family's fabric from the peerings read (`fabric` reads them too), and problems."""
    # Registered hosts first: a host always owns its registered address, and its name.
    speakers: dict[str, Speaker] = {}
    at: dict[IPAddress, str] = {}
    for reflector in state.reflectors.values():
        if reflector.ip.version == family:
            name = HOST_PREFIX + str(reflector.ip)
            # BIRD's cluster ID defaults to the router ID: unique to the host.
            cluster = name if reflector.cluster_id is None else reflector.cluster_id
            speakers.setdefault(name, Speaker(name, state.bgp.asn, cluster, False, reflector.ip))
            at[reflector.ip] = name
    hosts = frozenset(speakers)
    refused: dict[str, dict[str, str]] = {host: {} for host in hosts}
    problems = set()
    nodes: dict[str, Speaker] = {}
    for name, node in state.nodes.items():
        address = node.ipv4 if family == 4 else node.ipv6
        if address is None:
            continue
        owner = at.get(address)
        if owner in hosts or name.startswith(HOST_PREFIX):
            # It would take a host's place: left out, and a bad record for the host it
            # imitates and for every host it means to peer with.
            why = peering.unfit.get(name, f"{address} is the address of RR host {address}")
            problems.add(f"node {name!r}: {why}; left out of IPv{family}")
            for host in (owner, name, *(at.get(by.address) for by in peering.by_ip.get(name, ()))):
                if host in hosts:
                    refused[host][name] = why
            continue
        asn = state.bgp.asn if node.asn is None else node.asn
        nodes[name] = Speaker(name, asn, node.cluster_id, True, address)
        at.setdefault(address, name)  # among nodes, the first keeps a shared address here
    speakers.update(nodes)

    configured: dict[str, set[str]] = {name: set() for name in nodes}
    for name in nodes.keys() - peering.down:
        mine = configured[name]
        mine |= peering.by_name[name] & nodes.keys()
        for by in peering.by_ip.get(name, ()):
            target = at.get(by.address)
            if target is None:
                continue  # a router rrwatch knows nothing of: not part of the check
            if target in nodes:  # the first peering to that address is the one that counts
                if peering.first_ip.get((name, target)) is not by:
                    continue  # another came first: confd drops this one
                if by.asn != speakers[target].asn:
                    mine.discard(target)  # confd's session, with the wrong AS: none comes up
            if by.asn != speakers[target].asn:
                problems.add(f"BGPPeer {by.peer}: asNumber {by.asn}, but {target} is in AS "
                             f"{speakers[target].asn}; no session")
                continue
            mine.add(target)
            # confd's reverse side: the node at that address (its AS and port matching) peers
            # back, whatever its own BGPPeers say.
            if by.reverse and target in nodes and by.port in (None, BGP_PORT):
                configured[target].add(name)
    for name in peering.down & nodes.keys():
        configured[name].clear()  # BIRD refuses its configuration: no session at all
    for name, mine in configured.items():
        mine.discard(name)  # a node never peers with itself

    # An RR host refuses a neighbour whose record fails a check (host_refusals), and another
    # host whose registered address could not be a neighbour's.
    unfit_hosts = {h: bad for h in hosts if (bad := address_problem(speakers[h].address))}
    problems.update(f"{h}: {why}; no session with the other RR hosts"
                    for h, why in unfit_hosts.items() if len(hosts) > 1)
    sessions: dict[str, frozenset[str]] = {}
    for host in hosts:
        # rrwatch renders a host's BIRD with every node that peers with it, and the other hosts.
        mine = set()
        for a, theirs in configured.items():
            if host in theirs:
                if a in peering.unfit:
                    refused[host][a] = peering.unfit[a]
                    problems.add(f"node {a!r}: {peering.unfit[a]}; no session with {host}")
                else:
                    mine.add(a)
        for other in hosts - {host}:
            if other in unfit_hosts or host in unfit_hosts:
                if other in unfit_hosts:
                    refused[host][other] = unfit_hosts[other]
            else:
                mine.add(other)
        sessions[host] = frozenset(mine)
    for name, mine in configured.items():
        sessions[name] = frozenset(b for b in mine if name in (
            sessions[b] if b in hosts else configured[b]))
    via_ip = frozenset(pair for pair in peering.first_ip if pair[0] in nodes
                       and nodes[pair[0]].reflector)
    return Fabric(family, speakers, sessions, refused, via_ip), problems


def _known(at: Speaker, neighbour: Speaker, via_ip: bool) -> str | None:
    """The cluster ID that `at`'s peering with `neighbour` carries (confd's template): none for
    a peering by peerIP, and a Calico node knows only nodes' cluster IDs; an RR host, whose
    BIRD rrwatch renders, knows everyone's."""
    if at.node and (via_ip or not neighbour.node):
        return None
    return neighbour.cluster_id

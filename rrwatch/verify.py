"""Reachability: given the records in etcd, does every node's route reach every other node?

Pure code. The nodes, BGPPeers, external RR registrations and BGP configuration say which BGP
sessions come up (both ends must configure one); a simulation of route propagation per address
family, with RFC 4456 reflection, Calico's client rule and BIRD's per-session cluster IDs, says
who hears whose route. That is the check calico issue 2735 shows is needed: an RR never passes a
reflection from an RR of its own cluster ID to its clients, so the clients of one cluster must
all peer with every one of its RRs.

Speed: a non-RR node whose sessions are all iBGP ("silent") never passes on a learned route, so
the simulation leaves silent receivers out and reads their result off their neighbours at the
end; and silent nodes with the same neighbours ("twins": clients of the same RRs, or nodes of
one mesh) are interchangeable, so one origin stands for all of its twins.
`unreachable(..., group=False)` is the plain simulation that tests hold these shortcuts against.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Mapping, Set

import attrs

from rrwatch import calico
from rrwatch.model import ClusterState, IPAddress
from rrwatch.selector import SelectorError, parse
from rrwatch.validate import address_problem, claim_problems, speaker_problem

HOST_PREFIX = "host/"  # external RR speakers are "host/<ip>"; node names cannot hold a slash
FAMILIES = (4, 6)

# Route changes allowed per session before propagation counts as oscillating. Without MED it
# should always settle, in a few changes per session; the bound only guarantees an end.
_CHANGES_PER_SESSION = 100


class ConvergenceError(RuntimeError):
    """Route propagation did not settle within its bound."""


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
    reflectors: frozenset[str] = attrs.field(init=False, eq=False, repr=False)

    @reflectors.default
    def _reflectors(self) -> frozenset[str]:
        return frozenset(name for name, s in self.speakers.items() if s.reflector)

    def __attrs_post_init__(self) -> None:
        if self.speakers.keys() != self.sessions.keys():
            raise ValueError("every speaker needs an entry in sessions, and only speakers")

    def reflectors_of(self, name: str) -> frozenset[str]:
        """The neighbours of `name` that are route reflectors."""
        return self.sessions[name] & self.reflectors


@attrs.frozen
class Verdict:
    """The outcome of `verify`: configuration problems, and who does not hear whom."""

    problems: tuple[str, ...]
    unreachable: Mapping[tuple[int, str | None], tuple[tuple[str, str], ...]]
    scenarios: int

    @property
    def ok(self) -> bool:
        return not self.unreachable

    def lines(self, limit: int = 20) -> list[str]:
        """A human report: problems, then per failing case a header and its first pairs."""
        out = [f"problem: {problem}" for problem in self.problems]
        for (family, failed), pairs in sorted(
            self.unreachable.items(), key=lambda item: (item[0][0], item[0][1] or "")
        ):
            case = f"IPv{family}" if failed is None else f"IPv{family} without {failed}"
            out.append(f"{case}: {len(pairs)} unreachable (origin -> receiver)")
            out.extend(f"  {origin} -> {receiver}" for origin, receiver in pairs[:limit])
            if len(pairs) > limit:
                out.append(f"  ... and {len(pairs) - limit} more")
        return out


def verify(state: ClusterState, failures: int = 0) -> Verdict:
    """Check every family that has speakers; with failures=1, also without each RR in turn."""
    if failures not in (0, 1):
        raise ValueError(f"failures must be 0 or 1, not {failures}")
    peering = _peering(state)
    problems = set(peering.problems)
    found = {}
    scenarios = 0
    for family in FAMILIES:
        fab, more = _fabric(state, family, peering)
        problems.update(more)
        if not fab.speakers:
            continue
        for failed in [None, *sorted(fab.reflectors)] if failures else [None]:
            scenarios += 1
            pairs = unreachable(fab, failed)
            if pairs:
                found[(family, failed)] = tuple(pairs)
    return Verdict(tuple(sorted(problems)), found, scenarios)


def fabric(state: ClusterState, family: int, *, hosts_only: bool = False) -> Fabric:
    """The sessions that the records in `state` bring up in one address family (4 or 6).

    `hosts_only`: only the sessions with registered RR hosts, at a cost in proportion to the
    nodes (the node-to-node mesh alone would cost their square).
    """
    return _fabric(state, family, _peering(state, hosts_only))[0]


# -- sessions ------------------------------------------------------------------------------------


@attrs.frozen
class _Peering:
    """What BGPPeers and the mesh make each node configure, before families are known."""

    by_name: Mapping[str, set[str]]  # node -> nodes it configures sessions to
    by_ip: Mapping[str, list[tuple[IPAddress, int | None, str]]]  # node -> (peerIP, AS, peer)
    problems: tuple[str, ...]
    unfit: Mapping[str, str]  # node -> why RR hosts give it no session (host_refusals)


def _peering(state: ClusterState, hosts_only: bool = False) -> _Peering:
    nodes = state.nodes
    by_name: dict[str, set[str]] = {name: set() for name in nodes}
    by_ip: dict[str, list[tuple[IPAddress, int | None, str]]] = {}
    problems = []
    matched: dict[str, frozenset[str]] = {}  # each selector text is evaluated once

    def select(text: str) -> frozenset[str]:
        if text not in matched:
            selector = parse(text)
            matched[text] = frozenset(n for n, node in nodes.items()
                                      if selector.matches(node.labels))
        return matched[text]

    for peer in sorted(state.peers.values(), key=lambda p: p.name):
        if hosts_only and not peer.spec.get("peerIP"):
            continue
        try:
            local, remote, address, asn, reverse = _ends(peer.spec, select, nodes.keys())
        except (SelectorError, ValueError) as e:
            reason = e.reason if isinstance(e, calico.BadRecord) else e
            problems.append(f"BGPPeer {peer.name}: {reason}; it configures nothing")
            continue
        for name in local:
            by_name[name].update(remote)
            if address is not None:
                by_ip.setdefault(name, []).append((address, asn, peer.name))
        if reverse:
            for name in remote:
                by_name[name].update(local)
    if state.bgp.mesh_enabled and not hosts_only:
        # Route reflectors leave the node-to-node mesh.
        mesh = {name for name, node in nodes.items() if node.cluster_id is None}
        for name in mesh:
            by_name[name].update(mesh)
    unfit = host_refusals(state) if state.reflectors else {}
    return _Peering(by_name, by_ip, tuple(problems), unfit)


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


def _ends(
    spec: Mapping[str, object], select: Callable[[str], frozenset[str]], names: Set[str]
) -> tuple[frozenset[str], frozenset[str], IPAddress | None, int | None, bool]:
    """A BGPPeer's nodes, the nodes and address they peer with, its AS, and reverse peering."""
    node, node_selector = _text(spec, "node"), _text(spec, "nodeSelector")
    peer_selector, peer_ip = _text(spec, "peerSelector"), _text(spec, "peerIP")
    if node or node_selector:
        local = frozenset(n for n in (node,) if n in names)
        local |= select(node_selector) if node_selector else frozenset()
    else:
        local = frozenset(names)  # a global peer
    remote = select(peer_selector) if peer_selector else frozenset()
    address = _peer_address(peer_ip) if peer_ip else None
    reverse = bool(peer_selector) and _text(spec, "reversePeering") != "Manual"
    asn = calico.as_number("asNumber", spec.get("asNumber"))
    return local, remote, address, asn, reverse


def _text(spec: Mapping[str, object], field: str) -> str:
    """A string field; absent and empty are the same, as for Go's omitempty."""
    value = spec.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{field} is not a string: {value!r}")
    return value


def _peer_address(text: str) -> IPAddress:
    """The address of a peerIP: `a.b.c.d`, `a.b.c.d:port` or `[v6]:port` (the port is ignored)."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port[1:] if port.startswith(":") else "?"
    else:
        host, _, port = text.rpartition(":")
    if port.isdigit():
        try:
            return ipaddress.ip_address(host)
        except ValueError:
            pass
    raise ValueError(f"peerIP {text!r} is not an address, address:port or [address]:port")


def _fabric(state: ClusterState, family: int, peering: _Peering) -> tuple[Fabric, set[str]]:
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
            for host in (owner, name, *(at.get(a) for a, _, _ in peering.by_ip.get(name, ()))):
                if host in hosts:
                    refused[host][name] = why
            continue
        asn = state.bgp.asn if node.asn is None else node.asn
        nodes[name] = Speaker(name, asn, node.cluster_id, True, address)
        at.setdefault(address, name)  # among nodes, the first keeps a shared address here
    speakers.update(nodes)

    configured: dict[str, set[str]] = {}
    for name in nodes:
        mine = peering.by_name[name] & nodes.keys()
        for address, asn, peer in peering.by_ip.get(name, ()):
            target = at.get(address)
            if target is None:
                continue  # a router rrwatch knows nothing of: not part of the check
            if asn is not None and asn != speakers[target].asn:
                problems.add(f"BGPPeer {peer}: asNumber {asn}, but {target} is in AS "
                             f"{speakers[target].asn}; no session")
                continue
            mine.add(target)
        mine.discard(name)  # a node never peers with itself
        configured[name] = mine

    # An RR host refuses a neighbour whose record fails a check (host_refusals), and another
    # host whose registered address could not be a neighbour's.
    unfit_hosts = {h: why for h in hosts if (why := address_problem(speakers[h].address))}
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
    return Fabric(family, speakers, sessions, refused), problems


# -- propagation ---------------------------------------------------------------------------------

# A path as one tuple: (len(AS path), 1 if learned over iBGP, len(cluster list), neighbour's
# address, neighbour, AS path, cluster list). The first four are the preference, lowest best, so
# min() over paths is best-path selection. The originator is the simulation's one origin.
Path = tuple[int, int, int, int, int, tuple[int, ...], tuple[str, ...]]
LOCAL: Path = (-1, 0, 0, -1, -1, (), ())


@attrs.define
class _Net:
    """One scenario of a fabric as integer-indexed lists, for the simulation."""

    names: list[str]
    speakers: list[Speaker]
    near: list[frozenset[str]]  # per speaker: the names of its neighbours
    silent: list[bool]  # a non-RR node with only iBGP sessions: never passes a route on
    links: list[list[tuple[int, bool]]]  # per speaker: (neighbour, iBGP), the ones to simulate
    clients: list[frozenset[int]]  # per RR speaker: its iBGP clients
    bound: int


def _net(fab: Fabric, failed: str | None, everyone: bool) -> _Net:
    """Index the fabric without `failed`; links to silent speakers only if `everyone`."""
    names = sorted(n for n in fab.speakers if n != failed)
    index = {name: i for i, name in enumerate(names)}
    speakers = [fab.speakers[name] for name in names]
    near = [fab.sessions[name] for name in names]
    if failed is not None:
        near = [n - {failed} if failed in n else n for n in near]
    by_as: dict[int, set[str]] = {}
    for s in speakers:
        by_as.setdefault(s.asn, set()).add(s.name)
    silent = [s.node and not s.reflector and near[i] <= by_as[s.asn]
              for i, s in enumerate(speakers)]
    loud = frozenset(name for name, quiet in zip(names, silent, strict=True) if not quiet)
    links, clients = [], []
    for i, s in enumerate(speakers):
        # Silent speakers only ever announce their own route, to those that pass it on.
        mine = sorted(index[m] for m in (near[i] if everyone else near[i] & loud))
        links.append([(j, speakers[j].asn == s.asn) for j in mine])
        # Over every neighbour, silent ones too: a route a silent client sends is reflected.
        clients.append(frozenset(
            j for j in map(index.__getitem__, near[i]) if s.reflector
            and speakers[j].asn == s.asn and _known(s, speakers[j]) != s.cluster_id))
    bound = _CHANGES_PER_SESSION * (sum(map(len, links)) + 1)
    return _Net(names, speakers, near, silent, links, clients, bound)


def _known(at: Speaker, neighbour: Speaker) -> str | None:
    """The cluster ID that `at` configures for `neighbour` (Calico's template).

    A Calico node knows the cluster IDs of nodes only; an external host knows everyone's.
    """
    return neighbour.cluster_id if neighbour.node or not at.node else None


def _propagate(net: _Net, origin: int) -> dict[int, Path]:
    """Announce one route from `origin`; the best path of each speaker that has one."""
    best = {origin: LOCAL}
    rib: dict[int, dict[int, Path]] = {}  # receiver -> sender -> path (adj-rib-in)
    queue, queued = deque([origin]), {origin}
    budget = net.bound
    while queue:
        s = queue.popleft()
        queued.discard(s)
        path = best.get(s)
        for n, ibgp in net.links[s]:
            if n == origin:
                continue  # ORIGINATOR_ID: a speaker drops its own route
            out = _export(net, s, path, n, ibgp) if path is not None else None
            if out is not None and not _accepts(net, n, s, out):
                out = None
            heard = rib.setdefault(n, {})
            if heard.get(s) == out:
                continue
            budget -= 1
            if budget < 0:
                raise ConvergenceError(
                    f"route from {net.names[origin]} still changing after {net.bound} updates")
            if out is None:
                del heard[s]
            else:
                heard[s] = out
            new = min(heard.values()) if heard else None
            if new != best.get(n):
                if new is None:
                    del best[n]
                else:
                    best[n] = new
                if n not in queued:
                    queue.append(n)
                    queued.add(n)
    return best


def _cid(net: _Net, s: int, n: int) -> str:
    """The cluster ID that speaker `s` uses on its session with `n`.

    BIRD keeps one per session: `rr cluster id`, which Calico's template (and rrwatch's, on RR
    hosts) sets on client sessions only; any other session uses the router ID.
    """
    speaker = net.speakers[s]
    if n in net.clients[s]:
        return speaker.cluster_id  # type: ignore[return-value]  # clients only on RRs
    return "router/" + speaker.name


def _export(net: _Net, s: int, path: Path, n: int, ibgp: bool) -> Path | None:
    """What speaker `s` advertises to neighbour `n` of its best path (None: nothing).

    iBGP to iBGP follows BIRD (proto/bgp/attrs.c): reflect only to or from a client; never
    over a session whose cluster ID the path already carries; prepend the source session's
    cluster ID, and the target session's when it differs.
    """
    source = path[4]
    if source == n:
        return None
    speaker = net.speakers[s]
    internal = source >= 0 and path[1] == 1  # learned over iBGP
    if internal and ibgp:
        if source not in net.clients[s] and n not in net.clients[s]:
            return None  # from a non-client: to clients only
        out, came = _cid(net, s, n), _cid(net, s, source)
        if out in path[6]:
            return None
        clusters = (came, *path[6]) if out == came else (out, came, *path[6])
        return (len(path[5]), 1, len(clusters), int(speaker.address), s, path[5], clusters)
    if ibgp:
        return (len(path[5]), 1, len(path[6]), int(speaker.address), s, path[5], path[6])
    as_path = (speaker.asn, *path[5])
    return (len(as_path), 0, 0, int(speaker.address), s, as_path, ())


def _accepts(net: _Net, r: int, s: int, path: Path) -> bool:
    """Does speaker `r` keep `path` from neighbour `s`? Not with its own AS in the AS path, nor
    with its session's cluster ID in the cluster list."""
    if net.speakers[r].asn in path[5]:
        return False
    return not (path[1] == 1 and _cid(net, r, s) in path[6])


def _feeds_silent(net: _Net, s: int, path: Path | None) -> bool:
    """Would speaker `s` advertise `path` to a silent neighbour (which would keep it)?

    A silent node is a Calico node without a cluster ID, so every RR takes it for a client
    (session cluster ID: the RR's own); and it shares the AS of `s`, which has already dropped
    any path that loops through that AS.
    """
    if path is None:
        return False
    if path[4] < 0 or path[1] == 0:
        return True
    speaker = net.speakers[s]
    return speaker.reflector and speaker.cluster_id not in path[6]


# -- who misses whose route ----------------------------------------------------------------------


def unreachable(fab: Fabric, failed: str | None = None, *, group: bool = True
                ) -> list[tuple[str, str]]:
    """Sorted (origin, receiver) pairs of Calico nodes where the receiver lacks the route.

    `failed` names a speaker to take out first. `group=False` simulates every origin with every
    speaker, without the silent-receiver and twin shortcuts.
    """
    if failed is not None and failed not in fab.speakers:
        raise ValueError(f"{failed} is not a speaker of the IPv{fab.family} fabric")
    if not group:
        return _brute_force(_net(fab, failed, everyone=True))
    net = _net(fab, failed, everyone=False)
    names = net.names
    loud = [i for i, s in enumerate(net.speakers) if s.node and not net.silent[i]]
    # Silent receivers that hear from the same loud neighbours hear the same routes.
    classes: dict[tuple[int, ...], list[int]] = {}
    for i, silent in enumerate(net.silent):
        if silent:
            classes.setdefault(tuple(j for j, _ in net.links[i]), []).append(i)

    pairs = []
    origins = [[i] for i in loud] + _twins(net)
    for members in origins:
        origin = members[0]
        best = _propagate(net, origin)
        missed = {t for t in loud if t != origin and t not in best}
        neighbours = net.near[origin]
        for feeders, receivers in classes.items():
            if not any(_feeds_silent(net, j, best.get(j)) for j in feeders):
                # A silent origin reaches its own neighbours directly.
                missed.update(t for t in receivers if t != origin and names[t] not in neighbours)
        # A twin hears what its representative hears outside the group; inside, all or none.
        outside = missed.difference(members)
        inside_ok = any(t not in missed for t in members[1:])
        for member in members:
            lost = outside if inside_ok else outside.union(t for t in members if t != member)
            pairs.extend((names[member], names[t]) for t in lost)
    return sorted(pairs)


def _twins(net: _Net) -> list[list[int]]:
    """The silent nodes in groups of twins: same AS and neighbours, adjacent or not.

    Swapping two twins maps the fabric onto itself. Being silent, neither passes a route on, and
    a neighbour of the origin always prefers the origin's own announcement, so no tie-break on
    their addresses ever matters: each twin hears what the other hears. (A node cannot have
    twins of both kinds.)
    """
    apart: dict[tuple[frozenset[str], int], list[int]] = {}  # same neighbours, not adjacent
    for i, s in enumerate(net.speakers):
        if net.silent[i]:
            apart.setdefault((net.near[i], s.asn), []).append(i)
    groups = []
    adjacent: dict[tuple[frozenset[str], int], list[int]] = {}  # same neighbours and self
    for (near, asn), members in apart.items():
        if len(members) > 1:
            groups.append(members)
        else:
            adjacent.setdefault((near | {net.names[members[0]]}, asn), []).append(members[0])
    return groups + list(adjacent.values())


def _brute_force(net: _Net) -> list[tuple[str, str]]:
    nodes = [i for i, s in enumerate(net.speakers) if s.node]
    pairs = []
    for origin in nodes:
        best = _propagate(net, origin)
        pairs.extend((net.names[origin], net.names[t]) for t in nodes
                     if t != origin and t not in best)
    return sorted(pairs)

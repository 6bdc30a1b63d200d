"""Reachability: given the records in etcd, does every node's route reach every other node?

Pure code. The nodes, BGPPeers, external RR registrations and BGP configuration say which BGP
sessions come up (both ends must configure one); a simulation of route propagation per address
family, with RFC 4456 reflection, Calico's client rule, BIRD's per-session cluster IDs and
ADD-PATH, says who hears whose route. That is the check calico issue 2735 shows is needed: an
RR never passes a reflection from an RR of its own cluster ID to its clients, so the clients of
one cluster must all peer with every one of its RRs.

Speed: a non-RR node whose sessions are all iBGP ("silent") never passes on a learned route, so
the simulation leaves silent receivers out and reads their result off their neighbours at the
end; and silent nodes with the same neighbours ("twins": clients of the same RRs, or nodes of
one mesh) are interchangeable, so one origin stands for all of its twins.
`unreachable(..., group=False)` is the plain simulation that tests hold these shortcuts against.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import attrs

from rrwatch.core import calico
from rrwatch.core.model import ClusterState
from rrwatch.core.sessions import FAMILIES, Fabric, Speaker, fabric_of, peerings


@attrs.frozen
class Verdict:
    """The outcome of `verify`: configuration problems, and who does not hear whom."""

    problems: tuple[str, ...]
    unreachable: Mapping[tuple[int, str | None], tuple[tuple[str, str], ...]]
    scenarios: int
    # Configuration faults that take BGP down on nodes, or leave a BGPPeer selecting nothing:
    # never ok, whatever still reaches (the simulation runs on what remains).
    fatal: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.unreachable and not self.fatal

    def lines(self, limit: int = 20) -> list[str]:
        """A human report: fatal faults, problems, then per failing case a header and its
        first pairs."""
        out = [f"fatal: {fault}" for fault in self.fatal]
        out += [f"problem: {problem}" for problem in self.problems]
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
    peering = peerings(state)
    problems = set(peering.problems)
    found = {}
    scenarios = 0
    for family in FAMILIES:
        fab, more = fabric_of(state, family, peering)
        problems.update(more)
        if not fab.speakers:
            continue
        for failed in [None, *sorted(fab.reflectors)] if failures else [None]:
            scenarios += 1
            pairs = unreachable(fab, failed)
            if pairs:
                found[(family, failed)] = tuple(pairs)
    fatal = [*peering.fatal, *(
        f"node {key[len(calico.NODES):]}: {why}: confd passes it on, and its BIRD refuses the"
        " configuration: no BGP there" for key, why in state.bird_refuses.items())]
    return Verdict(tuple(sorted(problems)), found, scenarios, tuple(sorted(fatal)))


# -- propagation ---------------------------------------------------------------------------------

# A path as the simulation needs it: (kind, cluster list, AS path, neighbour it came from), the
# lists as sets (only loops matter: with ADD-PATH no speaker chooses between paths).
Path = tuple[int, frozenset[str], frozenset[int], int]
OWN, CLIENT, PEER = 0, 1, 2  # the origin's own or over eBGP; over iBGP from a client; otherwise
LOCAL: Path = (OWN, frozenset(), frozenset(), -1)


@attrs.define
class Net:
    """One scenario of a fabric as integer-indexed lists, for the simulation."""

    names: list[str]
    speakers: list[Speaker]
    near: list[frozenset[str]]  # per speaker: the names of its neighbours
    silent: list[bool]  # a non-RR node with only iBGP sessions: never passes a route on
    links: list[list[tuple[int, bool]]]  # per speaker: (neighbour, iBGP), the ones to simulate
    clients: list[frozenset[int]]  # per RR speaker: its iBGP clients


def index_net(fab: Fabric, failed: str | None, everyone: bool) -> Net:
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
        clients.append(frozenset(index[m] for m in fab.clients(s.name) if m in index))
    return Net(names, speakers, near, silent, links, clients)


def propagate(net: Net, origin: int) -> dict[int, list[Path]]:
    """Announce one route from `origin`: the paths each speaker that has one holds.

    Calico sets `add paths on` on every session, so a speaker passes on every path it holds,
    not only its best: who hears a route does not depend on path selection, and adding a
    session never takes a route away. A path that could go nowhere another held path cannot
    (`_below`) is left out, which bounds the search: paths only ever grow.
    """
    held = {origin: [LOCAL]}
    todo = deque([(origin, LOCAL)])  # breadth first: short paths come first and cover long ones
    while todo:
        s, path = todo.popleft()
        for n, ibgp in net.links[s]:
            if n == origin:
                continue  # ORIGINATOR_ID: a speaker drops its own route
            out = _export(net, s, path, n, ibgp)
            if out is None or not _accepts(net, n, s, out):
                continue
            mine = held.setdefault(n, [])
            if _covered(out, mine):
                continue
            mine[:] = [p for p in mine if not _below(out, p)]
            mine.append(out)
            todo.append((n, out))
    return held


def _below(a: Path, b: Path) -> bool:
    """Can `a` go wherever `b` can? Each of kind, cluster list and AS path no worse: export
    and acceptance only ever refuse on these growing.

    Where `a` came from does not matter, though BIRD sends no path back to its neighbour `x`:
    what `b` would bring `x`, `x` refuses or holds already. It holds the path it sent as `a`
    (or one below), whose lists `b`'s include; its kind is no worse unless `x` reflected it from
    a non-client, and then `b`'s cluster list carries `x`'s own cluster ID for that session, so
    `x` refuses `b`. (Over eBGP, `b`'s AS path carries `x`'s AS.)
    """
    return a[0] <= b[0] and a[1] <= b[1] and a[2] <= b[2]


def _covered(path: Path, held: list[Path]) -> bool:
    return any(_below(p, path) for p in held)


def _cid(net: Net, s: int, n: int) -> str:
    """The cluster ID that speaker `s` uses on its session with `n`.

    BIRD keeps one per session: `rr cluster id`, which Calico's template (and rrwatch's, on RR
    hosts) sets on client sessions only; any other session uses the router ID.
    """
    speaker = net.speakers[s]
    if speaker.cluster_id is not None and n in net.clients[s]:  # only RRs have clients
        return speaker.cluster_id
    return "router/" + speaker.name


def _export(net: Net, s: int, path: Path, n: int, ibgp: bool) -> Path | None:
    """What speaker `s` advertises to neighbour `n` of `path` (None: nothing).

    iBGP to iBGP follows BIRD (proto/bgp/attrs.c): reflect only to or from a client; never
    over a session whose cluster ID the path already carries; add the source session's cluster
    ID and the target session's.
    """
    kind, clusters, ases, source = path
    if source == n:
        return None
    if not ibgp:
        return (OWN, frozenset(), ases | {net.speakers[s].asn}, s)
    if kind != OWN:
        if kind == PEER and n not in net.clients[s]:
            return None  # from a non-client: to clients only
        out = _cid(net, s, n)
        if out in clusters:
            return None
        clusters = clusters | {out, _cid(net, s, source)}
    return (CLIENT if s in net.clients[n] else PEER, clusters, ases, s)


def _accepts(net: Net, r: int, s: int, path: Path) -> bool:
    """Does speaker `r` keep `path` from neighbour `s`? Not with its own AS in the AS path, nor
    with its session's cluster ID in the cluster list."""
    return net.speakers[r].asn not in path[2] and _cid(net, r, s) not in path[1]


def feeds_silent(net: Net, s: int, paths: list[Path]) -> bool:
    """Would speaker `s` advertise one of `paths` to a silent neighbour (which would keep it)?

    A silent node is a Calico node without a cluster ID, so every RR takes it for a client
    (session cluster ID: the RR's own); and it shares the AS of `s`, which has already dropped
    any path that loops through that AS.
    """
    speaker = net.speakers[s]
    return any(p[0] == OWN or (speaker.reflector and speaker.cluster_id not in p[1])
               for p in paths)


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
        return _brute_force(index_net(fab, failed, everyone=True))
    net = index_net(fab, failed, everyone=False)
    names = net.names
    loud = [i for i, s in enumerate(net.speakers) if s.node and not net.silent[i]]
    # Silent receivers that hear from the same loud neighbours hear the same routes.
    classes: dict[tuple[int, ...], list[int]] = {}
    for i, silent in enumerate(net.silent):
        if silent:
            classes.setdefault(tuple(j for j, _ in net.links[i]), []).append(i)

    pairs: list[tuple[str, str]] = []
    origins = [[i] for i in loud] + _twins(net)
    for members in origins:
        origin = members[0]
        held = propagate(net, origin)
        missed = {t for t in loud if t != origin and t not in held}
        neighbours = net.near[origin]
        for feeders, receivers in classes.items():
            if not any(feeds_silent(net, j, held.get(j, [])) for j in feeders):
                # A silent origin reaches its own neighbours directly.
                missed.update(t for t in receivers if t != origin and names[t] not in neighbours)
        # A twin hears what its representative hears outside the group; inside, all or none.
        outside = missed.difference(members)
        inside_ok = any(t not in missed for t in members[1:])
        for member in members:
            lost = outside if inside_ok else outside.union(t for t in members if t != member)
            pairs.extend((names[member], names[t]) for t in lost)
    return sorted(pairs)


def _twins(net: Net) -> list[list[int]]:
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


def _brute_force(net: Net) -> list[tuple[str, str]]:
    nodes = [i for i, s in enumerate(net.speakers) if s.node]
    pairs: list[tuple[str, str]] = []
    for origin in nodes:
        held = propagate(net, origin)
        pairs.extend((net.names[origin], net.names[t]) for t in nodes
                     if t != origin and t not in held)
    return sorted(pairs)

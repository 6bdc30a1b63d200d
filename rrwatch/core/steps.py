"""Plans verified step by step: does the state after a step still carry every route that reaches
now? Pure code.

Removing a session can cut the last path between two parts of the mesh. A new cluster ID, or
a peering that makes a session a client session, can make an RR refuse a reflection it passed
on (issue 2735's rule); a promotion takes a node out of the node-to-node mesh. Only adding a
session alone never hides a route: Calico sets `add paths on`, so a speaker passes on every path
it holds (without ADD-PATH, a new best path that an RR may not reflect would hide the old one).
So a step is taken only if no (origin, receiver) pair of Calico nodes that reaches now would not
reach after it. The judgement is relative to now: a step that repairs a broken cluster is taken,
whatever stays broken, and only what a step would lose refuses it.

The simulation is `reachability`'s, and so is its main shortcut: a silent node (a non-RR node
whose sessions are all iBGP) never passes a route on, so routes travel through the loud speakers
only (RRs, RR hosts, nodes with eBGP sessions). Hence the propagation of a silent origin's route
depends only on the loud speakers, their attributes and their sessions with each other (the
"core"), and on the origin's AS and loud neighbours: the origin's first hop is its direct
announcement, which its neighbours always prefer (shortest cluster list), and it is a client of
each of them; after that only loud speakers speak. A silent receiver hears a route when one of
its loud neighbours passes it on to silent nodes, or when it is the origin's neighbour.

`Steps` remembers each propagation by (core, origin's AS and loud neighbours), for the last few
cores. A step that moves clients between RRs (most of a `multi` plan) keeps the core, so it costs
a propagation per new set of RRs, and set operations per node; a step that changes the core
(a promotion, a demotion, an RR's BGPPeer) costs what `verify` costs.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import attrs

from rrwatch.core.model import ClusterState
from rrwatch.core.plan import Op, outcome, reids
from rrwatch.core.reachability import Net, feeds_silent, index_net, propagate
from rrwatch.core.sessions import FAMILIES, Fabric, Speaker, fabric, fabric_of, peerings
from rrwatch.core.text import printable

SHOWN = 5  # pairs a Loss names
CORES = 4  # cores whose propagations a Steps keeps

Pair = tuple[str, str]
NONE: frozenset[str] = frozenset()


@attrs.frozen
class Loss:
    """The pairs of one family that reach now and would not after the step."""

    family: int
    count: int
    pairs: tuple[Pair, ...]  # the first SHOWN of them, sorted

    def __str__(self) -> str:
        shown = ", ".join(f"{origin} -> {receiver}" for origin, receiver in self.pairs)
        more = f" and {self.count - len(self.pairs)} more" if self.count > len(self.pairs) else ""
        return printable(f"IPv{self.family}: {self.count} (origin -> receiver) would stop"
                         f" reaching: {shown}{more}")


@attrs.frozen
class Check:
    """The judgement of a step: what it would lose."""

    losses: tuple[Loss, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.losses

    @property
    def count(self) -> int:
        return sum(loss.count for loss in self.losses)

    def __str__(self) -> str:
        if not self.losses:
            return "every route that reaches now still reaches"
        return "; ".join(map(str, self.losses))


def applied(state: ClusterState, ops: Sequence[Op]) -> ClusterState:
    """A copy of `state` with `ops` applied (`plan.outcome`). The copy shares the frozen
    values (nodes, peers, registrations, reports, addresses), which `outcome` replaces and
    never changes: a tenth of the cost of a deep copy."""
    shared: dict[int, object] = {}
    for values in (state.nodes, state.peers, state.reflectors, state.registrations,
                   state.reports):
        shared.update((id(v), v) for v in values.values())
    shared.update((id(ip), ip) for ip in state.node_addresses)
    after = copy.deepcopy(state, shared)
    outcome(after, ops)
    return after


def _without(state: ClusterState, names: frozenset[str]) -> ClusterState:
    """`state` with the nodes `names` gone, for the fabric alone (as `breaks` builds it)."""
    return ClusterState(state.zone_label, state.rr_label, state.exclude, state.prefer,
                        nodes={n: v for n, v in state.nodes.items() if n not in names},
                        peers=state.peers, reflectors=state.reflectors, bgp=state.bgp)


def check(state: ClusterState, ops: Sequence[Op]) -> Check:
    """Whether the state after `ops` carries every route that reaches in `state` (one-shot)."""
    return Steps().check(state, ops)


# -- one fabric, as the simulation sees it -------------------------------------------------------

Key = tuple[object, ...]  # an origin: ("loud", name) or ("silent", AS, loud neighbours)
Desc = tuple[bool, object]  # a receiver: (True, name) if loud, else (False, loud neighbours)


@attrs.frozen
class _Reach:
    """Where one origin's route goes, as complements (empty in a healthy mesh, so cheap to keep):
    the loud speakers without a path, and those that pass none on to silent nodes."""

    unreached: frozenset[str]
    unfed: frozenset[str]

    def misses(self, desc: Desc) -> bool:
        """The route misses a receiver so described, unless it is the origin's neighbour (for
        a silent receiver, which hears its neighbours directly)."""
        loud, what = desc
        return what in self.unreached if loud else what <= self.unfed  # type: ignore[operator]


@attrs.define
class _View:
    fab: Fabric
    keys: dict[str, Key]  # per node speaker: its key as an origin
    descs: dict[str, Desc]  # per node speaker: its description as a receiver
    silent: frozenset[str]
    core: frozenset[tuple[Speaker, frozenset[str]]]  # loud speakers and their loud neighbours


def _views(state: ClusterState) -> dict[int, _View]:
    """Both families' views (the BGPPeers read once for both)."""
    peering = peerings(state)
    return {family: _view(fabric_of(state, family, peering)[0]) for family in FAMILIES}


def _view(fab: Fabric) -> _View:
    """The fabric by origin keys and receiver descriptions. Silent is `reachability.index_net`'s
    rule, read here without building the simulation's net (built only for a propagation not
    yet remembered); a test holds the two alike."""
    by_as: dict[int, set[str]] = {}
    for speaker in fab.speakers.values():
        by_as.setdefault(speaker.asn, set()).add(speaker.name)
    silent = frozenset(name for name, s in fab.speakers.items() if s.node and not s.reflector
                       and fab.sessions[name] <= by_as[s.asn])
    keys: dict[str, Key] = {}
    descs: dict[str, Desc] = {}
    core = set()
    for name, speaker in fab.speakers.items():
        mine = fab.sessions[name] - silent  # its loud neighbours
        if name not in silent:
            core.add((speaker, mine))
            if speaker.node:
                keys[name], descs[name] = ("loud", name), (True, name)
        else:
            keys[name], descs[name] = ("silent", speaker.asn, mine), (False, mine)
    return _View(fab, keys, descs, silent, frozenset(core))


# -- the check -----------------------------------------------------------------------------------


class Steps:
    """Judges steps against the model, remembering propagations per core (module docstring)."""

    def __init__(self) -> None:
        self._memo: OrderedDict[tuple[int, frozenset[tuple[Speaker, frozenset[str]]]],
                                dict[Key, _Reach]] = OrderedDict()
        self._now: tuple[int, dict[int, _View]] | None = None

    def check(self, state: ClusterState, ops: Sequence[Op], *, version: int | None = None
              ) -> Check:
        """Whether the state after `ops` carries every route that reaches in `state`.

        `version`: the model's version (it changes whenever the model does, whatever copy of
        it `state` is), so that the judgements of several steps from one model read its
        sessions once.
        """
        return self.compare(state, applied(state, ops), version=version,
                            restarted=reids(ops))

    def compare(self, before: ClusterState, after: ClusterState, *,
                version: int | None = None, restarted: frozenset[str] = NONE) -> Check:
        """The pairs that reach in `before` and would not in `after`; and, if RRs take a new
        cluster ID (`restarted`), would not while BIRD restarts each of their sessions, with
        them gone (the pairs of their own aside: those blink whatever is done). A step that
        deletes the peer giving every client every RR, and re-IDs RRs with it, can be whole
        before and after, and cut clients off while the RRs restart."""
        verdict = self._compare(before, after, version)
        if verdict.ok and restarted:
            verdict = self._compare(before, _without(after, restarted), version)
        return verdict

    def _compare(self, before: ClusterState, after: ClusterState, version: int | None
                 ) -> Check:
        losses = []
        now, then = self._views(before, version), _views(after)
        for family in FAMILIES:
            old, new = now[family], then[family]
            if old.fab == new.fab or not new.keys:
                continue  # the same sessions carry the same routes
            reach_after = self._reach(new)
            if _whole(new, reach_after):
                continue  # every route reaches after it: nothing is lost, whatever now is
            reach_before = self._reach(old)
            if loss := _lost(family, old, new, reach_before, reach_after):
                losses.append(loss)
        return Check(tuple(losses))

    def unreachable(self, state: ClusterState, family: int) -> list[Pair]:
        """Every (origin, receiver) pair that does not reach, as `reachability.unreachable`
        finds them (for tests, which hold the two alike)."""
        view = _view(fabric(state, family))
        reach = self._reach(view)
        return sorted((o, t) for o in view.keys for t in view.keys if t != o and reach[
            view.keys[o]].misses(view.descs[t]) and not (
                t in view.silent and t in view.fab.sessions[o]))

    def _views(self, state: ClusterState, version: int | None) -> dict[int, _View]:
        if version is None:
            return _views(state)
        if self._now is None or self._now[0] != version:
            self._now = (version, _views(state))
        return self._now[1]

    def _reach(self, view: _View) -> Mapping[Key, _Reach]:
        slot = (view.fab.family, view.core)
        memo = self._memo.get(slot)
        if memo is None:
            memo = self._memo[slot] = {}
            while len(self._memo) > CORES:
                self._memo.popitem(last=False)
        self._memo.move_to_end(slot)
        net: Net | None = None
        index: dict[str, int] = {}
        loud: list[int] = []
        for name, key in view.keys.items():
            if key not in memo:  # one propagation stands for every origin with this key
                if net is None:
                    net = index_net(view.fab, None, everyone=False)
                    index = {n: i for i, n in enumerate(net.names)}
                    loud = [i for i, quiet in enumerate(net.silent) if not quiet]
                memo[key] = _run(net, index[name], loud)
        return memo


def _whole(view: _View, reach: Mapping[Key, _Reach]) -> bool:
    """Every route reaches every node in `view` (checked by origin keys and receiver classes,
    without the neighbours that hear a silent origin directly: so it may say no when the
    answer is yes, never the reverse). Then the state before need not be simulated, which is
    most of the cost when the RRs change: a repair ends in such a state."""
    loud = {what for loud, what in view.descs.values() if loud}
    classes = {what for loud, what in view.descs.values() if not loud}
    for key in set(view.keys.values()):
        r = reach[key]
        if not r.unreached.isdisjoint(loud):
            return False
        if r.unfed and any(feeders <= r.unfed for feeders in classes):  # type: ignore[operator]
            return False
        if NONE in classes:
            return False
    return True


def _run(net: Net, origin: int, loud: Sequence[int]) -> _Reach:
    held = propagate(net, origin)
    return _Reach(frozenset(net.names[j] for j in loud if j not in held), frozenset(
        net.names[j] for j in loud if not feeds_silent(net, j, held.get(j, []))))


def _lost(family: int, old: _View, new: _View, before: Mapping[Key, _Reach],
          after: Mapping[Key, _Reach]) -> Loss | None:
    """The pairs that reach in `old` and miss in `new`.

    A pair misses when the origin's route misses the receiver's description (`_Reach.misses`)
    and the receiver is not a silent neighbour of the origin. So a pair is lost when (i) its
    description misses after and not before, and it is no silent neighbour after; or (ii) it
    misses by description in both, and was a silent neighbour before but is not after (a
    removed session). (i) is worked out per group of origins with the same keys and group of
    receivers with the same descriptions; (ii) per origin, over its lost neighbours.
    """
    nodes = old.keys.keys() & new.keys.keys()
    origins: dict[tuple[Key, Key], list[str]] = {}
    receivers: dict[tuple[Desc, Desc], list[str]] = {}
    for name in sorted(nodes):
        origins.setdefault((old.keys[name], new.keys[name]), []).append(name)
        receivers.setdefault((old.descs[name], new.descs[name]), []).append(name)
    # Receivers a route can miss, after, when every loud speaker passes it on to silent nodes:
    # loud ones it does not reach, and silent ones with no loud neighbour at all.
    unfed = [(d, members) for d, members in receivers.items() if d[1] == (False, NONE)]
    loud = [(d, members) for d, members in receivers.items() if d[1][0]]
    lost: dict[str, set[str]] = {}
    for (key_b, key_a), members in origins.items():
        rb, ra = before[key_b], after[key_a]
        groups = receivers.items() if ra.unfed else unfed + [
            ((db, da), ts) for (db, da), ts in loud if da[1] in ra.unreached]
        gone = frozenset(t for (db, da), ts in groups if ra.misses(da) and not rb.misses(db)
                         for t in ts)
        for origin in members:
            near_a = new.fab.sessions[origin] & new.silent
            out = set(gone - near_a) if gone else set()
            # (ii) silent neighbours before, and neither after
            for t in (old.fab.sessions[origin] & old.silent) - near_a:
                if t in nodes and ra.misses(new.descs[t]) and rb.misses(old.descs[t]):
                    out.add(t)
            out.discard(origin)
            if out:
                lost[origin] = out
    count = sum(map(len, lost.values()))
    shown = tuple(sorted((o, t) for o, ts in lost.items() for t in ts)[:SHOWN]) if count else ()
    return Loss(family, count, shown) if count else None

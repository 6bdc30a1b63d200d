"""Plans verified step by step: does the state after a step still carry every route that reaches
now? Pure code.

Adding a session can hide a route. Without ADD-PATH a speaker passes on its best path only, and
a new session can hand an RR a best path that it may not reflect to its clients (one that
carries its own cluster ID, issue 2735's rule), so clients that heard the route through the old
best path lose it: an "iBGP deception". Removing a session can cut the last path between two
parts of the mesh. So a step is taken only if no (origin, receiver) pair of Calico nodes that
reaches now would not reach after it. The judgement is relative to now: a step that repairs a
broken cluster is taken, whatever stays broken, and only what a step would lose refuses it.

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
from collections.abc import Iterator, Mapping, Sequence

import attrs

from rrwatch.core.model import ClusterState
from rrwatch.core.plan import Limits, Op, outcome
from rrwatch.core.reachability import ConvergenceError, _feeds_silent, _Net, _net, _propagate
from rrwatch.core.sessions import FAMILIES, Fabric, Speaker, _fabric, _peering, fabric
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
    """The judgement of a step: what it would lose, or why its result cannot be judged."""

    losses: tuple[Loss, ...] = ()
    problem: str = ""  # the route propagation after the step does not settle

    @property
    def ok(self) -> bool:
        return not self.losses and not self.problem

    @property
    def count(self) -> int:
        return sum(loss.count for loss in self.losses)

    def __str__(self) -> str:
        if self.problem:
            return printable(self.problem)
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
    peering = _peering(state)
    return {family: _view(_fabric(state, family, peering)[0]) for family in FAMILIES}


def _view(fab: Fabric) -> _View:
    """The fabric by origin keys and receiver descriptions. Silent is `reachability._net`'s
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
        return self.compare(state, applied(state, ops), version=version)

    def compare(self, before: ClusterState, after: ClusterState, *,
                version: int | None = None) -> Check:
        """The pairs that reach in `before` and would not in `after`."""
        losses = []
        now, then = self._views(before, version), _views(after)
        for family in FAMILIES:
            old, new = now[family], then[family]
            if old.fab == new.fab or not new.keys:
                continue  # the same sessions carry the same routes
            try:
                reach_after = self._reach(new)
            except ConvergenceError as e:
                return Check(problem=f"IPv{family} after this step: {e}")
            if _whole(new, reach_after):
                continue  # every route reaches after it: nothing is lost, whatever now is
            try:
                reach_before = self._reach(old)
            except ConvergenceError:
                continue  # no route is known to reach now: nothing to lose
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
        net: _Net | None = None
        index: dict[str, int] = {}
        loud: list[int] = []
        for name, key in view.keys.items():
            if key not in memo:  # one propagation stands for every origin with this key
                if net is None:
                    net = _net(view.fab, None, everyone=False)
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


def _run(net: _Net, origin: int, loud: Sequence[int]) -> _Reach:
    best = _propagate(net, origin)
    return _Reach(frozenset(net.names[j] for j in loud if j not in best),
                  frozenset(net.names[j] for j in loud if not _feeds_silent(net, j, best.get(j))))


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


# -- which ops to take ----------------------------------------------------------------------------


def take_make(judge: Steps, state: ClusterState, phase: Sequence[Op], step: Sequence[Op], *,
              version: int | None = None) -> tuple[tuple[Op, ...], Check]:
    """The make ops to write now, and the check that took or refused them.

    The step (the phase cut by the churn limit) if it loses nothing. Otherwise the whole phase,
    if that loses nothing: a cut can leave routes in mid-air that the rest of the phase carries.
    With the node-to-node mesh on, for one, promoted RRs leave the mesh at once, and the clients
    not yet in the step have no session with them until their own writes; every cut of a first
    start would then be refused, and holding would never converge. Smaller cuts are no help: a
    prefix of promotions without the peers that follow them loses more. Every step that is
    taken loses nothing, so neither does the phase they add up to. If the whole phase would
    lose routes, nothing is taken: the check returned is the phase's.
    """
    verdict = judge.check(state, step, version=version)
    if verdict.ok:
        return tuple(step), verdict
    if len(step) < len(phase):
        verdict = judge.check(state, phase, version=version)
        if verdict.ok:
            return tuple(phase), verdict
    return (), verdict


def take_break(judge: Steps, state: ClusterState, step: Sequence[Op], *,
               version: int | None = None) -> tuple[tuple[Op, ...], Check]:
    """The longest of the break step, its first half, quarter, ... down to its first op, that
    loses nothing (break ops remove sessions one by one, in the plan's order: clients off old
    RRs, then BGPPeers, then demotions); none if each would lose routes, with the step's check.
    """
    first = verdict = judge.check(state, step, version=version)
    n = len(step)
    while not verdict.ok and n > 1:
        n //= 2
        verdict = judge.check(state, step[:n], version=version)
    return (tuple(step[:n]), verdict) if verdict.ok else ((), first)


def phases(state: ClusterState, make: Sequence[Op], brk: Sequence[Op], limits: Limits
           ) -> Iterator[tuple[str, tuple[Op, ...], Check]]:
    """The make phase as a whole, then the break phase in the steps that `limits` cuts, each
    judged against the state that the one before leaves (for `plan`): (name, ops, check). Stops
    after the first that is refused: the daemon holds there."""
    judge = Steps()
    now = state
    cuts: list[tuple[str, tuple[Op, ...]]] = [("make phase", tuple(make))] if make else []
    rest = tuple(brk)
    while rest and (step := limits.step(rest)):
        cuts.append((f"break step {len(cuts) + 1 - bool(make)}", step))
        taken = set(map(id, step))
        rest = tuple(op for op in rest if id(op) not in taken)
    for name, ops in cuts:
        after = applied(now, ops)
        verdict = judge.compare(now, after)
        yield name, ops, verdict
        if not verdict.ok:
            return
        now = after

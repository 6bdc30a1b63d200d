"""Breaks verified: a step of the break phase removes BGP sessions only where the sessions that
replace them are Established. Pure code: the daemon brings the RRs' reports (in the model), what
it saw of them on its own clock (`Up`), and when each session was last configured.

A break is any change that removes a session: a demotion, a client moved off an RR, a BGPPeer
deleted. Every speaker that loses a session must keep enough verified sessions to the RRs it will
have: enough is min(the RR sessions it will have, the RR sessions Established now). A verified
session was reported Established in an episode the leader first saw after the write that
configured the session, and has stayed up for the dwell time since. A speaker with no Established
session anywhere is already down, and never holds a break.

`mode`: "require" holds a break while a report it needs is missing; "auto" judges where reports
exist and lets the rest go on the timer (counted as unverified); "off" lets every break go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from rrwatch.core.model import ClusterState
from rrwatch.core.plan import Op, SetNode, outcome, reids
from rrwatch.core.reports import Session
from rrwatch.core.sessions import FAMILIES, Fabric, fabric

MODES = ("require", "auto", "off")


@attrs.frozen
class Up:
    """An Established episode of a session as the leader first saw it in a report."""

    since: str  # the report's `since`, which names the episode
    seen_at: float  # the leader's clock (monotonic seconds) when it first saw it
    revision: int  # the revision of the report it first saw it in


@attrs.frozen
class Hold:
    """A speaker that the break would leave short, and one RR session it waits for."""

    speaker: str
    rr: str
    state: str  # BIRD's state of that session as reported, or "not reported"; Established
    # but "not yet verified": up for less than the dwell, or seen only before its configuration
    error: str = ""  # BIRD's last error on it

    def __str__(self) -> str:
        error = f" ({self.error})" if self.error else ""
        return f"{self.speaker} waits for its session with {self.rr}: {self.state}{error}"


@attrs.frozen
class Judgement:
    holds: tuple[Hold, ...] = ()
    timer: bool = False  # some of it goes on the timer alone (auto: no report to judge by)

    @property
    def ok(self) -> bool:
        return not self.holds


@attrs.frozen
class Evidence:
    """What the leader knows of the sessions: the reports in `state`, and its own sightings."""

    ups: Mapping[str, Mapping[str, Up]]  # reporter -> neighbour address -> episode seen
    configured: Mapping[frozenset[str], int]  # session (its two speakers) -> revision written
    now: float
    dwell: float


def judge(before: ClusterState, after: ClusterState, evidence: Evidence, mode: str,
          fabrics: Fabrics | None = None) -> Judgement:
    """Whether going from `before` to `after` keeps every speaker that loses a session above
    its need. `fabrics` keeps the sessions the records configure from one judgement to the
    next, while the records stay the same (the reports may change)."""
    if mode == "off":
        return Judgement()
    of = fabric if fabrics is None else fabrics.of
    holds: list[Hold] = []
    timer = False
    for family in FAMILIES:
        old, new = of(before, family), of(after, family)
        entries = _Entries(before, old)
        after_entries = entries.over(new)
        for name in sorted(new.speakers):
            if old.sessions.get(name, frozenset()) <= new.sessions[name]:
                continue  # it loses nothing
            short, blind = _judge_speaker(before, entries, after_entries, name, evidence, mode)
            holds += short
            timer = timer or blind
    return Judgement(tuple(holds), timer)


def _judge_speaker(state: ClusterState, entries: _Entries, after: _Entries, name: str,
                   evidence: Evidence, mode: str) -> tuple[list[Hold], bool]:
    """The holds for one speaker that loses a session, and whether the timer judged it."""
    old, new, session = entries.fab, after.fab, entries.session
    keep = sorted(new.reflectors_of(name))
    known = {r: session(r, name) for r in old.sessions.get(name, frozenset())}
    if mode == "auto" and all(s is None for s in known.values()):
        return [], bool(keep)  # nobody reports on it: the timer decides
    unreported = [r for r in keep if not ({r, name} & state.reports.keys())]
    if unreported and mode == "require":
        return [Hold(name, r, "not reported") for r in unreported], False
    if not any(s is not None and s.established for s in known.values()):
        return [], False  # already down: nothing to keep
    up_now = sum(1 for r in old.reflectors_of(name) if (s := known.get(r)) and s.established)
    need = min(len(keep), up_now)
    verified = {r for r in keep if r in unreported or _verified(after, r, name, evidence)}
    if len(verified) >= need:
        return [], bool(unreported)
    waits = []
    for r in keep:
        if r not in verified:
            s = known[r] if r in known else session(r, name)
            waits.append(Hold(name, r, "not reported" if s is None else s.state if not
                              s.established else "Established, not yet verified",
                              "" if s is None else s.error))
    return waits, False


class Fabrics:
    """The fabrics of the last records seen (the model before a step, after it, and after the
    part of it judged again), kept while those records stay the same: while breaks are held,
    the reports change and the records do not. Records are compared by value against copies
    of their maps, so a model changed in place is seen changed; the copies hold the nodes, so
    an unchanged model costs a pass of identity checks."""

    def __init__(self, size: int = 3) -> None:
        self._size = size
        self._kept: list[tuple[tuple[object, ...], dict[int, Fabric]]] = []

    def of(self, state: ClusterState, family: int) -> Fabric:
        records = (state.nodes, state.peers, state.bgp, state.reflectors)
        found = next((kept for kept in self._kept if kept[0] == records), None)
        if found is None:
            found = ((dict(state.nodes), dict(state.peers), state.bgp, dict(state.reflectors)),
                     {})
        self._kept = [found, *(kept for kept in self._kept if kept is not found)][:self._size]
        fabs = found[1]
        if family not in fabs:
            fabs[family] = fabric(state, family)
        return fabs[family]


class _Entries:
    """The reports in `state` read against one fabric: what a reporter says of its session with
    a neighbour, found by the neighbour's address, each address written out once."""

    def __init__(self, state: ClusterState, fab: Fabric,
                 addresses: dict[str, str] | None = None) -> None:
        self.state = state
        self.fab = fab
        self._addresses = {} if addresses is None else addresses
        # What each report that could be read says (a report of a BIRD that did not answer
        # says nothing), by neighbour address.
        self._said = {reporter: report.sessions for reporter, report in state.reports.items()
                      if report.ok}

    def over(self, fab: Fabric) -> _Entries:
        """The same reports read against `fab`: a fabric of the same records with some
        changes, whose speakers keep their addresses (ops change labels, never addresses)."""
        return self if fab is self.fab else _Entries(self.state, fab, self._addresses)

    def address(self, name: str) -> str:
        address = self._addresses.get(name)
        if address is None:
            address = self._addresses[name] = str(self.fab.speakers[name].address)
        return address

    def entry(self, reporter: str, neighbour: str) -> Session | None:
        said = self._said.get(reporter)
        if said is None or neighbour not in self.fab.speakers:
            return None
        return said.get(self.address(neighbour))

    def session(self, a: str, b: str) -> Session | None:
        """The session between two speakers as reported by either: a session is Established
        only when every side that reports it says so, so a side that says otherwise speaks
        for it."""
        first, second = self.entry(a, b), self.entry(b, a)
        if first is None:
            return second
        if second is not None and first.established and not second.established:
            return second
        return first


def _verified(entries: _Entries, rr: str, name: str, evidence: Evidence) -> bool:
    """Reported Established, by every side that reports it, in an episode first seen after the
    session's configuration was written, and up for the dwell time since."""
    configured = evidence.configured.get(frozenset((rr, name)), 0)
    sides = 0
    for reporter, neighbour in ((rr, name), (name, rr)):
        session = entries.entry(reporter, neighbour)
        if session is None:
            continue
        up = evidence.ups.get(reporter, {}).get(entries.address(neighbour))
        if not (session.established and up is not None and up.since == _since(session)
                and up.revision > configured and evidence.now - up.seen_at >= evidence.dwell):
            return False
        sides += 1
    return sides > 0


def mesh_off_problems(state: ClusterState, k: int) -> list[str]:
    """Why the node-to-node mesh cannot go off now: each client without Established sessions
    to k RRs (to all of its RRs, when it has fewer), on every side that reports them. A
    session nobody reports is not known to be up."""
    out = []
    for family in FAMILIES:
        fab = fabric(state, family)
        session = _Entries(state, fab).session
        for name, speaker in sorted(fab.speakers.items()):
            if speaker.reflector or not speaker.node:
                continue
            rrs = sorted(fab.reflectors_of(name))
            down = {r: s.state if (s := session(r, name)) else "not reported" for r in rrs}
            down = {r: why for r, why in down.items() if why != "Established"}
            need = min(k, len(rrs))
            if not rrs:
                out.append(f"{name} (IPv{family}): no RR session configured")
            elif len(rrs) - len(down) < need:
                out.append(f"{name} (IPv{family}): {len(rrs) - len(down)} of {need} RR sessions"
                           " Established (" + ", ".join(f"{r}: {why}" for r, why in
                                                        down.items()) + ")")
    return out


def _since(session: Session) -> str:
    return session.since.isoformat()


def sightings(state: ClusterState, ups: Mapping[str, Mapping[str, Up]], now: float,
              reporters: Iterable[str] | None = None) -> dict[str, dict[str, Up]]:
    """The Established episodes in the reports, each as first seen: kept from `ups` while its
    `since` holds, new ones seen `now` at their report's revision. Only `reporters` (whose
    reports changed) are read again: the cost is in proportion to the change."""
    out = {reporter: dict(seen) for reporter, seen in ups.items()
           if reporter in state.reports}
    for reporter in state.reports.keys() if reporters is None else reporters:
        report = state.reports.get(reporter)
        if report is None or not report.ok:
            out.pop(reporter, None)
            continue
        before = ups.get(reporter, {})
        revision = state.report_revisions.get(reporter, 0)
        seen = {}
        for address, session in report.sessions.items():
            if session.established:
                since = _since(session)
                old = before.get(address)
                seen[address] = old if old is not None and old.since == since else Up(
                    since, now, revision)
        out[reporter] = seen
    return out


def next_dwell(ups: Mapping[str, Mapping[str, Up]], now: float, dwell: float) -> float | None:
    """When the next episode seen completes its dwell, if one has yet to."""
    pending = [up.seen_at + dwell for seen in ups.values() for up in seen.values()
               if up.seen_at + dwell > now]
    return min(pending, default=None)


def step(state: ClusterState, ops: Sequence[Op], evidence: Evidence, mode: str,
         fabrics: Fabrics | None = None) -> tuple[tuple[Op, ...], Judgement]:
    """The break ops that may go now, and the judgement of the whole step (its holds).

    When the step holds, the ops that touch no held speaker or its RRs are judged again on
    their own: a demotion elsewhere need not wait for this one. Deleting a BGPPeer can touch
    anyone, so it waits while anything is held.
    """
    if mode == "off":
        return tuple(ops), Judgement()
    if mode == "auto" and not state.reports:
        return tuple(ops), Judgement(timer=True)  # nothing to judge by: the timer decides
    judgement = judge(state, _after(state, ops), evidence, mode, fabrics)
    if judgement.ok:
        return tuple(ops), judgement
    touched = {h.speaker for h in judgement.holds} | {h.rr for h in judgement.holds}
    rest = tuple(op for op in ops if isinstance(op, SetNode) and op.name not in touched)
    if rest and judge(state, _after(state, rest), evidence, mode, fabrics).ok:
        return rest, judgement
    return (), judgement


def _after(state: ClusterState, ops: Sequence[Op]) -> ClusterState:
    """The records once `ops` have landed, for `fabric` alone (all that `judge` reads of them):
    the nodes the ops change and the peers are copied and the ops applied to the copies
    (plan.outcome); every other node, the BGP configuration and the RR hosts are shared with
    `state`, which is left as it was. The model's indexes are not kept. A copy of the node map,
    not of the model: the reports and the nodes' labels stay where they are."""
    changed = ClusterState(state.zone_label, state.rr_label, state.exclude, state.prefer,
                           peers=dict(state.peers), bgp=state.bgp)
    for name in {op.name for op in ops if isinstance(op, SetNode)}:
        changed.put_node(state.nodes[name])
    outcome(changed, ops)
    nodes = {**state.nodes, **changed.nodes}
    for name in reids(ops):  # BIRD restarts each session of an RR with a new ID: none is up
        del nodes[name]
    return ClusterState(state.zone_label, state.rr_label, state.exclude, state.prefer,
                        nodes=nodes, peers=changed.peers, reflectors=state.reflectors,
                        bgp=state.bgp)

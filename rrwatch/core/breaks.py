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

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs

from rrwatch.core.model import ClusterState
from rrwatch.core.plan import Op, SetNode, outcome
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


def judge(before: ClusterState, after: ClusterState, evidence: Evidence, mode: str
          ) -> Judgement:
    """Whether going from `before` to `after` keeps every speaker that loses a session above
    its need."""
    if mode == "off":
        return Judgement()
    holds: list[Hold] = []
    timer = False
    for family in FAMILIES:
        old, new = fabric(before, family), fabric(after, family)
        for name in sorted(new.speakers):
            if old.sessions.get(name, frozenset()) <= new.sessions[name]:
                continue  # it loses nothing
            short, blind = _judge_speaker(before, old, new, name, evidence, mode)
            holds += short
            timer = timer or blind
    return Judgement(tuple(holds), timer)


def _judge_speaker(state: ClusterState, old: Fabric, new: Fabric, name: str,
                   evidence: Evidence, mode: str) -> tuple[list[Hold], bool]:
    """The holds for one speaker that loses a session, and whether the timer judged it."""
    session = _reported(state, old)
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
    verified = [r for r in keep if r in unreported or _verified(state, new, r, name, evidence)]
    if len(verified) >= need:
        return [], bool(unreported)
    waits = []
    for r in keep:
        if r not in verified:
            s = session(r, name)
            waits.append(Hold(name, r, "not reported" if s is None else s.state if not
                              s.established else "Established, not yet verified",
                              "" if s is None else s.error))
    return waits, False


def _reported(state: ClusterState, fab: Fabric) -> Callable[[str, str], Session | None]:
    """The session between two speakers as reported by either: a session is Established only
    when every side that reports it says so, so a side that says otherwise speaks for it."""

    def session(a: str, b: str) -> Session | None:
        found = [s for reporter, neighbour in ((a, b), (b, a))
                 if (s := _entry(state, fab, reporter, neighbour)) is not None]
        return next((s for s in found if not s.established), found[0] if found else None)

    return session


def _entry(state: ClusterState, fab: Fabric, reporter: str, neighbour: str) -> Session | None:
    report = state.reports.get(reporter)
    if report is None or not report.ok or neighbour not in fab.speakers:
        return None
    return report.sessions.get(str(fab.speakers[neighbour].address))


def _verified(state: ClusterState, fab: Fabric, rr: str, name: str, evidence: Evidence) -> bool:
    """Reported Established, by every side that reports it, in an episode first seen after the
    session's configuration was written, and up for the dwell time since."""
    configured = evidence.configured.get(frozenset((rr, name)), 0)
    sides = 0
    for reporter, neighbour in ((rr, name), (name, rr)):
        session = _entry(state, fab, reporter, neighbour)
        if session is None:
            continue
        up = evidence.ups.get(reporter, {}).get(str(fab.speakers[neighbour].address))
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
        session = _reported(state, fab)
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


def step(state: ClusterState, ops: Sequence[Op], evidence: Evidence, mode: str
         ) -> tuple[tuple[Op, ...], Judgement]:
    """The break ops that may go now, and the judgement of the whole step (its holds).

    When the step holds, the ops that touch no held speaker or its RRs are judged again on
    their own: a demotion elsewhere need not wait for this one. Deleting a BGPPeer can touch
    anyone, so it waits while anything is held.
    """
    if mode == "off":
        return tuple(ops), Judgement()
    if mode == "auto" and not state.reports:
        return tuple(ops), Judgement(timer=True)  # nothing to judge by: the timer decides
    judgement = judge(state, _after(state, ops), evidence, mode)
    if judgement.ok:
        return tuple(ops), judgement
    touched = {h.speaker for h in judgement.holds} | {h.rr for h in judgement.holds}
    rest = tuple(op for op in ops if isinstance(op, SetNode) and op.name not in touched)
    if rest and judge(state, _after(state, rest), evidence, mode).ok:
        return rest, judgement
    return (), judgement


def _after(state: ClusterState, ops: Sequence[Op]) -> ClusterState:
    after = copy.deepcopy(state)
    outcome(after, ops)
    return after

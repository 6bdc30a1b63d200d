"""The leader's side of session truth: what it has seen of the RRs' reports on its own clock,
when it configured each session, and the break gate (core.breaks) judged with both.

Sightings follow the reports as they change, at a cost in proportion to the reports that
changed. Which sessions a make step configured is found by comparing the fabric before and after
it, only while some speaker reports (with none, there is nothing to compare against).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import attrs
import trio

from rrwatch.core import breaks, steps
from rrwatch.core.breaks import Evidence, Hold, Judgement, Up
from rrwatch.core.model import ClusterState
from rrwatch.core.plan import Op, SetNode
from rrwatch.core.sessions import FAMILIES, fabric

log = logging.getLogger("rrwatch.reconcile")

Pairs = set[frozenset[str]]


@attrs.define
class VerifyStats:
    held: int = 0  # sessions that held breaks wait for now
    held_since: float = 0.0  # wall-clock time breaks have been held since (0: none held)
    unverified: int = 0  # break writes let go on the timer alone (auto, nothing reported)


class Verifier:
    def __init__(self, mode: str, dwell: float) -> None:
        self.mode = mode
        self.dwell = dwell
        self.stats = VerifyStats()
        self.holds: tuple[Hold, ...] = ()
        self._ups: dict[str, dict[str, Up]] = {}
        self._revisions: dict[str, int] = {}  # the report revisions the sightings follow
        self._configured: dict[frozenset[str], int] = {}
        self._fabrics = breaks.Fabrics()  # while breaks are held, reports change, records not
        self._on_timer = False  # the last gate let breaks go on the timer alone

    def observe(self, state: ClusterState) -> None:
        """Take up the reports that changed since the last look."""
        changed = [r for r, revision in state.report_revisions.items()
                   if self._revisions.get(r) != revision]
        changed += [r for r in self._revisions if r not in state.report_revisions]
        if changed:
            self._ups = breaks.sightings(state, self._ups, trio.current_time(), changed)
            self._revisions = dict(state.report_revisions)

    def pairs(self, state: ClusterState) -> Pairs | None:
        """The sessions configured now, before a make step; None while nobody reports."""
        if self.mode == "off" or not state.reports:
            return None
        return {frozenset((a, b)) for family in FAMILIES
                for a, ns in fabric(state, family).sessions.items() for b in ns}

    def made(self, state: ClusterState, before: Pairs | None, ops: Sequence[Op],
             revision: int) -> None:
        """A step landed at `revision`: its new sessions, and every session of an RR it
        promoted or gave a new cluster ID (whose BIRD restarts them), count only when seen up
        after it."""
        if before is None:
            return
        restarted = {op.name for op in ops
                     if isinstance(op, SetNode) and op.why in ("promote", "re-id")}
        after = self.pairs(state) or set()
        # Sessions no longer configured are forgotten: the map holds today's sessions at most.
        self._configured = {pair: (revision if pair not in before or pair & restarted
                                   else self._configured.get(pair, 0)) for pair in after}

    async def gate(self, state: ClusterState, ops: Sequence[Op]) -> tuple[Op, ...]:
        """The break ops that may go now; the others wait, each (speaker, RR) they wait for
        logged once.

        The judgement costs O(speakers that lose a session × their RRs), seconds at 5,000
        nodes (docs/performance.md), so it runs in a thread on a copy of the model that shares
        its frozen values: the lease, the watch and the other tasks go on meanwhile."""
        evidence = Evidence(self._ups, self._configured, trio.current_time(), self.dwell)
        go, judgement = await trio.to_thread.run_sync(
            breaks.step, steps.applied(state, ()), ops, evidence, self.mode, self._fabrics)
        self._note(judgement)
        self._on_timer = judgement.timer
        return go

    def broke(self, ops: Sequence[Op]) -> None:
        """Break ops that the last gate let go landed: counted if the timer let them go (the
        route check may have taken fewer than the gate let go, or a detour only one)."""
        if self._on_timer:
            self.stats.unverified += len(ops)

    def clear(self) -> None:
        """No break is pending: none is held, and no fabric need be kept."""
        self._fabrics = breaks.Fabrics()
        if self.holds:
            self._note(Judgement())

    def next_check(self) -> float | None:
        """When a held break should be judged again, short of a change: the next dwell over."""
        if not self.holds:
            return None
        return breaks.next_dwell(self._ups, trio.current_time(), self.dwell)

    def _note(self, judgement: Judgement) -> None:
        before = set(self.holds)
        for hold in (h for h in judgement.holds if h not in before):
            log.warning("holding a break: %s", hold)
        if judgement.holds and not self.holds:
            self.stats.held_since = time.time()
        elif self.holds and not judgement.holds:
            log.info("breaks no longer held, after %.1f s", time.time() - self.stats.held_since)
            self.stats.held_since = 0.0
        self.holds = judgement.holds
        self.stats.held = len(judgement.holds)

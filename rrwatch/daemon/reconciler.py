"""Turns model changes into writes: debounce, plan, apply the operations as guarded transactions.

Operations go to etcd in batches of up to 127 per transaction, each write guarded by the
revision it was planned from, so that a first start on a large `multi` cluster (a write per
node) costs a few hundred round trips, not tens of thousands.

The model is only ever updated by the watch, including with our own writes: after writing, the
reconciler waits until the model has seen them before it plans again, so it never plans twice
from the same stale view. A write that loses its guard is not retried: the transaction reads
the record as it now is, the reconciler waits for the model to catch up with that, and plans
again from the truth. Every write is also fenced by the leader key (election.py); a fenced
write raises LostLeadership and ends the run at once.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio

from rrwatch.config.loader import Timing
from rrwatch.core import stepping, steps
from rrwatch.core.mesh import Mesh
from rrwatch.core.plan import Op, Plan, Planner
from rrwatch.daemon.election import Fence, LostLeadership
from rrwatch.daemon.pacing import Settle, demotion, paced, pause
from rrwatch.daemon.requests import InvalidWrite, batches, chunks, edits_stored, write_request
from rrwatch.daemon.verifier import Verifier
from rrwatch.daemon.watcher import Watcher
from rrwatch.etcd import KV, Etcd, EtcdError, denials, get, mod_is
from rrwatch.metrics import Latency

if TYPE_CHECKING:
    from rrwatch.config.settings import Settings

log = logging.getLogger("rrwatch.reconcile")

# After a write etcd could not take, wait this long before planning again.
RETRY_AFTER = 1.0
# The longest wait for the model to show our writes, or a record that beat one of them.
CATCH_UP = 5.0


@attrs.define
class ReconcileStats:
    plans: int = 0
    writes: int = 0
    conflicts: int = 0  # writes that lost their guard to someone else's change
    fenced: int = 0  # writes rejected because another instance leads now
    errors: int = 0
    # Steps not taken because the state after them would lose routes that reach now (each
    # distinct refusal once: a held step is judged again at every change, and counted once)
    steps_refused: int = 0
    invalid_writes: int = 0  # writes not made: Calico's validation would refuse the record
    pending: int = 0  # writes the last plan wanted
    converged_at: float = 0.0  # wall-clock time of the last plan that wanted none


class Reconciler:
    def __init__(
        self,
        etcd: Etcd,
        watcher: Watcher,
        settings: Callable[[], Settings],
        timing: Timing = Timing(),
        *,
        dry_run: bool = False,
    ) -> None:
        self._etcd = etcd
        self._watcher = watcher
        self._settings = settings  # the policy and limits in force, read at each plan
        self._planner = Planner(settings().policy)
        self._timing = timing
        self._dry_run = dry_run
        self.stats = ReconcileStats()
        self.latency = {name: Latency() for name in (
            "plan_duration_seconds", "change_to_write_seconds")}
        self._waiting: float | None = None  # when the oldest change not yet answered came
        self._reported: tuple[str, ...] = ()
        self._converged_at = -1  # the model version last found to need no writes
        self._converged = trio.Event()
        self.verifier = Verifier(timing.verify, timing.settle)
        self._written = 0  # the highest revision the last apply wrote at
        self._steps = steps.Steps()  # judges each step's result (core/steps.py)
        self._refused = ""  # the refusal last logged, while a step is held
        self._refused_writes: dict[str, str] = {}  # key -> why its write was not made

    def plan(self) -> Plan:
        settings = self._settings()
        if settings.policy != self._planner.policy:
            self._planner = Planner(settings.policy)  # a new policy: plan from scratch
        mesh, plan = self._planner.plan(self._watcher.state)
        if settings.held is not None:  # logged where the settings were taken
            return Plan()
        self._report(mesh, plan)
        return plan

    async def run(self, fence: Fence | None) -> None:
        """Plan and write for as long as `fence` holds; None only with dry_run."""
        if fence is None and not self._dry_run:
            raise ValueError("only a dry run may go without a fence")
        # What happened before we started is unknown: give sessions a full settle time.
        settle = Settle(self._timing.settle)
        # Demotions are a rate, not a burst: at most the step's limit per settle window.
        demoting = Settle(self._timing.settle)
        planned = self._watcher.version  # the changes before this one need no answer
        self._waiting = None
        while True:
            version = self._watcher.version
            if self._waiting is None:
                self._waiting = self._watcher.changed_since(planned)
            planned = version
            started = time.perf_counter()
            self.verifier.observe(self._watcher.state)
            plan = self.plan()
            self.latency["plan_duration_seconds"].observe(time.perf_counter() - started)
            if not plan.brk:
                self.verifier.clear()
            log.debug("planned at revision %d in %.2f ms: %d to make, %d to break",
                      self._watcher.newest, (time.perf_counter() - started) * 1000,
                      len(plan.make), len(plan.brk))
            self.stats.plans += 1
            self.stats.pending = len(plan.make) + len(plan.brk)
            wait_until = math.inf
            if not plan:
                self._waiting = None  # nothing to answer
                self._held("")
                self.stats.converged_at = time.time()
                self._converged_at = version
                self._converged.set()
                self._converged = trio.Event()
            elif self._dry_run or fence is None:  # (no fence only in a dry run)
                for op in plan.make + plan.brk:
                    log.info("would %s", op)
            elif plan.make and (ops := await self._make_step(plan.make, version)):
                before = self.verifier.pairs(self._watcher.state)
                landed = await self.apply(ops, fence)
                if landed:  # new sessions: the break phase waits a settle time from now
                    settle.restart()
                    self.verifier.made(self._watcher.state, before, ops, self._written)
                if landed is not None:
                    continue  # plan again from the model, which now holds what happened
                wait_until = trio.current_time() + RETRY_AFTER
            elif plan.brk and settle.over():
                taken, wait_until = await self._break_step(plan, version, demoting)
                if taken:
                    demotes = any(demotion(op, self._watcher.state) for op in taken)
                    before = self.verifier.pairs(self._watcher.state)
                    if await self.apply(taken, fence) is not None:
                        if demotes:
                            demoting.restart()
                        self.verifier.broke(taken)
                        self.verifier.made(self._watcher.state, before, taken, self._written)
                        continue
                    wait_until = trio.current_time() + RETRY_AFTER
            elif plan.brk:
                wait_until = settle.until
            await pause(functools.partial(self._watcher.wait_change, version),
                        self._timing.debounce, until=wait_until)

    async def _make_step(self, make: tuple[Op, ...], version: int) -> tuple[Op, ...]:
        """The make ops to write now: the step the churn limit cuts, or the whole phase
        (`stepping.take_make`); none while the route check holds them."""
        step = self._settings().limits.step(make)
        ops = await self._judged("make", stepping.take_make, version, make, step)
        if len(ops) > len(step):
            log.info("taking the whole make phase (%d writes): a step of %d would leave routes"
                     " that reach now without the sessions the rest makes", len(ops), len(step))
        return ops

    async def _break_step(self, plan: Plan, version: int, demoting: Settle
                          ) -> tuple[tuple[Op, ...], float]:
        """The break ops to write now, or none and when to look again.

        Once the make phase is done: the break step, paced, as far as the gate and the route
        check let it go. When the route check holds a step (make or break): a detour, break ops
        that the gate lets go and that lose no route (`stepping.take_detour`).
        """
        state = self._watcher.state
        if not plan.make:
            if not (ops := paced(self._settings().limits.step(plan.brk), demoting, state)):
                return (), demoting.until  # only demotions are left, and one went lately
            if not (go := await self.verifier.gate(state, ops)):
                # Held: a change in the reports, or the next dwell over, may free it.
                return (), self.verifier.next_check() or math.inf
            if taken := await self._judged("break", stepping.take_break, version, go):
                return taken, 0
        if not (ops := paced(plan.brk, demoting, state)):
            return (), demoting.until
        if not (go := await self.verifier.gate(state, ops)):
            return (), self.verifier.next_check() or math.inf
        taken, _ = await trio.to_thread.run_sync(functools.partial(
            stepping.take_detour, self._steps, steps.applied(state, ()), go, version=version))
        if taken:
            more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
            log.info("taking %s%s ahead of the held step: they lose no route", taken[0], more)
        return taken, math.inf  # held: only a change can free it

    async def _judged(self, phase: str, take: Callable[..., tuple[tuple[Op, ...], steps.Check]],
                      version: int, *ops: tuple[Op, ...]) -> tuple[Op, ...]:
        """The ops of a step that `take` lets go, judged on the model at `version`, which they
        were planned from. A refusal is logged and counted once for as long as it stays the
        same.

        The judgement simulates the whole mesh when the RRs change (seconds at 5,000 nodes:
        docs/performance.md), so it runs in a thread, on a copy of the model: the lease, the
        watch and the other tasks go on meanwhile. Events that land meanwhile do not void it:
        the writes are guarded by the revisions they were planned from, as always, and a busy
        cluster would otherwise never see a step judged in time.
        """
        started = time.perf_counter()
        now = steps.applied(self._watcher.state, ())
        go, verdict = await trio.to_thread.run_sync(
            functools.partial(take, self._steps, now, *ops, version=version))
        log.debug("%s step judged in %.2f ms: %s", phase,
                  (time.perf_counter() - started) * 1000, verdict)
        if go:
            self._held("")
        else:
            step = ops[-1]
            self._held(f"holding the {phase} step ({len(step)} writes, from {step[0]}): it would"
                       f" make routes unreachable that reach now: {verdict}")
        return go

    def _held(self, refusal: str) -> None:
        if refusal == self._refused:
            return
        if refusal:
            self.stats.steps_refused += 1
            log.warning("%s", refusal)
        else:
            log.info("steps no longer held")
        self._refused = refusal

    def _invalid(self, op: Op, why: str) -> None:
        """A write not made: Calico's API would refuse the record it leaves. Logged and counted
        once for as long as the same op is refused for the same reason."""
        if self._refused_writes.get(op.key) != why:
            self._refused_writes[op.key] = why
            self.stats.invalid_writes += 1
            log.error("not writing %s: Calico's validation would refuse %s: %s", op, op.key, why)

    async def wait_converged(self, version: int) -> None:
        """Return once a plan made from model version `version` or later needed no writes."""
        while self._converged_at < version:
            await self._converged.wait()

    async def apply(self, ops: tuple[Op, ...], fence: Fence) -> int | None:
        """Apply ops as fenced writes; how many landed, None when etcd failed. Return once the
        model has seen the writes that landed and the records that beat the others (or after
        CATCH_UP), so that planning again starts from the truth."""
        written: dict[str, int] = {}
        beaten: dict[str, KV | None] = {}
        ok = True
        for batch in batches(ops):
            try:
                landed, lost = await self._write(batch, fence)
            except EtcdError as e:
                self.stats.errors += 1
                ranges = sorted({op.key.rpartition("/")[0] + "/" for op in batch})
                if not denials.explained("writes to " + " and ".join(ranges), e):
                    log.warning("could not %s%s: %s", batch[0],
                                f" and {len(batch) - 1} more" if len(batch) > 1 else "", e)
                ok = False
                break  # etcd is unwell: the rest would fail too
            for revision in sorted(set(landed.values())):  # a line per transaction
                done = [op for op in batch if landed.get(op.key) == revision]
                more = f" and {len(done) - 1} more" if len(done) > 1 else ""
                log.info("%s%s (revision %d)", done[0], more, revision)
                if more:
                    log.debug("revision %d: %s", revision, "; ".join(map(str, done)))
            for op in batch:
                if op.key in lost:
                    log.info("%s: %s changed since planned; will plan again", op, op.key)
            self.stats.writes += len(landed)
            if landed and self._waiting is not None:
                self.latency["change_to_write_seconds"].observe(
                    trio.current_time() - self._waiting)
                self._waiting = None
            self.stats.conflicts += len(lost)
            written.update(landed)
            beaten.update(lost)
        self._written = max(written.values(), default=self._written)
        with trio.move_on_after(CATCH_UP):
            await self._watcher.wait_seen(written)
            for key, current in beaten.items():
                await self._watcher.wait_key(key, current)
        return len(written) if ok else None

    async def _write(
        self, ops: tuple[Op, ...], fence: Fence
    ) -> tuple[dict[str, int], dict[str, KV | None]]:
        """A batch in one fenced transaction (more if its values are large), each write guarded
        by the revision it was planned from: (key -> revision written, key -> record now for
        the ops a change beat).

        Edits of stored JSON need the records as planned from: the watch's recent values have
        those of records that just changed, and the others are read first, in one transaction
        too. An op whose record changed since the plan is left out. If a record changes before
        the write, nothing in the batch lands: the next plan starts from the truth.
        """
        current: dict[str, KV] = {}
        reads = []
        for op in ops:
            if edits_stored(op):
                kv = self._watcher.recent(op.key)  # the value a fresh event brought
                if kv is not None and kv.mod_revision == op.revision:
                    current[op.key] = kv
                else:
                    reads.append(get(op.key))
        if reads:
            current.update((await self._etcd.txn([], reads)).kvs)
        lost: dict[str, KV | None] = {}
        requests: list[tuple[Op, dict]] = []
        for op in ops:
            # The policy this op was planned with: the planner is replaced on a new policy.
            try:
                request = write_request(op, current.get(op.key), self._planner.policy.rr_label)
            except InvalidWrite as e:
                self._invalid(op, str(e))
                continue
            if request is None:
                lost[op.key] = current.get(op.key)
            else:
                requests.append((op, request))
        landed: dict[str, int] = {}
        for chunk in chunks(requests):
            written, beaten = await self._txn(chunk, fence)
            landed.update(written)
            lost.update(beaten)
        return landed, lost

    async def _txn(
        self, requests: list[tuple[Op, dict]], fence: Fence
    ) -> tuple[dict[str, int], dict[str, KV | None]]:
        ops = [op for op, _ in requests]
        result = await self._etcd.txn(
            [mod_is(op.key, op.revision or 0) for op in ops] + [fence.compare],
            [request for _, request in requests],
            [get(op.key) for op in ops] + [get(fence.key)])
        if result.succeeded:
            return dict.fromkeys((op.key for op in ops), result.revision), {}
        if not fence.holds(result.kvs):
            self.stats.fenced += 1
            raise LostLeadership(f"write to {ops[0].key} fenced off: another instance leads"
                                 " now")
        lost = {}
        for op in ops:
            now = result.kvs.get(op.key)
            if (now.mod_revision if now else 0) != (op.revision or 0):
                lost[op.key] = now
        return {}, lost

    def _report(self, mesh: Mesh, plan: Plan) -> None:
        """Log what keeps the mesh from being complete, once each time it changes."""
        reported = mesh.problems + tuple(
            f"BGPPeer {name} exists without rrwatch's ownership label, or cannot be read: leaving"
            " it alone, and the mesh incomplete" for name in plan.blocked)
        if reported != self._reported:
            for problem in reported:
                log.warning("%s", problem)
            self._reported = reported

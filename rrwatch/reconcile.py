"""Turns model changes into writes: debounce, plan, apply each operation as a guarded transaction.

The model is only ever updated by the watch, including with our own writes: after writing, the
reconciler waits until the model has seen them before it plans again, so it never plans twice
from the same stale view. A write that loses its guard is not retried; the next event brings
the truth and the plan is made again from it.
"""

from __future__ import annotations

import logging
import math

import attrs
import trio

from rrwatch import calico
from rrwatch.etcd import Etcd, EtcdError, delete, mod_is, put
from rrwatch.mesh import Mesh, Policy
from rrwatch.plan import DeletePeer, Limits, Op, Plan, Planner, PutPeer, SetNode
from rrwatch.watch import Watcher

log = logging.getLogger(__name__)

# After a failed write, wait this long for an event that explains it before planning again.
RETRY_AFTER = 1.0


@attrs.define
class ReconcileStats:
    plans: int = 0
    writes: int = 0
    conflicts: int = 0
    errors: int = 0


@attrs.frozen
class Timing:
    debounce: float = 0.1  # coalesce a burst of events into one plan
    settle: float = 10.0  # time new sessions get before old ones are removed


class Reconciler:
    def __init__(
        self,
        etcd: Etcd,
        watcher: Watcher,
        policy: Policy,
        timing: Timing = Timing(),
        limits: Limits = Limits(),
        *,
        dry_run: bool = False,
    ) -> None:
        self._etcd = etcd
        self._watcher = watcher
        self._policy = policy
        self._planner = Planner(policy)
        self._timing = timing
        self._limits = limits
        self._dry_run = dry_run
        self.stats = ReconcileStats()
        self._reported: tuple[str, ...] = ()
        self._converged_at = -1  # the model version last found to need no writes
        self._converged = trio.Event()

    def plan(self) -> Plan:
        mesh, plan = self._planner.plan(self._watcher.state)
        self._report(mesh, plan)
        return plan

    async def run(self) -> None:
        # What happened before we started is unknown: give sessions a full settle time.
        settle_until = trio.current_time() + self._timing.settle
        while True:
            version = self._watcher.version
            plan = self.plan()
            self.stats.plans += 1
            wait_until = math.inf
            if not plan:
                self._converged_at = version
                self._converged.set()
                self._converged = trio.Event()
            elif self._dry_run:
                for op in plan.make + plan.brk:
                    log.info("would %s", op)
            elif plan.make:
                if await self._apply(self._limits.step(plan.make)):
                    settle_until = trio.current_time() + self._timing.settle
                    continue
                wait_until = trio.current_time() + RETRY_AFTER
            elif plan.brk:
                if trio.current_time() < settle_until:
                    wait_until = settle_until
                elif await self._apply(self._limits.step(plan.brk)):
                    continue
                else:
                    wait_until = trio.current_time() + RETRY_AFTER
            with trio.move_on_at(wait_until):
                await self._watcher.wait_change(version)
                await trio.sleep(self._timing.debounce)

    async def wait_converged(self, version: int) -> None:
        """Return once a plan made from model version `version` or later needed no writes."""
        while self._converged_at < version:
            await self._converged.wait()

    async def _apply(self, ops: tuple[Op, ...]) -> bool:
        """Apply ops; True when all landed (and the model has seen them)."""
        written: dict[str, int] = {}
        ok = True
        for op in ops:
            try:
                revision = await self._write(op)
            except EtcdError as e:
                self.stats.errors += 1
                log.warning("could not %s: %s", op, e)
                return False  # etcd is unwell: the rest would fail too
            if revision is None:
                self.stats.conflicts += 1
                log.info("%s: %s changed since planned; will plan again", op, op.key)
                ok = False
            else:
                self.stats.writes += 1
                log.info("%s", op)
                written[op.key] = revision
        with trio.move_on_after(RETRY_AFTER * 5):
            await self._watcher.wait_seen(written)
        return ok

    async def _write(self, op: Op) -> int | None:
        """One guarded transaction; the new revision, or None when the guard failed."""
        if isinstance(op, DeletePeer):
            return await self._txn(op.key, op.revision, None)
        if isinstance(op, PutPeer) and op.revision is None:
            return await self._txn(op.key, 0, calico.new_peer(op.name, op.spec))
        # An edit of stored JSON: read it, and write only if it is still what we planned from.
        current = await self._etcd.get(op.key)
        if current is None or current.mod_revision != op.revision:
            return None
        if isinstance(op, SetNode):
            value = calico.edit_node(current.value, self._policy.rr_label, op.cluster, op.clients)
        else:
            value = calico.edit_peer(current.value, op.spec)
        return await self._txn(op.key, op.revision, value)

    async def _txn(self, key: str, revision: int, value: bytes | None) -> int | None:
        request = delete(key) if value is None else put(key, value)
        result = await self._etcd.txn([mod_is(key, revision)], [request])
        return result.revision if result.succeeded else None

    def _report(self, mesh: Mesh, plan: Plan) -> None:
        """Log what keeps the mesh from being complete, once each time it changes."""
        reported = mesh.problems + tuple(
            f"BGPPeer {name} exists without rrwatch's ownership label, or cannot be read: leaving"
            " it alone, and the mesh incomplete" for name in plan.blocked)
        if reported != self._reported:
            for problem in reported:
                log.warning("%s", problem)
            self._reported = reported

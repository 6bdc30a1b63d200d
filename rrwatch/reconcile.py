"""Turns model changes into writes: debounce, plan, apply each operation as a guarded transaction.

The model is only ever updated by the watch, including with our own writes: after writing, the
reconciler waits until the model has seen them before it plans again, so it never plans twice
from the same stale view. A write that loses its guard is not retried: the transaction reads
the record as it now is, the reconciler waits for the model to catch up with that, and plans
again from the truth. Every write is also fenced by the leader key (election.py); a fenced
write raises LostLeadership and ends the run at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio

from rrwatch import calico
from rrwatch.election import Fence, LostLeadership
from rrwatch.etcd import KV, Etcd, EtcdError, delete, get, mod_is, put
from rrwatch.mesh import Mesh
from rrwatch.plan import DeletePeer, Op, Plan, Planner, PutPeer, SetNode
from rrwatch.watch import Watcher

if TYPE_CHECKING:
    from rrwatch.settings import Settings

log = logging.getLogger(__name__)

# After a write etcd could not take, wait this long before planning again.
RETRY_AFTER = 1.0
# The longest wait for the model to show our writes, or a record that beat one of them.
CATCH_UP = 5.0


class _Conflict(Exception):
    def __init__(self, current: KV | None) -> None:
        self.current = current  # the record as etcd has it now (None: absent)


@attrs.define
class ReconcileStats:
    plans: int = 0
    writes: int = 0
    conflicts: int = 0  # writes that lost their guard to someone else's change
    fenced: int = 0  # writes rejected because another instance leads now
    errors: int = 0
    pending: int = 0  # writes the last plan wanted
    converged_at: float = 0.0  # wall-clock time of the last plan that wanted none


@attrs.frozen
class Timing:
    debounce: float = 0.1  # coalesce a burst of events into one plan
    settle: float = 10.0  # time new sessions get before old ones are removed


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
        self._reported: tuple[str, ...] = ()
        self._converged_at = -1  # the model version last found to need no writes
        self._converged = trio.Event()

    def plan(self) -> Plan:
        policy = self._settings().policy
        if policy != self._planner.policy:
            self._planner = Planner(policy)  # a new policy: plan from scratch
        mesh, plan = self._planner.plan(self._watcher.state)
        self._report(mesh, plan)
        return plan

    async def run(self, fence: Fence | None) -> None:
        """Plan and write for as long as `fence` holds; None only with dry_run."""
        if fence is None and not self._dry_run:
            raise ValueError("only a dry run may go without a fence")
        # What happened before we started is unknown: give sessions a full settle time.
        settle_until = trio.current_time() + self._timing.settle
        while True:
            version = self._watcher.version
            plan = self.plan()
            self.stats.plans += 1
            self.stats.pending = len(plan.make) + len(plan.brk)
            wait_until = math.inf
            if not plan:
                self.stats.converged_at = time.time()
                self._converged_at = version
                self._converged.set()
                self._converged = trio.Event()
            elif self._dry_run:
                for op in plan.make + plan.brk:
                    log.info("would %s", op)
            elif plan.make:
                landed = await self.apply(self._settings().limits.step(plan.make), fence)
                if landed:  # new sessions: the break phase waits a settle time from now
                    settle_until = trio.current_time() + self._timing.settle
                if landed is not None:
                    continue  # plan again from the model, which now holds what happened
                wait_until = trio.current_time() + RETRY_AFTER
            elif plan.brk:
                if trio.current_time() < settle_until:
                    wait_until = settle_until
                elif await self.apply(self._settings().limits.step(plan.brk), fence) is not None:
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

    async def apply(self, ops: tuple[Op, ...], fence: Fence) -> int | None:
        """Apply ops as fenced writes; how many landed, None when etcd failed. Return once the
        model has seen the writes that landed and the records that beat the others (or after
        CATCH_UP), so that planning again starts from the truth."""
        written: dict[str, int] = {}
        beaten: dict[str, KV | None] = {}
        ok = True
        for op in ops:
            try:
                revision = written[op.key] = await self._write(op, fence)
            except _Conflict as c:
                self.stats.conflicts += 1
                log.info("%s: %s changed since planned; will plan again", op, op.key)
                beaten[op.key] = c.current
                continue
            except EtcdError as e:
                self.stats.errors += 1
                log.warning("could not %s: %s", op, e)
                ok = False
                break  # etcd is unwell: the rest would fail too
            self.stats.writes += 1
            log.info("%s (revision %d)", op, revision)
        with trio.move_on_after(CATCH_UP):
            await self._watcher.wait_seen(written)
            for key, current in beaten.items():
                await self._watcher.wait_key(key, current)
        return len(written) if ok else None

    async def _write(self, op: Op, fence: Fence) -> int:
        """One guarded, fenced transaction; the new revision. _Conflict when the guard failed."""
        if isinstance(op, DeletePeer):
            return await self._txn(op.key, op.revision, None, fence)
        if isinstance(op, PutPeer) and op.revision is None:
            return await self._txn(op.key, 0, calico.new_peer(op.name, op.spec), fence)
        # An edit of stored JSON: read it, and write only if it is still what we planned from.
        current = await self._etcd.get(op.key)
        if current is None or current.mod_revision != op.revision:
            raise _Conflict(current)
        if isinstance(op, SetNode):
            rr_label = self._planner.policy.rr_label  # the policy this op was planned with
            value = calico.edit_node(current.value, rr_label, op.cluster, op.clients)
        else:
            value = calico.edit_peer(current.value, op.spec)
        return await self._txn(op.key, op.revision, value, fence)

    async def _txn(self, key: str, revision: int, value: bytes | None, fence: Fence) -> int:
        request = delete(key) if value is None else put(key, value)
        result = await self._etcd.txn([mod_is(key, revision), fence.compare], [request],
                                      [get(key), get(fence.key)])
        if result.succeeded:
            return result.revision
        if not fence.holds(result.kvs):
            self.stats.fenced += 1
            raise LostLeadership(f"write to {key} fenced off: another instance leads now")
        raise _Conflict(result.kvs.get(key))

    def _report(self, mesh: Mesh, plan: Plan) -> None:
        """Log what keeps the mesh from being complete, once each time it changes."""
        reported = mesh.problems + tuple(
            f"BGPPeer {name} exists without rrwatch's ownership label, or cannot be read: leaving"
            " it alone, and the mesh incomplete" for name in plan.blocked)
        if reported != self._reported:
            for problem in reported:
                log.warning("%s", problem)
            self._reported = reported

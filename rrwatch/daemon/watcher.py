"""Keeps the model in step with etcd: one snapshot at a pinned revision, then watches from there.

Events update the model one by one; nothing is re-listed except when history is lost. Four
layers make sure a stream never hangs or silently falls behind (etcd-notes.md):

- a stream reopens from the revision after the last one it delivered, with capped, jittered
  backoff, on another endpoint when its own failed;
- a stream that says nothing for the read timeout is reopened the same way (etcd's progress
  notices come every 10 minutes by default, so silence alone proves nothing). First its key
  revisions are read (keys only) and compared with the model's: when they agree, the stream
  resumes from that read's revision, so a quiet prefix never falls behind compaction;
- a probe, a linearizable read every few seconds, notices a frozen or partitioned member at
  once and moves every stream to another endpoint;
- anti-entropy: every few minutes the key revisions in etcd are read (keys only) and compared
  with the model's. Any drift is counted, and the model is rebuilt from a new snapshot, as it
  is after compaction.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping

import attrs
import trio

from rrwatch.core import decoding
from rrwatch.daemon.records import Records, drift, key_revisions, load
from rrwatch.errors import leaves
from rrwatch.etcd import KV, Compacted, Etcd, EtcdError, StreamIdle, WatchResponse
from rrwatch.retry import Backoff, every, forever, until_ok

log = logging.getLogger("rrwatch.watch")

# How long anti-entropy gives an apparent difference to arrive as an event before calling it drift.
DRIFT_GRACE = 5.0
# Values of the keys put lately, kept so that a write answering an event (a new node's labels)
# need not read back the record the event just delivered. The model keeps no other values.
RECENT = 256


class _Resync(Exception):
    """History is lost or the model drifted: all streams stop and a new snapshot replaces it."""

    def __init__(self, *, drift_counted: bool = False) -> None:
        super().__init__()
        self.drift_counted = drift_counted  # else the new snapshot is compared with the model


@attrs.define
class WatchStats:
    snapshots: int = 0
    resyncs: int = 0  # snapshots after the first: compaction or drift
    reconnects: int = 0  # streams that broke
    idle_reopens: int = 0  # streams reopened after a silent read timeout
    probe_failures: int = 0
    checks: int = 0  # anti-entropy comparisons made
    drift: int = 0  # keys the model had wrong, found by anti-entropy or a resync
    events: int = 0
    bad_records: int = 0


class Watcher:
    """Owns the ClusterState; the only writer of it."""

    def __init__(
        self,
        etcd: Etcd,
        records: Records,
        *,
        backoff: Callable[[], Backoff] = Backoff,
        probe_interval: float = 5.0,
        check_interval: float = 300.0,
    ) -> None:
        self._etcd = etcd
        self._records = records
        self._prefixes = records.prefixes
        self._backoff = backoff
        self._probe_interval = probe_interval
        self._check_interval = check_interval
        self.state = records.new_state()
        self.stats = WatchStats()
        self.bad: dict[str, str] = {}  # key -> reason, for keys whose value cannot be used
        self.version = 0  # bumped whenever the model changes
        self._changes: deque[tuple[int, float]] = deque(maxlen=1024)  # (version, trio time)
        self.revision = 0  # of the last snapshot
        self.revisions: dict[str, int] = {}  # key -> mod revision, for every key in the model
        self._deleted: dict[str, int] = {}  # key -> revision deleted, kept until the next check
        self._recent: dict[str, KV] = {}  # the values of the last RECENT keys put, oldest first
        self._seen = dict.fromkeys(self._prefixes, 0)  # prefix -> revision applied
        self._open: dict[str, str] = {}  # prefix -> endpoint, of the streams open now
        self._streams = trio.CancelScope()  # cancelled to reopen every stream
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Snapshot, report the revision as started, then follow the streams for ever."""
        count_drift = False
        while True:
            await self._snapshot(count_drift)
            task_status.started(self.revision)
            task_status = trio.TASK_STATUS_IGNORED
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._follow_all)
                    nursery.start_soon(self._probe)
                    nursery.start_soon(self._anti_entropy)
            except* _Resync as group:
                self.stats.resyncs += 1
                count_drift = not any(isinstance(e, _Resync) and e.drift_counted
                                      for e in leaves(group))

    async def _snapshot(self, count_drift: bool) -> None:
        """Replace the model with a new snapshot, retrying until one loads; with `count_drift`,
        count the keys where the model differed from it."""
        snapshot = await until_ok(
            functools.partial(load, self._etcd, self._records), self._backoff(),
            errors=EtcdError, failed=lambda e: log.warning("snapshot failed, retrying: %s", e))
        revision = snapshot.revision
        if count_drift:
            self._count_drift(drift(self.revisions, self._deleted, snapshot.revisions, revision))
        for key, reason in snapshot.bad.items():
            if self.bad.get(key) != reason:
                log.warning("skipping %s at revision %d: %s", key, revision, reason)
        self.stats.bad_records += len(snapshot.bad)
        self.state, self.bad, self.revisions = snapshot.state, snapshot.bad, snapshot.revisions
        self._recent = {}
        self.revision = revision
        self._deleted = {}
        self._seen = dict.fromkeys(self._prefixes, revision)
        self.stats.snapshots += 1
        log.info("snapshot at revision %d: %d nodes, %d BGPPeers, %d registrations",
                 revision, len(self.state.nodes), len(self.state.peers),
                 len(self.state.reflectors))
        self.notify()

    async def _follow_all(self) -> None:
        """Every stream, reopened together whenever the probe cancels them."""
        while True:
            with trio.CancelScope() as self._streams:
                async with trio.open_nursery() as nursery:
                    for prefix in self._prefixes:
                        nursery.start_soon(self._follow, prefix)

    async def _follow(self, prefix: str) -> None:
        """Follow one prefix, reopening from the right revision after a break."""
        backoff = self._backoff()
        await forever(functools.partial(self._stream, prefix, backoff), backoff)

    async def _stream(self, prefix: str, backoff: Backoff) -> None:
        """Follow one prefix until its stream breaks, from the revision after the last one
        delivered; a silent stream is reopened at once when the model provably holds all of
        the prefix. Every message resets the backoff."""
        while True:
            resume = self._seen[prefix] + 1
            endpoint = self._etcd.endpoint
            try:
                async with self._etcd.watch(prefix, resume) as stream:
                    async for message in stream:
                        if isinstance(message, Compacted):
                            log.warning("watch on %s: history from revision %d is compacted;"
                                        " taking a new snapshot", prefix, resume)
                            raise _Resync from message
                        if isinstance(message, EtcdError):
                            raise message
                        self._open[prefix] = endpoint
                        self._receive(prefix, message)
                        backoff.reset()
            except StreamIdle:
                self.stats.idle_reopens += 1
                log.debug("watch on %s silent for the read timeout; reopening", prefix)
                try:
                    await self._catch_up(prefix)
                    continue
                except EtcdError as e:
                    self.stats.reconnects += 1
                    log.warning("watch on %s: %s; reconnecting", prefix, e)
            except EtcdError as e:
                self.stats.reconnects += 1
                log.warning("watch on %s from revision %d: %s; reconnecting", prefix, resume, e)
            finally:
                self._open.pop(prefix, None)
            return

    async def _catch_up(self, prefix: str) -> None:
        """After a silent spell, move the prefix's resume point up to now if the model provably
        holds all of it: its key revisions equal etcd's (read keys only). Resync if not."""
        revision, fresh = await key_revisions(self._etcd, [prefix])
        mine = {k: r for k, r in self.revisions.items() if k.startswith(prefix)}
        drifted = drift(mine, self._deleted, fresh, revision)
        if drifted:
            self._count_drift(drifted)
            raise _Resync(drift_counted=True)
        self._seen[prefix] = max(self._seen[prefix], revision)

    def _receive(self, prefix: str, message: WatchResponse) -> None:
        """Apply one stream message, and note how far the prefix is known."""
        if message.events:
            for event in message.events:
                self._apply(event.key, event.value, event.revision)
            self.stats.events += len(message.events)
            seen = message.events[-1].revision
        elif not message.created:
            # A progress notice: nothing else up to here. The model is unchanged, so only those
            # waiting for a revision are woken, not the planner.
            self._seen[prefix] = max(self._seen[prefix], message.revision)
            self._wake()
            return
        else:
            return
        self._seen[prefix] = max(self._seen[prefix], seen)
        self.notify()

    def _apply(self, key: str, value: bytes | None, revision: int) -> None:
        self._recent.pop(key, None)
        if value is None:
            self.revisions.pop(key, None)
            self._deleted[key] = revision
        else:
            self.revisions[key] = revision
            self._recent[key] = KV(key, value, revision)
            if len(self._recent) > RECENT:
                del self._recent[next(iter(self._recent))]
        try:
            self._records.apply(self.state, key, value, revision)
        except decoding.BadRecord as e:
            self.stats.bad_records += 1
            if self.bad.get(key) != e.reason:
                log.warning("skipping %s at revision %d: %s", key, revision, e.reason)
            self.bad[key] = e.reason
        else:
            self.bad.pop(key, None)

    async def _probe(self) -> None:
        await Probe(self._probe_interval,
                    endpoint=lambda: self._etcd.endpoint,
                    read=self._etcd.probe,
                    fail_over=self._etcd.fail_over,
                    streams_on=self._open.values,
                    reopen=lambda: self._streams.cancel(),
                    stats=self.stats).run()

    async def _anti_entropy(self) -> None:
        """Compare the model's key revisions with etcd's now and then; resync on any drift."""
        # While a stream is reopening, it will replay what it missed: that is not drift.
        drifted = await anti_entropy(self._check_interval, self._check,
                                     ready=lambda: self._open.keys() == set(self._prefixes))
        self._count_drift(drifted)
        raise _Resync(drift_counted=True)

    async def _check(self) -> list[str]:
        revision, fresh = await key_revisions(self._etcd, self._prefixes)
        drifted = await confirmed(
            lambda: drift(self.revisions, self._deleted, fresh, revision))
        self._deleted = {k: r for k, r in self._deleted.items() if r > revision}
        self.stats.checks += 1
        return drifted

    def _count_drift(self, keys: list[str]) -> None:
        if keys:
            self.stats.drift += len(keys)
            log.warning("model drifted from etcd on %d keys (%s%s); rebuilding it", len(keys),
                        ", ".join(keys[:5]), ", ..." if len(keys) > 5 else "")

    def notify(self) -> None:
        """The model changed (here, or in the settings that shape it): wake its readers."""
        self.version += 1
        self._changes.append((self.version, trio.current_time()))
        self._wake()

    def changed_since(self, version: int) -> float | None:
        """When the model first changed after `version` (trio's clock), if it has lately."""
        return next((at for v, at in self._changes if v > version), None)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_change(self, since: int) -> None:
        """Return once the model has changed after version `since`."""
        while self.version <= since:
            await self._changed.wait()

    def recent(self, key: str) -> KV | None:
        """The value of `key` as the watch last delivered it, if that was lately."""
        return self._recent.get(key)

    @property
    def newest(self) -> int:
        """The newest revision applied to the model, on any prefix."""
        return max(self._seen.values())

    def has_seen(self, writes: Mapping[str, int]) -> bool:
        return all(self._seen_for(key) >= revision for key, revision in writes.items())

    async def wait_seen(self, writes: Mapping[str, int]) -> None:
        """Return once the model includes every write (key -> revision written)."""
        while not self.has_seen(writes):
            await self._changed.wait()

    async def wait_key(self, key: str, current: KV | None) -> None:
        """Return once the model holds `current` for `key` (None: absent), or something newer."""
        if current is not None:
            await self.wait_seen({key: current.mod_revision})
            return
        while key in self.revisions and key not in self._deleted:
            await self._changed.wait()

    def _seen_for(self, key: str) -> float:
        for prefix, revision in self._seen.items():
            if key.startswith(prefix):
                return revision
        return math.inf  # not watched: nothing to wait for


@attrs.define
class Probe:
    """Every `interval`, a linearizable read (`read`) through the endpoint that unary calls use
    now (`endpoint`). A read that fails is counted, that endpoint failed over and every stream
    reopened (`reopen`): a frozen or partitioned member is left at once. After a read that
    works, the streams are reopened if any is still on an endpoint that unary calls have left
    (`streams_on`: the endpoints of the open streams)."""

    interval: float
    endpoint: Callable[[], str]
    read: Callable[[], Awaitable[object]]
    fail_over: Callable[[str], None]
    streams_on: Callable[[], Iterable[str]]
    reopen: Callable[[], None]
    stats: WatchStats

    async def run(self) -> None:
        await every(self.interval, self.tick)

    async def tick(self) -> None:
        endpoint = self.endpoint()
        try:
            await self.read()
        except EtcdError as e:
            self.stats.probe_failures += 1
            log.warning("probe of %s failed: %s; reopening the watches", endpoint, e)
            self.fail_over(endpoint)
            self.reopen()
            return
        if any(used != endpoint for used in self.streams_on()):
            log.info("moving the watches to %s", endpoint)
            self.reopen()


async def anti_entropy(interval: float, check: Callable[[], Awaitable[list[str]]], *,
                       ready: Callable[[], bool]) -> list[str]:
    """Every `interval`, while `ready()`, `check()` for drift; the first keys found drifted.
    A check that fails is logged and made again an interval later."""

    async def tick() -> list[str] | None:
        if not ready():
            return None
        try:
            return await check() or None
        except EtcdError as e:
            log.warning("anti-entropy check failed: %s", e)
            return None

    return await every(interval, tick)


async def confirmed(compare: Callable[[], list[str]], grace: float = DRIFT_GRACE) -> list[str]:
    """The keys `compare()` finds drifted, and finds again after `grace` seconds: events up to
    the revision compared with may still have been on their way."""
    drifted = compare()
    if drifted:
        await trio.sleep(grace)
        drifted = compare()
    return drifted

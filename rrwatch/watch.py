"""Keeps the model in step with etcd: one snapshot at a pinned revision, then watches from there.

Events update the model one by one; nothing is ever re-listed except after compaction, when the
history a stream needs is gone and a fresh snapshot replaces the model.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping

import attrs
import trio

from rrwatch import calico
from rrwatch.etcd import Compacted, Etcd, EtcdError, WatchResponse
from rrwatch.model import ClusterState

log = logging.getLogger(__name__)


class _Resync(Exception):
    """A stream lost its history: all streams stop and the model is rebuilt from a snapshot."""


@attrs.define
class Backoff:
    """Capped exponential backoff with full jitter, reset after a success."""

    first: float = 0.1
    cap: float = 5.0
    _attempt: int = 0

    async def sleep(self) -> None:
        delay = min(self.cap, self.first * 2**self._attempt)
        self._attempt += 1
        await trio.sleep(random.uniform(delay / 2, delay))

    def reset(self) -> None:
        self._attempt = 0


@attrs.define
class WatchStats:
    snapshots: int = 0
    reconnects: int = 0
    events: int = 0
    bad_records: int = 0


@attrs.frozen
class Snapshot:
    revision: int
    state: ClusterState
    bad: dict[str, str]  # key -> reason, for values that cannot be used


async def load(etcd: Etcd, new_state: Callable[[], ClusterState]) -> Snapshot:
    """The model as of one revision: every watched key read once, in pages."""
    revision, kvs = await etcd.snapshot(calico.WATCHED_PREFIXES)
    state = new_state()
    bad = {}
    for kv in kvs:
        try:
            calico.apply(state, kv.key, kv.value, kv.mod_revision)
        except calico.BadRecord as e:
            bad[kv.key] = e.reason
    return Snapshot(revision, state, bad)


class Watcher:
    """Owns the ClusterState; the only writer of it."""

    def __init__(
        self,
        etcd: Etcd,
        new_state: Callable[[], ClusterState],
        *,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self._etcd = etcd
        self._new_state = new_state
        self._backoff = backoff
        self.state = new_state()
        self.stats = WatchStats()
        self.bad: dict[str, str] = {}  # key -> reason, for keys whose value cannot be used
        self.version = 0  # bumped whenever the model changes
        self._seen = dict.fromkeys(calico.WATCHED_PREFIXES, 0)  # prefix -> revision seen
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Snapshot, report the revision as started, then follow the streams for ever."""
        backoff = self._backoff()
        while True:
            try:
                revision = await self._snapshot()
            except EtcdError as e:
                log.warning("snapshot failed, retrying: %s", e)
                await backoff.sleep()
                continue
            backoff.reset()
            task_status.started(revision)
            task_status = trio.TASK_STATUS_IGNORED
            try:
                async with trio.open_nursery() as nursery:
                    for prefix in calico.WATCHED_PREFIXES:
                        nursery.start_soon(self._follow, prefix, revision + 1)
            except* _Resync:
                log.warning("watch history compacted: taking a new snapshot")

    async def _snapshot(self) -> int:
        snapshot = await load(self._etcd, self._new_state)
        revision, self.state = snapshot.revision, snapshot.state
        for key, reason in snapshot.bad.items():
            if self.bad.get(key) != reason:
                log.warning("skipping %s at revision %d: %s", key, revision, reason)
        self.stats.bad_records += len(snapshot.bad)
        self.bad = snapshot.bad
        self._seen = dict.fromkeys(calico.WATCHED_PREFIXES, revision)
        self.stats.snapshots += 1
        log.info("snapshot at revision %d: %d nodes, %d BGPPeers, %d registrations",
                 revision, len(self.state.nodes), len(self.state.peers),
                 len(self.state.reflectors))
        self._notify()
        return revision

    async def _follow(self, prefix: str, start: int) -> None:
        """Follow one prefix from `start`, reconnecting from the right revision after a break."""
        backoff = self._backoff()
        resume = start
        while True:
            try:
                async with self._etcd.watch(prefix, resume) as stream:
                    async for message in stream:
                        if isinstance(message, Compacted):
                            raise _Resync from message
                        if isinstance(message, EtcdError):
                            raise message
                        resume = self._receive(prefix, message, resume)
                        backoff.reset()
            except _Resync:
                raise
            except EtcdError as e:
                self.stats.reconnects += 1
                log.warning("watch on %s from revision %d: %s; reconnecting", prefix, resume, e)
                await backoff.sleep()

    def _receive(self, prefix: str, message: WatchResponse, resume: int) -> int:
        """Apply one stream message; return the revision to resume from."""
        if message.events:
            for event in message.events:
                self._apply(event.key, event.value, event.revision)
            self.stats.events += len(message.events)
            resume = message.events[-1].revision + 1
        elif not message.created:
            resume = max(resume, message.revision + 1)  # a progress notice: caught up to here
        self._seen[prefix] = max(self._seen[prefix], resume - 1)
        self._notify()
        return resume

    def _apply(self, key: str, value: bytes | None, revision: int) -> None:
        try:
            calico.apply(self.state, key, value, revision)
        except calico.BadRecord as e:
            self.stats.bad_records += 1
            if self.bad.get(key) != e.reason:
                log.warning("skipping %s at revision %d: %s", key, revision, e.reason)
            self.bad[key] = e.reason
        else:
            self.bad.pop(key, None)

    def _notify(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_change(self, since: int) -> None:
        """Return once the model has changed after version `since`."""
        while self.version <= since:
            await self._changed.wait()

    def has_seen(self, writes: Mapping[str, int]) -> bool:
        return all(self._seen_for(key) >= revision for key, revision in writes.items())

    async def wait_seen(self, writes: Mapping[str, int]) -> None:
        """Return once the model includes every write (key -> revision written)."""
        while not self.has_seen(writes):
            await self._changed.wait()

    def _seen_for(self, key: str) -> int:
        for prefix, revision in self._seen.items():
            if key.startswith(prefix):
                return revision
        return math.inf  # not watched: nothing to wait for

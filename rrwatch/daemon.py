"""The composition root: the watcher always; on an RR host, the keeper of its BIRD; and one etcd
session after another that registers this host, campaigns, and reconciles while it leads.
Signals end it."""

from __future__ import annotations

import logging
import os
import signal
import socket

import attrs
import trio

from rrwatch import calico, election, metrics
from rrwatch.bird import BirdKeeper
from rrwatch.config import Config
from rrwatch.election import Fence, LostLeadership, SessionLost
from rrwatch.etcd import Backoff, Etcd, EtcdError
from rrwatch.model import ClusterState
from rrwatch.reconcile import Reconciler
from rrwatch.watch import Watcher, leaves

log = logging.getLogger(__name__)


def new_state(config: Config) -> ClusterState:
    policy = config.policy
    return ClusterState(config.zone_label, policy.rr_label, policy.exclude, policy.prefer)


@attrs.define
class DaemonStats:
    leaderships: int = 0


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.etcd = Etcd(
            config.etcd_endpoints,
            config.tls,
            timeout=config.etcd_timeout,
            watch_timeout=config.watch_timeout,
        )
        self.watcher = Watcher(self.etcd, lambda: new_state(config),
                               probe_interval=config.probe_interval,
                               check_interval=config.check_interval)
        self.reconciler = Reconciler(
            self.etcd, self.watcher, config.policy, config.timing, config.limits,
            dry_run=config.dry_run,
        )
        self.bird = None
        if config.bird_config:
            self.bird = BirdKeeper(self.watcher, config.bird_config, config.bird_socket,
                                   config.register_ip, include=config.bird_include,
                                   debounce=config.timing.debounce, dry_run=config.dry_run)
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.leading = False
        self.stats = DaemonStats()
        self._leader_seen: bytes | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; started once the first snapshot is in the model."""
        async with trio.open_nursery() as nursery:
            revision = await nursery.start(self.watcher.run)
            log.info("in sync with %s at revision %d", self.etcd.endpoint, revision)
            if self.bird is not None:  # every instance keeps its own host's BIRD, leader or not
                nursery.start_soon(self.bird.run)
            if self.config.dry_run:
                nursery.start_soon(self.reconciler.run, None)  # a dry run never campaigns
            else:
                nursery.start_soon(self._sessions)
            task_status.started()

    async def _sessions(self) -> None:
        """One lease after another; each holds the registration and campaigns for leadership.

        Losing leadership (fenced off, or the key changed) only sends this session back to
        campaigning: its lease, and the registration on it, stay.
        """
        backoff = Backoff()
        while True:
            try:
                async with election.session(self.etcd, self.config.lease_ttl) as lease:
                    backoff.reset()
                    async with trio.open_nursery() as nursery:
                        for ip in self.config.register_ip:
                            key, value = calico.registration(ip, self.config.register_cluster_id)
                            nursery.start_soon(election.register, self.etcd, key, value, lease)
                        while True:
                            try:
                                await self._lead(lease)
                            except* LostLeadership as group:
                                for reason in _reasons(group):
                                    log.warning("%s; campaigning again", reason)
            except* (SessionLost, EtcdError) as group:
                for reason in _reasons(group):
                    log.warning("%s; campaigning again", reason)
            await backoff.sleep()

    async def _lead(self, lease: int) -> None:
        key = self.config.leader_key
        revision = await election.claim(self.etcd, key, self.identity.encode(), lease,
                                        waiting=self._standing_by)
        fence = Fence(key, revision)
        self.leading = True
        self.stats.leaderships += 1
        self._leader_seen = None
        log.info("leading as %s (leader key created at revision %d)", self.identity, revision)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deposed, fence)
                await self.reconciler.run(fence)
        finally:
            self.leading = False

    async def _deposed(self, fence: Fence) -> None:
        await election.until_changed(self.etcd, fence.key, fence.revision,
                                     recheck=self.config.lease_ttl)
        raise LostLeadership("the leader key changed")

    def _standing_by(self, leader: bytes) -> None:
        if leader != self._leader_seen:
            log.info("standing by: %s leads", leader.decode("utf-8", "replace"))
            self._leader_seen = leader


def _reasons(group: BaseExceptionGroup) -> list[str]:
    return [str(e) or type(e).__name__ for e in leaves(group)]


async def serve(config: Config) -> None:
    """`rrwatch run`: the daemon until SIGTERM or SIGINT, which give up leadership at once."""
    daemon = Daemon(config)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals, \
            metrics.serve(daemon, config.metrics_address):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon.run)  # not awaited: a signal must work before the snapshot
            async for signum in signals:
                log.info("%s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break

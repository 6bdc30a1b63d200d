"""The composition root: one nursery with the watcher and the reconciler; signals end it."""

from __future__ import annotations

import logging
import signal

import trio

from rrwatch.config import Config
from rrwatch.etcd import Etcd
from rrwatch.model import ClusterState
from rrwatch.reconcile import Reconciler
from rrwatch.watch import Watcher

log = logging.getLogger(__name__)


def new_state(config: Config) -> ClusterState:
    policy = config.policy
    return ClusterState(config.zone_label, policy.rr_label, policy.exclude, policy.prefer)


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.etcd = Etcd(
            config.etcd_endpoints,
            config.tls,
            timeout=config.etcd_timeout,
            watch_timeout=config.watch_timeout,
        )
        self.watcher = Watcher(self.etcd, lambda: new_state(config))
        self.reconciler = Reconciler(
            self.etcd, self.watcher, config.policy, config.timing, config.limits,
            dry_run=config.dry_run,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; started once the first snapshot is in the model."""
        async with trio.open_nursery() as nursery:
            revision = await nursery.start(self.watcher.run)
            log.info("in sync with %s at revision %d", self.etcd.endpoint, revision)
            nursery.start_soon(self.reconciler.run)
            task_status.started()


async def serve(config: Config) -> None:
    """`rrwatch run`: the daemon until SIGTERM or SIGINT."""
    daemon = Daemon(config)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            async for signum in signals:
                log.info("%s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break

"""The composition root: the watcher always; on an RR host, the keeper of its BIRD; the keeper
of the TLS files; and one etcd session after another that registers this host, campaigns, and
reconciles while it leads. SIGHUP reloads the config, SIGTERM and SIGINT end it, and systemd
hears of each step (sd_notify)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from rrwatch import certs, metrics
from rrwatch import config as config_mod
from rrwatch.config import Config
from rrwatch.core import edits
from rrwatch.core.sessions import HOST_PREFIX
from rrwatch.core.text import printable
from rrwatch.daemon import election, report
from rrwatch.daemon.election import Fence, LostLeadership, SessionLost
from rrwatch.daemon.live import Live
from rrwatch.daemon.reconciler import Reconciler
from rrwatch.daemon.tls_keeper import TlsKeeper
from rrwatch.daemon.watcher import Watcher
from rrwatch.errors import ConfigError, ExitStatus, leaves
from rrwatch.etcd import CertificateRefused, Etcd, EtcdError, denials
from rrwatch.host import registration
from rrwatch.host.birdc import BirdError, protocols
from rrwatch.host.keeper import BirdKeeper
from rrwatch.retry import Backoff, forever
from rrwatch.sdnotify import Notifier
from rrwatch.status import BirdStatus, Status

log = logging.getLogger("rrwatch.daemon")


@attrs.define
class DaemonStats:
    leaderships: int = 0
    usurpers: int = 0  # leader keys found held in a way no instance holds them, and taken


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.etcd = Etcd.of(config)
        self.live = Live(config)
        self.watcher = Watcher(self.etcd, self.live.records,
                               probe_interval=config.probe_interval,
                               check_interval=config.check_interval)
        self.reconciler = Reconciler(self.etcd, self.watcher, lambda: self.live.settings,
                                     config.timing, dry_run=config.dry_run)
        self.bird = None
        if config.bird_config:
            self.bird = BirdKeeper(self.watcher, config.bird_config, config.bird_socket,
                                   config.register_ip, include=config.bird_include,
                                   debounce=config.timing.debounce, dry_run=config.dry_run)
        self.tls = None if config.tls is None else TlsKeeper(self.etcd, config.tls)
        self._reader = report.Reader([config.bird_socket])
        # An RR host's report, per registered address: the speakers are host/<ip>.
        self._report_keys = {config.sessions_prefix + HOST_PREFIX + ip: (6 if ":" in ip else 4)
                             for ip in config.register_ip}
        for warning in config.warnings:  # such as a BIRD directory others may write
            log.warning("%s", warning)
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.leading = False
        self.stats = DaemonStats()
        self._leader_seen: bytes | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; started once the first snapshot is in the model."""
        async with trio.open_nursery() as nursery:
            if self.tls is not None:
                nursery.start_soon(self.tls.run)
                nursery.start_soon(self._check_server_names)
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

        async def session() -> None:
            async with election.session(self.etcd, self.config.lease_ttl) as lease:
                backoff.reset()
                async with trio.open_nursery() as nursery:
                    for ip in self.config.register_ip:
                        key, value = edits.registration(ip, self.config.register_cluster_id)
                        nursery.start_soon(registration.register, self.etcd, key, value, lease)
                    if self.bird is not None:  # an RR host reports its BIRD's sessions
                        nursery.start_soon(report.keep, self.etcd, self._reader,
                                           self._report_keys, lease, self.config.report_interval)
                    while True:
                        try:
                            await self._lead(lease)
                        except* LostLeadership as group:
                            for reason in _reasons(group):
                                log.warning("%s; campaigning again", reason)

        await forever(session, backoff, errors=(SessionLost, EtcdError),
                      failed=denials.failed("the leader key " + self.config.leader_key,
                                            lambda e: log.warning("%s; campaigning again",
                                                                  _reason(e))))

    async def _lead(self, lease: int) -> None:
        key = self.config.leader_key
        revision = await election.claim(self.etcd, key, self.identity.encode(), lease,
                                        waiting=self._standing_by, usurper=self._usurper)
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

    async def _check_server_names(self) -> None:
        """Warn about an endpoint whose certificate does not name it: the client refuses such a
        server, and without this the log would only say that connecting failed."""
        for endpoint in self.config.etcd_endpoints:
            try:
                warning = await trio.to_thread.run_sync(
                    certs.server_name_warning, endpoint, self.config.tls, self.config.etcd_timeout)
            except (OSError, ssl.SSLError, ValueError) as e:
                log.debug("could not read the certificate of %s: %s", endpoint, e)
                continue
            if warning:
                log.warning("TLS: %s", warning)

    def status(self, established: frozenset[str] | None = None) -> Status:
        """The daemon now, as one frozen value (`established`: the BIRD sessions up, if asked)."""
        state = self.watcher.state
        role = ("dry run" if self.config.dry_run else "leading" if self.leading
                else "standing by")
        stats: dict[str, attrs.AttrsInstance | None] = {
            "watch": self.watcher.stats, "reconcile": self.reconciler.stats, "daemon": self.stats,
            "verify": self.reconciler.verifier.stats,
            "tls": self.tls.stats if self.tls else None}
        return Status(
            role=role,
            stats={name: attrs.asdict(value) for name, value in stats.items()
                   if value is not None},
            bad_records=len(self.watcher.bad),
            policy_object=self.live.from_object,
            speakers=dict(state.speakers),
            reflectors=state.reflectors_by_zone(),
            rr_hosts=len(state.reflectors),
            tls_not_after=(self.tls.not_after.timestamp()
                           if self.tls and self.tls.not_after else None),
            sessions_down={speaker: sum(not s.established for s in report.sessions.values())
                           + (not report.ok) for speaker, report in state.reports.items()},
            latencies={name: latency.frozen() for name, latency in (
                *self.reconciler.latency.items(),
                *(self.bird.latency.items() if self.bird else ()))},
            bird=None if self.bird is None else BirdStatus(
                stats=attrs.asdict(self.bird.stats),
                refused=dict(self.bird.refused),
                sessions=tuple((name, s.address, s.description)
                               for name, s in self.bird.peers.items()),
                established=established),
        )

    async def scrape(self) -> Status:
        """The status for a metrics scrape; on an RR host, with BIRD's sessions, asked of BIRD
        in a worker thread meanwhile."""
        established = None
        if self.bird is not None:
            with contextlib.suppress(BirdError):
                up = await trio.to_thread.run_sync(protocols, self.bird.socket,
                                                   abandon_on_cancel=True)
                established = frozenset(p.name for p in up if p.established)
        return self.status(established)

    async def reload(self, flags: Mapping[str, Any]) -> None:
        """SIGHUP: read the config again and apply what can change while running: the policy,
        limits and zone label, and the TLS files. A bad config, or TLS files that fail their
        checks, change nothing and are logged in one line. The files are read in a worker
        thread, safely (`tls.read_regular`), so that the event loop never waits on them."""
        try:
            new = await trio.to_thread.run_sync(
                functools.partial(config_mod.load, dict(os.environ), flags),
                abandon_on_cancel=True)
        except ConfigError as e:
            log.error("reload: %s; keeping the running configuration", "; ".join(e.problems))
            return
        changed = [f.name for f in attrs.fields(Config)
                   if f.name not in _LIVE and not f.name.startswith("report_")  # report's own
                   and getattr(new, f.name) != getattr(self.config, f.name)]
        if (new.tls is None) != (self.config.tls is None):
            changed.append("tls")
            new = attrs.evolve(new, tls=self.config.tls)
        if self.tls is not None and new.tls is not None:
            if (problem := await self.tls.reload("SIGHUP", new.tls)) is not None:
                log.error("reload: TLS: %s; keeping the running configuration", problem)
                return
        for name in changed:
            log.warning("reload: %s changed; it takes effect when rrwatch restarts", name)
        for warning in new.warnings:
            log.warning("reload: %s", warning)
        self.config = attrs.evolve(self.config, **{name: getattr(new, name) for name in _LIVE})
        self.live.reconfigure(new, self.watcher.state)
        self.watcher.notify()
        log.info("reloaded the configuration")

    def _usurper(self, holder: bytes, why: str) -> None:
        self.stats.usurpers += 1
        log.warning("the leader key is held by %s %s: that is no leader; taking the key",
                    holder.decode("utf-8", "replace"), why)

    def _standing_by(self, leader: bytes) -> None:
        if leader != self._leader_seen:
            log.info("standing by: %s leads", leader.decode("utf-8", "replace"))
            self._leader_seen = leader


def _reasons(group: BaseExceptionGroup) -> list[str]:
    return [_reason(e) for e in leaves(group)]


def _reason(e: BaseException) -> str:
    return str(e) or type(e).__name__


# What a reload applies; the rest of the config is read at start only.
_LIVE = ("policy", "limits", "zone_label", "tls", "file", "policy_object", "max_rr_fraction",
         "max_zones", "warnings")


async def serve(config: Config, flags: Mapping[str, Any] | None = None,
                notifier: Notifier | None = None) -> None:
    """`rrwatch run`: the daemon until SIGTERM or SIGINT, which give up leadership at once.
    SIGHUP reloads the config (read with the same `flags`)."""
    notifier = notifier or Notifier.from_env()
    daemon = Daemon(config)
    ready = False

    async def start() -> None:
        nonlocal ready
        await nursery.start(daemon.run)
        ready = True
        notifier.ready(shown := daemon.status().summary())
        while True:  # STATUS= follows the role and the mesh, at most once a second
            await trio.sleep(1)
            if (line := daemon.status().summary()) != shown:
                notifier.status(shown := line)

    token = trio.lowlevel.current_trio_token()

    def scrape() -> Status | None:
        """Runs in the metrics thread: the status, made on the trio thread."""
        try:
            return trio.from_thread.run(daemon.scrape, trio_token=token)
        except (trio.RunFinishedError, trio.Cancelled):
            return None

    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    with trio.open_signal_receiver(*signals) as received, \
            metrics.serve(scrape, config.metrics_address):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(start)  # not awaited: a signal must work before the snapshot
            if notifier.watchdog_interval is not None:
                nursery.start_soon(_watchdog, notifier, notifier.watchdog_interval)
            async for signum in received:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: reloading the configuration")
                    notifier.reloading()
                    await daemon.reload(flags or {})
                    if ready:
                        notifier.ready(daemon.status().summary())
                    continue
                log.info("%s: stopping", signal.Signals(signum).name)
                notifier.stopping()
                nursery.cancel_scope.cancel()
                break


async def _watchdog(notifier: Notifier, interval: float) -> None:
    """Ping from the event loop itself: if it stalls, systemd restarts the service."""
    while True:
        notifier.watchdog()
        await trio.sleep(interval)


def main(config: Config, flags: Mapping[str, Any] | None = None) -> int:
    """Run the daemon; the exit status."""
    try:
        trio.run(serve, config, flags)
    except KeyboardInterrupt:
        pass
    except ConfigError as e:  # found only once running, such as a metrics port in use
        print(f"rrwatch: configuration: {e}", file=sys.stderr)
        return ExitStatus.CONFIG
    except (CertificateRefused, BaseExceptionGroup) as e:  # a group: from the task that asked
        refused = next((one for one in (leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
                        if isinstance(one, CertificateRefused)), None)
        if refused is None:
            raise
        print(printable(f"rrwatch: {refused}"), file=sys.stderr)
        return refused.status
    return 0

"""Prometheus metrics, read from the daemon's own counters at scrape time.

The HTTP server runs in prometheus-client's thread; a scrape only reads integers that the trio
thread updates, so no lock is needed and the daemon does no work between scrapes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from rrwatch import bird
from rrwatch.config import ConfigError

if TYPE_CHECKING:
    from rrwatch.bird import BirdKeeper
    from rrwatch.daemon import Daemon

_COUNTERS = (
    # (metric, help, which stats object, attribute)
    ("watch_snapshots", "Snapshots of etcd taken, the first one included", "watch", "snapshots"),
    ("watch_resyncs", "Snapshots taken after compaction or drift", "watch", "resyncs"),
    ("watch_reconnects", "Watch streams that broke and were reopened", "watch", "reconnects"),
    ("watch_idle_reopens", "Watch streams reopened after a silent read timeout", "watch",
     "idle_reopens"),
    ("watch_events", "Watch events applied to the model", "watch", "events"),
    ("probe_failures", "Probes of the watches' etcd member that failed", "watch",
     "probe_failures"),
    ("anti_entropy_checks", "Comparisons of the model with etcd", "watch", "checks"),
    ("drift_keys", "Keys found different between the model and etcd", "watch", "drift"),
    ("bad_records", "Records skipped because their value could not be used", "watch",
     "bad_records"),
    ("plans", "Plans made", "reconcile", "plans"),
    ("writes", "Writes that landed", "reconcile", "writes"),
    ("write_conflicts", "Writes that lost their guard to another change", "reconcile",
     "conflicts"),
    ("fenced_writes", "Writes rejected because another instance leads", "reconcile", "fenced"),
    ("write_errors", "Writes etcd could not take", "reconcile", "errors"),
    ("leaderships", "Times this instance became the leader", "daemon", "leaderships"),
)


class _Collector:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def collect(self) -> Iterator[Metric]:
        daemon = self._daemon
        stats = {"watch": daemon.watcher.stats, "reconcile": daemon.reconciler.stats,
                 "daemon": daemon.stats}
        yield GaugeMetricFamily("rrwatch_leader", "1 while this instance leads and writes",
                                value=int(daemon.leading))
        for name, help_text, source, attribute in _COUNTERS:
            yield CounterMetricFamily(f"rrwatch_{name}", help_text,
                                      value=getattr(stats[source], attribute))
        if daemon.bird is not None:
            yield from _bird(daemon.bird)


def _bird(keeper: BirdKeeper) -> Iterator[Metric]:
    """The RR host's BIRD: how its configuration fares, and its sessions, asked at scrape time
    (this runs in the metrics thread, so the blocking socket costs the daemon nothing)."""
    stats = keeper.stats
    for name, help_text, value in (
        ("bird_configs_applied", "BIRD configurations written and loaded", stats.applied),
        ("bird_configs_rejected", "Rendered BIRD configurations that bird -p refused",
         stats.rejected),
        ("bird_reload_failures", "Times BIRD could not be asked to load its configuration",
         stats.reload_failures),
    ):
        yield CounterMetricFamily(f"rrwatch_{name}", help_text, value=value)
    yield GaugeMetricFamily("rrwatch_bird_config_current",
                            "1 while BIRD runs the configuration the mesh asks for",
                            value=int(stats.current))
    try:
        states = {p.name: p for p in bird.protocols(keeper.socket)}
    except bird.BirdError:
        states = None
    yield GaugeMetricFamily("rrwatch_bird_up", "1 if BIRD's control socket answered",
                            value=int(states is not None))
    if states is None:
        return
    sessions = GaugeMetricFamily(
        "rrwatch_bird_session_established", "1 while the BGP session is established",
        labels=["protocol", "neighbor", "description"])
    for name, session in sorted(keeper.peers.items()):
        up = name in states and states[name].established
        sessions.add_metric([name, session.address, session.description], int(up))
    yield sessions


@contextlib.contextmanager
def serve(daemon: Daemon, address: tuple[str, int] | None) -> Iterator[None]:
    """Serve the daemon's metrics on `address` (host, port) for the block; None: not at all."""
    if address is None:
        yield
        return
    registry = CollectorRegistry()
    registry.register(_Collector(daemon))
    try:
        server, thread = start_http_server(address[1], address[0], registry=registry)
    except OSError as e:
        raise ConfigError([f"metrics address {address[0]}:{address[1]}: {e.strerror}"]) from None
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

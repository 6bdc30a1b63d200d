"""Prometheus metrics, made from one frozen Status at scrape time.

The HTTP server runs in prometheus-client's thread. A scrape asks for a Status (the daemon makes
it on its trio thread, and asks BIRD for its sessions meanwhile on an RR host) and renders it;
nothing here touches the daemon's live objects, and the daemon does no work between scrapes.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import importlib.metadata
import time
from collections.abc import Callable, Iterator, Mapping

import attrs
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from rrwatch.errors import ConfigError
from rrwatch.status import BirdStatus, Status

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
    ("breaks_unverified", "Break writes let go on the settle timer alone: nothing reported on"
     " the sessions they remove (RRWATCH_VERIFY_SESSIONS=auto)", "verify", "unverified"),
    ("steps_refused", "Steps not written because routes that reach now would stop reaching"
     " (counted once while the refusal stays the same)", "reconcile", "steps_refused"),
    ("invalid_writes", "Writes not made because Calico's validation would refuse the record"
     " they leave (counted once while the refusal stays the same)", "reconcile",
     "invalid_writes"),
    ("leaderships", "Times this instance became the leader", "daemon", "leaderships"),
    ("leader_key_takeovers", "Leader keys taken from a holder without a proper lease",
     "daemon", "usurpers"),
    ("tls_reloads", "Rotated TLS files taken up without a restart", "tls", "reloads"),
    ("tls_rejected", "Changed TLS files that failed a check, so the ones in use stayed", "tls",
     "rejected"),
)


# Latency buckets, in seconds: a plan takes milliseconds; a change is answered after the debounce
# (0.1 s), or after the settle time (10 s) when it waits for new sessions.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
           60.0, 120.0, 300.0)
_HISTOGRAMS = {
    # name -> help
    "plan_duration_seconds": "How long a plan took",
    "change_to_write_seconds": "From a change in etcd to the first write that answers it",
    "bird_change_to_reload_seconds": "From a change in etcd to the end of the BIRD reload that"
                                     " carries it (RR hosts)",
}


@attrs.define
class Latency:
    """Observations of one duration, counted per bucket (the last: above every bound)."""

    counts: list[int] = attrs.Factory(lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def frozen(self) -> tuple[tuple[int, ...], float]:
        return tuple(self.counts), self.total


def _histogram(name: str, counts: tuple[int, ...], total: float) -> Metric:
    cumulative, buckets = 0, []
    for bound, count in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
        cumulative += count
        buckets.append((bound, cumulative))
    return HistogramMetricFamily(f"rrwatch_{name}", _HISTOGRAMS[name], buckets=buckets,
                                 sum_value=total)


def _version() -> str:
    try:
        return importlib.metadata.version("rrwatch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _Collector:
    def __init__(self, source: Callable[[], Status | None]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        status = self._source()
        if status is None:  # the daemon is stopping
            return
        stats = status.stats
        yield InfoMetricFamily("rrwatch_build", "rrwatch's version",
                               value={"version": _version()})
        yield GaugeMetricFamily("rrwatch_leader", "1 while this instance leads and writes",
                                value=int(status.leading))
        for name, help_text, source, attribute in _COUNTERS:
            if source in stats:
                yield CounterMetricFamily(f"rrwatch_{name}", help_text,
                                          value=stats[source][attribute])
        reconcile = stats["reconcile"]
        yield GaugeMetricFamily("rrwatch_pending_changes",
                                "Writes the last plan wanted (0 when the mesh is as it should be)",
                                value=reconcile["pending"])
        yield GaugeMetricFamily("rrwatch_last_reconcile_timestamp_seconds",
                                "When a plan last found etcd holding the desired mesh (0: never)",
                                value=reconcile["converged_at"])
        held = stats["verify"]
        yield GaugeMetricFamily("rrwatch_breaks_held",
                                "Sessions that held breaks wait for: reported not Established,"
                                " not reported, or not up for the dwell yet",
                                value=held["held"])
        yield GaugeMetricFamily("rrwatch_breaks_held_seconds",
                                "How long breaks have been held without a pause (0: none held)",
                                value=max(0.0, time.time() - held["held_since"])
                                if held["held_since"] else 0.0)
        yield GaugeMetricFamily("rrwatch_bad_records_current",
                                "Records skipped now because their value cannot be used",
                                value=status.bad_records)
        yield GaugeMetricFamily("rrwatch_policy_object",
                                "1 while a policy object in etcd is in force",
                                value=int(status.policy_object))
        yield from _zones(status)
        if status.tls_not_after is not None:
            yield GaugeMetricFamily("rrwatch_tls_cert_expiry_timestamp_seconds",
                                    "When the etcd client certificate in use expires (Unix time)",
                                    value=status.tls_not_after)
        for name, (counts, total) in sorted(status.latencies.items()):
            yield _histogram(name, counts, total)
        down = GaugeMetricFamily("rrwatch_reported_sessions_down",
                                 "Sessions a speaker's report has not Established (plus 1 when"
                                 " its BIRD could not be read)", labels=["speaker"])
        for speaker, count in sorted(status.sessions_down.items()):
            down.add_metric([speaker], count)
        yield down
        if status.bird is not None:
            yield from _bird(status.bird)


def _zones(status: Status) -> Iterator[Metric]:
    """Nodes, RRs and clients per zone, as the model has them."""
    speakers = status.speakers
    rrs = dict.fromkeys(speakers, 0) | dict(status.reflectors)
    families = {
        "nodes": ("BGP speakers (nodes with a BGP address) per zone", speakers),
        "route_reflectors": ("Nodes with a cluster ID per zone", rrs),
        "clients": ("BGP speakers that are not route reflectors, per zone",
                    {zone: count - rrs.get(zone, 0) for zone, count in speakers.items()}),
    }
    for name, (help_text, counts) in families.items():
        family = GaugeMetricFamily(f"rrwatch_zone_{name}", help_text, labels=["zone"])
        for zone, count in sorted(counts.items()):
            family.add_metric([zone], count)
        yield family
    yield GaugeMetricFamily("rrwatch_rr_hosts", "Registered RR hosts (registration keys)",
                            value=status.rr_hosts)


def _bird(bird: BirdStatus) -> Iterator[Metric]:
    """The RR host's BIRD: how its configuration fares, and its sessions."""
    stats = bird.stats
    for name, help_text, value in (
        ("bird_configs_applied", "BIRD configurations written and loaded", stats["applied"]),
        ("bird_configs_rejected", "Rendered BIRD configurations that bird -p refused",
         stats["rejected"]),
        ("bird_reload_failures", "Times BIRD could not be asked to load its configuration",
         stats["reload_failures"]),
    ):
        yield CounterMetricFamily(f"rrwatch_{name}", help_text, value=value)
    yield GaugeMetricFamily("rrwatch_bird_config_current",
                            "1 while BIRD runs the configuration the mesh asks for",
                            value=int(stats["current"]))
    yield from _refused(bird.refused)
    yield GaugeMetricFamily("rrwatch_bird_up", "1 if BIRD's control socket answered",
                            value=int(bird.established is not None))
    if bird.established is None:
        return
    sessions = GaugeMetricFamily(
        "rrwatch_bird_session_established", "1 while the BGP session is established",
        labels=["protocol", "neighbor", "description"])
    for name, address, description in sorted(bird.sessions):
        sessions.add_metric([name, address, description], int(name in bird.established))
    yield sessions


# Refused neighbours shown by name: enough to find them, bounded whatever the records hold.
REFUSED_SHOWN = 20


def _refused(refused: Mapping[str, str]) -> Iterator[Metric]:
    """Neighbours the RR host gives no session because their records fail a check: how many,
    and the first few by name with why (an info-style gauge, its series bounded)."""
    yield GaugeMetricFamily("rrwatch_bird_bad_neighbours",
                            "Neighbours refused a BIRD session because their records fail a check",
                            value=len(refused))
    named = GaugeMetricFamily(
        "rrwatch_bird_bad_neighbour_info",
        f"1 per neighbour refused a BIRD session, with why (the first {REFUSED_SHOWN} by name)",
        labels=["name", "reason"])
    for name in heapq.nsmallest(REFUSED_SHOWN, refused):
        named.add_metric([name, refused[name]], 1)
    yield named


@contextlib.contextmanager
def serve(source: Callable[[], Status | None], address: tuple[str, int] | None
          ) -> Iterator[None]:
    """Serve the metrics of the Status `source` gives (None: no metrics now) on `address`
    (host, port) for the block; None: not at all."""
    if address is None:
        yield
        return
    registry = CollectorRegistry()
    registry.register(_Collector(source))
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

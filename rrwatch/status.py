"""The daemon's status at one moment, as one frozen value.

The trio thread makes it; the metrics thread and the systemd STATUS= line only read it, so no
other thread ever walks the daemon's live objects.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs


@attrs.frozen
class BirdStatus:
    """An RR host's BIRD: how its configuration fares, and its sessions."""

    stats: Mapping[str, int]  # BirdStats, field by field
    refused: Mapping[str, str]  # neighbour -> why it has no session
    sessions: tuple[tuple[str, str, str], ...]  # (protocol, neighbour address, description)
    established: frozenset[str] | None  # protocols with an Established session; None: no answer


@attrs.frozen
class Status:
    role: str  # "leading", "standing by" or "dry run"
    stats: Mapping[str, Mapping[str, float]]  # each stats object ("watch", ...), field by field
    bad_records: int  # records skipped now
    policy_object: bool  # a policy object in etcd is in force
    speakers: Mapping[str, int]  # zone -> nodes with a BGP address
    reflectors: Mapping[str, int]  # zone -> nodes with a cluster ID
    rr_hosts: int  # registrations
    tls_not_after: float | None = None  # Unix time: when the client certificate in use expires
    # Histograms by metric name: counts per bucket (metrics.BUCKETS, then above), and the sum.
    latencies: Mapping[str, tuple[tuple[int, ...], float]] = attrs.Factory(dict)
    # Per speaker that reports its sessions: those its report has not Established (all of them
    # when its BIRD could not be read).
    sessions_down: Mapping[str, int] = attrs.Factory(dict)
    bird: BirdStatus | None = None  # on an RR host

    @property
    def leading(self) -> bool:
        return self.role == "leading"

    def summary(self) -> str:
        """One line for systemd's STATUS=: role, and the mesh as the model has it."""
        speakers = sum(self.speakers.values())
        rrs = sum(self.reflectors.values())
        return (f"{self.role}; {len(self.speakers)} zones, {rrs} RRs, {speakers - rrs} clients,"
                f" {self.rr_hosts} RR host registrations")

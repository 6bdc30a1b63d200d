"""The route-reflector mesh the cluster should have, computed from the model. Pure code.

Cost: O(zones + route reflectors) per call, thanks to the model's per-zone rank index, so it can
run after every batch of events whatever the size of the cluster.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping

import attrs

from rrwatch.model import ClusterState, RRLabel, rank
from rrwatch.selector import Compare, render

TOPOLOGIES = ("simple",)


class PolicyError(ValueError):
    """A policy that cannot produce a valid mesh (bad sizes, bad cluster-ID template)."""


@attrs.frozen
class Policy:
    """How the mesh is sized and shaped; built once from config."""

    rr_label: RRLabel = RRLabel("calico-route-reflector", "")
    ratio: float = 0.005
    min_rrs: int = 3
    max_rrs: int = 25
    cluster_id_template: str = "224.0.0.%d"
    topology: str = "simple"

    def __attrs_post_init__(self) -> None:
        problems = []
        if not 0 < self.ratio <= 1:
            problems.append(f"ratio {self.ratio} is not in (0, 1]")
        if not 0 <= self.min_rrs <= self.max_rrs:
            problems.append(f"min {self.min_rrs} and max {self.max_rrs} are not 0 <= min <= max")
        if self.topology not in TOPOLOGIES:
            problems.append(f"topology {self.topology!r} is not one of {', '.join(TOPOLOGIES)}")
        try:
            self.cluster_id(1)
        except PolicyError as e:
            problems.append(str(e))
        if problems:
            raise PolicyError("; ".join(problems))

    def rr_count(self, eligible: int) -> int:
        """clamp(ceil(eligible × ratio), min, max), and never more than there are nodes."""
        wanted = math.ceil(eligible * self.ratio)
        return min(eligible, max(self.min_rrs, min(self.max_rrs, wanted)))

    def cluster_id(self, index: int) -> str:
        """The template filled with `index`, which must give a valid IPv4 address."""
        try:
            text = self.cluster_id_template % index
            return str(ipaddress.IPv4Address(text))
        except (TypeError, ValueError):
            raise PolicyError(
                f"cluster ID template {self.cluster_id_template!r} does not give an IPv4 "
                f"address for {index}"
            ) from None

    def rr_selector(self) -> str:
        return render(Compare(self.rr_label.key, "==", self.rr_label.value))

    def client_selector(self) -> str:
        return render(Compare(self.rr_label.key, "!=", self.rr_label.value))


@attrs.frozen
class Mesh:
    """The desired state: which nodes are RRs (with their cluster IDs), and the owned BGPPeers."""

    reflectors: Mapping[str, str]
    peers: Mapping[str, Mapping[str, object]]


def choose_reflectors(state: ClusterState, policy: Policy) -> dict[str, list[str]]:
    """Per zone, the nodes that should be route reflectors.

    Sticky: current RRs that are still eligible stay (best-ranked first when there are too
    many); free places go to the best-ranked other eligible nodes. The answer depends only on
    the state, never on the order in which events built it.
    """
    current: dict[str, list[tuple[bytes, str]]] = {}
    for name in state.marked:
        node = state.nodes[name]
        if node.cluster_id is not None and state.eligible(node):
            current.setdefault(state.zone_of(node), []).append((rank(name), name))

    chosen = {}
    for zone, index in state.zones.items():
        wanted = policy.rr_count(len(index))
        picked = [name for _, name in sorted(current.get(zone, ()))[:wanted]]
        taken = set(picked)
        for name in index.names():
            if len(picked) >= wanted:
                break
            if name not in taken:
                picked.append(name)
        chosen[zone] = sorted(picked)
    return chosen


def desired(state: ClusterState, policy: Policy) -> Mesh:
    """The `simple` topology: one shared cluster ID, RRs mesh, every client peers with every RR."""
    shared_id = policy.cluster_id(1)
    reflectors = {
        name: shared_id for names in choose_reflectors(state, policy).values() for name in names
    }
    rr, client = policy.rr_selector(), policy.client_selector()
    peers = {
        "rrwatch-rr-mesh": {"nodeSelector": rr, "peerSelector": rr},
        "rrwatch-rr-clients": {"nodeSelector": client, "peerSelector": rr},
    }
    return Mesh(reflectors=reflectors, peers=peers)

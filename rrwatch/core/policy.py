"""The policy: which topology, how many RRs per zone, which nodes may be one."""

from __future__ import annotations

import ipaddress
import math

import attrs

from rrwatch.core.model import RRLabel
from rrwatch.core.selector import Compare, Selector

TOPOLOGIES = ("simple", "zoned", "multi")

# So many RRs per zone are always allowed, whatever the fraction bound: Calico's advice is two
# or three per client.
FLOOR_RRS = 3

# Cluster-ID templates are tried for indexes 1, 2, ... up to this many.
ID_LIMIT = 65536


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
    client_rrs: int = 3  # k: route reflectors per client in `multi`
    exclude: Selector | None = None  # never route reflectors
    prefer: Selector | None = None  # promoted first, demoted last
    # Local bounds, which the policy object cannot set: at most this fraction of a zone's
    # eligible nodes are RRs (but FLOOR_RRS are always allowed), and at most this many zones
    # have RRs of their own (the largest; the others' clients use theirs).
    max_fraction: float = 1.0
    max_zones: int = ID_LIMIT
    # How many distinct cluster IDs the template gives (indexes 1..id_capacity).
    id_capacity: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        problems = []
        if not 0 < self.ratio <= 1:
            problems.append(f"ratio {self.ratio} is not in (0, 1]")
        if not 0 <= self.min_rrs <= self.max_rrs:
            problems.append(f"min {self.min_rrs} and max {self.max_rrs} are not 0 <= min <= max")
        if self.topology not in TOPOLOGIES:
            problems.append(f"topology {self.topology!r} is not one of {', '.join(TOPOLOGIES)}")
        if self.client_rrs < 1:
            problems.append(f"RRs per client {self.client_rrs} is not at least 1")
        capacity = 0
        while capacity < ID_LIMIT and self._template_gives(capacity + 1):
            capacity += 1
        object.__setattr__(self, "id_capacity", capacity)
        needed = self.max_rrs if self.topology == "multi" else 1
        if capacity == 0:
            problems.append(f"cluster ID template {self.cluster_id_template!r} does not give an"
                            " IPv4 address for 1")
        elif capacity < needed:
            problems.append(f"cluster ID template {self.cluster_id_template!r} gives only"
                            f" {capacity} distinct IDs; `multi` needs {needed} (max per zone)")
        if problems:
            raise PolicyError("; ".join(problems))

    def _template_gives(self, index: int) -> bool:
        try:
            ipaddress.IPv4Address(self.cluster_id_template % index)
        except (TypeError, ValueError):
            return False
        return True

    def rr_count(self, eligible: int) -> int:
        """clamp(ceil(eligible × ratio), min, max), never more than there are nodes, nor more
        than the local bound allows."""
        wanted = math.ceil(eligible * self.ratio)
        bound = max(FLOOR_RRS, math.ceil(eligible * self.max_fraction))
        return min(eligible, bound, max(self.min_rrs, min(self.max_rrs, wanted)))

    def cluster_id(self, index: int) -> str:
        """The template filled with `index` (1 <= index <= id_capacity): an IPv4 address."""
        return str(ipaddress.IPv4Address(self.cluster_id_template % index))

    def rr(self) -> Selector:
        return Compare(self.rr_label.key, "==", self.rr_label.value)

    def client(self) -> Selector:
        return Compare(self.rr_label.key, "!=", self.rr_label.value)

"""The policy in force: the local config's, with the policy object in etcd laid over it.

The object lives at `<prefix>policy` as JSON, keyed like the config file's [policy] table:
`{"topology": "multi", "client_rrs": 2}`. It sets the options it names; the others keep their
local values, so every instance applies the same policy whatever its own config says. The
object is followed like any watched record: a change applies at once, deleting it brings back
the local policy, and a bad object is logged with its key, counted and skipped, leaving the
policy before it in force.
"""

from __future__ import annotations

import logging

import attrs

from rrwatch.config.loader import Config
from rrwatch.config.options import LIMIT_FIELDS, OPTIONS, POLICY_FIELDS, text_of
from rrwatch.core import decoding
from rrwatch.core.model import ClusterState, Network, RRLabel, foreign_label
from rrwatch.core.plan import Limits
from rrwatch.core.policy import Policy, PolicyError
from rrwatch.core.selector import Selector

log = logging.getLogger("rrwatch.settings")

# The local bounds on the object: the object cannot set them.
LOCAL_ONLY = ("policy.object", "policy.max_rr_fraction", "policy.max_zones")
# The options the object may set, by their key in it ("min" for the file's policy.min).
OBJECT_KEYS = {o.key.removeprefix("policy."): o for o in OPTIONS
               if o.key.startswith("policy.") and o.key not in LOCAL_ONLY}


@attrs.frozen
class Settings:
    policy: Policy
    limits: Limits
    zone_label: str
    hosts: tuple[Network, ...] = ()  # where RR hosts may register (empty: anywhere)
    held: str | None = None  # why these settings may not be written with, if they may not

    @classmethod
    def of(cls, config: Config) -> Settings:
        policy = attrs.evolve(config.policy, max_fraction=config.max_rr_fraction,
                              max_zones=config.max_zones)
        return cls(policy, config.limits, config.zone_label, config.rr_host_prefixes)

    @property
    def shape(self) -> tuple[str, RRLabel, Selector | None, Selector | None]:
        """What the model's indexes depend on: a change re-indexes every node."""
        p = self.policy
        return self.zone_label, p.rr_label, p.exclude, p.prefer

    def new_state(self) -> ClusterState:
        return ClusterState(*self.shape, host_prefixes=self.hosts)


def overlay(local: Settings, key: str, value: bytes) -> Settings:
    """`local` with the policy object `value` laid over it; BadRecord if it cannot be used."""
    document = decoding.json_object(key, value)
    unknown = sorted(document.keys() - OBJECT_KEYS.keys())
    if unknown:
        raise decoding.BadRecord(key, f"unknown key {', '.join(unknown)}")
    values, problems = {}, []
    for name, raw in document.items():
        option = OBJECT_KEYS[name]
        try:
            values[option.name] = option.parse(text_of(raw, option))
        except ValueError as e:
            problems.append(f"{name}: {e}")
    if problems:
        raise decoding.BadRecord(key, "; ".join(problems))
    try:
        policy = attrs.evolve(local.policy, **{
            field: values[name] for name, field in POLICY_FIELDS.items() if name in values})
    except PolicyError as e:
        raise decoding.BadRecord(key, str(e)) from None
    limits = attrs.evolve(local.limits, **{
        field: values[name] for name, field in LIMIT_FIELDS.items() if name in values})
    return attrs.evolve(local, policy=policy, limits=limits,
                        zone_label=values.get("zone_label", local.zone_label))


def adoption_problem(state: ClusterState, label: RRLabel) -> str | None:
    """Why rrwatch may not take `label` as its RR label in this cluster, or None: nodes that
    rrwatch did not mark carry its key, so it is someone else's (a typo, or `team=payments`),
    and writing it would destroy their values. O(nodes), once per change of the label."""
    carriers = sorted(n.name for n in state.nodes.values() if foreign_label(n, label.key))
    if not carriers:
        return None
    return (f"the RR label key {label.key!r} is carried by {len(carriers)} nodes rrwatch did not"
            f" mark ({', '.join(map(repr, carriers[:3]))}{', ...' if len(carriers) > 3 else ''}):"
            " it belongs to someone else")


def exclusion_problem(state: ClusterState, settings: Settings) -> str | None:
    """Why the object's `exclude` may not be used, or None: with the node-to-node mesh off,
    a zone left without any candidate would be left without RRs of its own."""
    if state.bgp.mesh_enabled or settings.policy.exclude is None:
        return None
    probe = settings.new_state()
    speakers, candidates = set(), set()
    for node in state.nodes.values():
        if node.has_bgp_address:
            speakers.add(probe.zone_of(node))
            if probe.eligible(node):
                candidates.add(probe.zone_of(node))
    empty = sorted(speakers - candidates)
    if not empty:
        return None
    return (f"exclude leaves zone {', '.join(map(repr, empty[:3]))}"
            f"{' and more' if len(empty) > 3 else ''} without candidates while the node-to-node"
            " mesh is off")


def describe(settings: Settings) -> str:
    p, limits = settings.policy, settings.limits
    return (f"topology {p.topology}, {p.min_rrs}-{p.max_rrs} RRs per zone at ratio {p.ratio}"
            + (f", {p.client_rrs} per client" if p.topology == "multi" else "")
            + f", zone label {settings.zone_label or '(none)'}"
            + f", RR label {p.rr_label.key}={p.rr_label.value}"
            + f", at most {limits.node_writes} node writes and {limits.demotions} demotions"
            " per step")

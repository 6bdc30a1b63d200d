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
from collections.abc import Collection
from typing import Any

import attrs

from rrwatch import calico
from rrwatch.config import LIMIT_FIELDS, OPTIONS, POLICY_FIELDS, Config, text_of
from rrwatch.mesh import Policy, PolicyError
from rrwatch.model import ClusterState, Network, RRLabel, foreign_label
from rrwatch.plan import Limits
from rrwatch.watch import Records

log = logging.getLogger(__name__)

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
    def shape(self) -> tuple[Any, ...]:
        """What the model's indexes depend on: a change re-indexes every node."""
        p = self.policy
        return self.zone_label, p.rr_label, p.exclude, p.prefer

    def new_state(self) -> ClusterState:
        return ClusterState(*self.shape, host_prefixes=self.hosts)


def overlay(local: Settings, key: str, value: bytes) -> Settings:
    """`local` with the policy object `value` laid over it; BadRecord if it cannot be used."""
    document = calico.json_object(key, value)
    unknown = sorted(document.keys() - OBJECT_KEYS.keys())
    if unknown:
        raise calico.BadRecord(key, f"unknown key {', '.join(unknown)}")
    values, problems = {}, []
    for name, raw in document.items():
        option = OBJECT_KEYS[name]
        try:
            values[option.name] = option.parse(text_of(raw, option))
        except ValueError as e:
            problems.append(f"{name}: {e}")
    if problems:
        raise calico.BadRecord(key, "; ".join(problems))
    try:
        policy = attrs.evolve(local.policy, **{
            field: values[name] for name, field in POLICY_FIELDS.items() if name in values})
    except PolicyError as e:
        raise calico.BadRecord(key, str(e)) from None
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


class Live:
    """The settings in force for one daemon or command, kept with the model they shape.

    The watcher reads through it (`records`): the policy object lands here, every other key
    in the model by calico.apply.
    """

    def __init__(self, config: Config) -> None:
        self.key = config.policy_key
        self.prefixes = (self.key, *calico.WATCHED_PREFIXES)  # the object first: cheap reshape
        self.local = Settings.of(config)
        self.settings = self.local
        self.version = 0  # bumped whenever the settings in force change
        self._object: bytes | None = None  # the last good object
        self._use_object = config.policy_object
        self._adopted: set[str] = set()  # RR label keys found free to use in this cluster

    @property
    def records(self) -> Records:
        return Records(self.settings_state, self.prefixes, self.apply, self.loaded)

    @property
    def from_object(self) -> bool:
        """A policy object in etcd is in force."""
        return self._object is not None

    def settings_state(self) -> ClusterState:
        return self.settings.new_state()

    def apply(self, state: ClusterState, key: str, value: bytes | None, revision: int) -> None:
        if key != self.key:
            calico.apply(state, key, value, revision)
            return
        if not self._use_object:
            if value is not None:
                log.info("ignoring %s: the local config says policy.object = false", key)
            return
        if value is None:
            settings = self._checked(state, self.local)
        else:
            with calico.reading(key):
                settings = overlay(self.local, key, value)
            why = adoption_problem(state, settings.policy.rr_label) if self._adopts(
                settings) else None
            why = why or exclusion_problem(state, settings)
            if why:
                raise calico.BadRecord(key, why)
        self._object = value
        self._use(state, settings, f"{key} at revision {revision}" if value is not None
                  else f"{key} deleted at revision {revision}: the local policy")

    def loaded(self, state: ClusterState, keys: Collection[str]) -> None:
        """After a snapshot: an object that is gone was deleted while nobody watched; and the
        local RR label, not checked yet or held, is checked against the nodes."""
        if self.key not in keys and self._object is not None:
            self._object = None
            self._use(state, self._checked(state, self.local), f"{self.key} is gone: the local"
                      " policy")
        elif self._object is None:
            self._use(state, self._checked(state, self.local), "the local config")

    def reconfigure(self, config: Config, state: ClusterState) -> None:
        """New local settings (SIGHUP): the object, if any, is laid over them again."""
        self.local = Settings.of(config)
        self._use_object = config.policy_object
        settings = self._checked(state, self.local)
        if self._object is not None and self._use_object:
            try:
                settings = overlay(self.local, self.key, self._object)
            except calico.BadRecord as e:  # it fits the old local settings but not these
                log.warning("skipping %s with the new local policy: %s", self.key, e.reason)
        self._use(state, settings, "the reloaded config")

    def _adopts(self, settings: Settings) -> bool:
        """`settings` would take an RR label key that was not checked yet."""
        return settings.policy.rr_label.key not in self._adopted

    def _checked(self, state: ClusterState, settings: Settings) -> Settings:
        """Local settings, held (nothing written) while their RR label is someone else's."""
        if not self._adopts(settings):
            return settings
        why = adoption_problem(state, settings.policy.rr_label)
        return settings if why is None else attrs.evolve(settings, held=why)

    def _use(self, state: ClusterState, settings: Settings, source: str) -> None:
        if settings == self.settings:
            return
        if settings.held is None:
            self._adopted.add(settings.policy.rr_label.key)
        if settings.shape != self.settings.shape:
            state.reshape(*settings.shape)
        if settings.hosts != self.settings.hosts:
            state.allow_hosts(settings.hosts)
        if settings.held is not None:
            log.error("holding every write: %s", settings.held)
        log.info("policy from %s: %s", source, describe(settings))
        self.settings = settings
        self.version += 1


def describe(settings: Settings) -> str:
    p, limits = settings.policy, settings.limits
    return (f"topology {p.topology}, {p.min_rrs}-{p.max_rrs} RRs per zone at ratio {p.ratio}"
            + (f", {p.client_rrs} per client" if p.topology == "multi" else "")
            + f", zone label {settings.zone_label or '(none)'}"
            + f", RR label {p.rr_label.key}={p.rr_label.value}"
            + f", at most {limits.node_writes} node writes and {limits.demotions} demotions"
            " per step")

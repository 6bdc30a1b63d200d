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
from rrwatch.model import ClusterState
from rrwatch.plan import Limits
from rrwatch.watch import Records

log = logging.getLogger(__name__)

# The options the object may set, by their key in it ("min" for the file's policy.min).
OBJECT_KEYS = {o.key.removeprefix("policy."): o for o in OPTIONS if o.key.startswith("policy.")}


@attrs.frozen
class Settings:
    policy: Policy
    limits: Limits
    zone_label: str

    @classmethod
    def of(cls, config: Config) -> Settings:
        return cls(config.policy, config.limits, config.zone_label)

    @property
    def shape(self) -> tuple[Any, ...]:
        """What the model's indexes depend on: a change re-indexes every node."""
        p = self.policy
        return self.zone_label, p.rr_label, p.exclude, p.prefer

    def new_state(self) -> ClusterState:
        return ClusterState(*self.shape)


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
    return Settings(policy, limits, values.get("zone_label", local.zone_label))


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
        settings = self.local if value is None else overlay(self.local, key, value)
        self._object = value
        self._use(state, settings, f"{key} at revision {revision}" if value is not None
                  else f"{key} deleted at revision {revision}: the local policy")

    def loaded(self, state: ClusterState, keys: Collection[str]) -> None:
        """After a snapshot: an object that is gone was deleted while nobody watched."""
        if self.key not in keys and self._object is not None:
            self._object = None
            self._use(state, self.local, f"{self.key} is gone: the local policy")

    def reconfigure(self, config: Config, state: ClusterState) -> None:
        """New local settings (SIGHUP): the object, if any, is laid over them again."""
        self.local = Settings.of(config)
        settings = self.local
        if self._object is not None:
            try:
                settings = overlay(self.local, self.key, self._object)
            except calico.BadRecord as e:  # it fits the old local settings but not these
                log.warning("skipping %s with the new local policy: %s", self.key, e.reason)
        self._use(state, settings, "the reloaded config")

    def _use(self, state: ClusterState, settings: Settings, source: str) -> None:
        if settings == self.settings:
            return
        if settings.shape != self.settings.shape:
            state.reshape(*settings.shape)
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

"""The settings in force while the daemon runs: the local config's, with the policy object
followed from etcd and laid over them."""

from __future__ import annotations

import logging
from collections.abc import Collection

import attrs

from rrwatch.config import Config
from rrwatch.config.settings import Settings, adoption_problem, describe, exclusion_problem, overlay
from rrwatch.core import calico, decoding, reports
from rrwatch.core.model import ClusterState
from rrwatch.core.sessions import speaker_of
from rrwatch.daemon.records import Records

log = logging.getLogger("rrwatch.settings")


class Live:
    """The settings in force for one daemon or command, kept with the model they shape.

    The watcher reads through it (`records`): the policy object lands here, session reports
    and every other key in the model.
    """

    def __init__(self, config: Config) -> None:
        self.key = config.policy_key
        self.sessions = config.sessions_prefix
        # The object first: a reshape is cheap while the model is empty.
        self.prefixes = (self.key, self.sessions, *calico.WATCHED_PREFIXES)
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
        if key.startswith(self.sessions):
            if value is None:  # a key that named no speaker held no report: nothing to remove
                state.remove_report(key[len(self.sessions):])
                return
            speaker = speaker_of(key, self.sessions)
            with decoding.reading(key):
                state.put_report(speaker, reports.parse_report(key, value), revision)
            return
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
            with decoding.reading(key):
                settings = overlay(self.local, key, value)
            why = adoption_problem(state, settings.policy.rr_label) if self._adopts(
                settings) else None
            why = why or exclusion_problem(state, settings)
            if why:
                raise decoding.BadRecord(key, why)
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
            except decoding.BadRecord as e:  # it fits the old local settings but not these
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

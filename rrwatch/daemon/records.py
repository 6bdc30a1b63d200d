"""Reading etcd's records into a model: the snapshot at one revision, the routing of each key
to the code that applies it, and the comparison that finds drift."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence

import attrs

from rrwatch.core import calico, decoding
from rrwatch.core.model import ClusterState
from rrwatch.etcd import KV, Etcd

log = logging.getLogger("rrwatch.watch")


@attrs.frozen
class Snapshot:
    revision: int
    state: ClusterState
    bad: dict[str, str]  # key -> reason, for values that cannot be used
    revisions: dict[str, int]  # key -> mod revision, for every key read
    leader: str | None = None  # who holds the leader key, when the reader asked


def _nothing(state: ClusterState, keys: Collection[str]) -> None:
    pass


@attrs.frozen
class Records:
    """What the model is made of: the prefixes followed, a new empty model, how one key's value
    (None: deleted) lands in it, and what to do once a snapshot is in (given its keys)."""

    new_state: Callable[[], ClusterState]
    prefixes: tuple[str, ...] = calico.WATCHED_PREFIXES
    apply: Callable[[ClusterState, str, bytes | None, int], None] = calico.apply
    loaded: Callable[[ClusterState, Collection[str]], None] = _nothing


async def load(etcd: Etcd, records: Records) -> Snapshot:
    """The model as of one revision: every watched key read once, in pages.

    Calico's records land in the new model page by page, so that the values of a large cluster
    are never all in memory at once. Any other record (the policy object) waits for the last
    page: it may change the settings in force, which must not change before the model they
    shape is whole. Those settings may also have changed meanwhile (a reload): the model takes
    their shape first.
    """
    state = records.new_state()
    bad: dict[str, str] = {}
    revisions: dict[str, int] = {}
    held: list[KV] = []

    def apply(kv: KV) -> None:
        try:
            records.apply(state, kv.key, kv.value, kv.mod_revision)
        except decoding.BadRecord as e:
            bad[kv.key] = e.reason

    revision = 0
    async for page in etcd.pages(records.prefixes):
        revision, kvs = page
        for kv in kvs:
            revisions[kv.key] = kv.mod_revision
            if kv.key.startswith(calico.WATCHED_PREFIXES):
                apply(kv)
            else:
                held.append(kv)
    shape = records.new_state().shape
    if state.shape != shape:
        state.reshape(*shape)
    for kv in held:
        apply(kv)
    records.loaded(state, revisions.keys())
    return Snapshot(revision, state, bad, revisions)


async def key_revisions(etcd: Etcd, prefixes: Sequence[str]) -> tuple[int, dict[str, int]]:
    """etcd's keys under the prefixes and their mod revisions, as of the revision returned
    (keys only, page by page)."""
    revision = 0
    out: dict[str, int] = {}
    async for page in etcd.pages(prefixes, keys_only=True):
        revision, kvs = page
        out.update((kv.key, kv.mod_revision) for kv in kvs)
    return revision, out


def drift(
    model: Mapping[str, int], deleted: Mapping[str, int], fresh: Mapping[str, int], revision: int
) -> list[str]:
    """The keys on which a model disagrees with etcd as read at `revision`.

    `model` and `fresh` map keys to mod revisions; `deleted` maps keys the model saw deleted to
    the revision of the deletion. A key the model saw change after `revision` is not drift:
    there the snapshot is the older view.
    """
    return sorted(
        key for key in model.keys() | fresh.keys()
        if model.get(key, 0) <= revision and deleted.get(key, 0) <= revision
        and model.get(key, 0) != fresh.get(key, 0)
    )

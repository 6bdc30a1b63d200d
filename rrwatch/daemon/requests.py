"""The etcd requests that carry out a plan's ops: each guarded by the revision it was planned
from, held to Calico's validation, and batched to fit etcd's transaction limits."""

from __future__ import annotations

from rrwatch.core import calico_api, edits
from rrwatch.core.model import RRLabel
from rrwatch.core.plan import DeletePeer, Op, PutPeer, SetNode
from rrwatch.etcd import KV, delete, put

# etcd's default --max-txn-ops, 128, limits the compares and each branch of a transaction: a
# batch of 127 writes leaves room for the fence's compare, and for reading the fence key too
# when the transaction fails. A transaction's values (base64, as sent) are kept to about
# BATCH_BYTES, well under etcd's default 1.5 MiB request limit.
BATCH = 127
BATCH_BYTES = 512 * 1024


def batches(ops: tuple[Op, ...]) -> list[tuple[Op, ...]]:
    """The ops in order, at most BATCH at a time."""
    return [ops[i:i + BATCH] for i in range(0, len(ops), BATCH)]


def chunks(requests: list[tuple[Op, dict]]) -> list[list[tuple[Op, dict]]]:
    """The requests in order, split so that each transaction carries at most about
    BATCH_BYTES of values (nodes with large annotations could otherwise pass etcd's limit)."""
    out: list[list[tuple[Op, dict]]] = []
    size = 0
    for op, request in requests:
        cost = len(request.get("request_put", {}).get("value", ""))
        if not out or (out[-1] and size + cost > BATCH_BYTES):
            out.append([])
            size = 0
        out[-1].append((op, request))
        size += cost
    return out


def edits_stored(op: Op) -> bool:
    """The op rewrites a stored value, so it needs that value as planned from."""
    return isinstance(op, SetNode) or (isinstance(op, PutPeer) and op.revision is not None)


class InvalidWrite(ValueError):
    """The record a write would leave is one Calico's v3 validation refuses."""


def write_request(op: Op, current: KV | None, rr_label: RRLabel) -> dict | None:
    """The etcd request that carries out `op` on the record as it is now (`current`, read when
    the op edits stored JSON); None when that record changed since the plan was made. Raises
    InvalidWrite if the record it leaves brings a problem Calico's validation would find."""
    if isinstance(op, DeletePeer):
        return delete(op.key)
    fresh = isinstance(op, PutPeer) and op.revision is None
    if not fresh and (current is None or current.mod_revision != op.revision):
        return None
    before = None if current is None else current.value
    value = edits.written(op, before, rr_label)
    assert value is not None
    if wrong := calico_api.introduced(op.key, before, value):
        raise InvalidWrite("; ".join(wrong))
    return put(op.key, value)

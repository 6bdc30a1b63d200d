"""An RR host's registration, held on the instance's lease so that it goes when the host does;
a registration written by hand is never touched."""

from __future__ import annotations

import functools
import logging

from rrwatch.etcd import Etcd, EtcdError, created_at, denials, get, mod_is, put
from rrwatch.retry import Backoff, until_ok

log = logging.getLogger("rrwatch.election")


async def register(etcd: Etcd, key: str, value: bytes, lease: int) -> None:
    """Hold a registration on `lease`, so that it goes when this process does.

    A registration without a lease was made by hand and is left alone. One on another lease is
    from a previous run of this host (or a twin): it is taken over in place, without a gap.
    """
    await until_ok(functools.partial(_register, etcd, key, value, lease), Backoff(),
                   errors=EtcdError,
                   failed=denials.failed("the registration " + key, lambda e: log.warning(
                       "registering %s: %s; retrying", key, e)))


async def _register(etcd: Etcd, key: str, value: bytes, lease: int) -> None:
    while True:
        result = await etcd.txn([created_at(key, 0)], [put(key, value, lease)], [get(key)])
        holder = result.kvs.get(key)
        if result.succeeded or (holder is not None and holder.lease == lease):
            log.info("registered %s", key)
            return
        if holder is None:
            continue
        if holder.lease == 0:
            log.warning("%s exists without a lease, so it was made by hand: leaving it alone",
                        key)
            return
        taken = await etcd.txn([mod_is(key, holder.mod_revision)], [put(key, value, lease)])
        if taken.succeeded:
            log.info("registered %s, taking it over from lease %x", key, holder.lease)
            return

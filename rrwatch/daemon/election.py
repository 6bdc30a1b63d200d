"""Leadership and registrations held by an etcd lease, and the fence every leader write carries.

A session is one lease, kept alive at a third of its TTL. The leader key is created under it
only when absent; the revision that created it is the fence. Every write the leader makes
compares the leader key's create revision with the fence in the same transaction, so once the
lease has expired and someone else holds the key, a paused or partitioned former leader's
writes fail atomically in etcd, whatever that process believes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import trio

from rrwatch.config.options import MAX_LEASE_TTL
from rrwatch.etcd import (
    Compare,
    Etcd,
    EtcdError,
    created_at,
    delete,
    denials,
    get,
    mod_is,
    put,
)
from rrwatch.retry import Backoff, until_ok

log = logging.getLogger("rrwatch.election")


class SessionLost(Exception):
    """The lease expired, or could not be renewed before it would have."""


class LostLeadership(Exception):
    """Someone else holds the leader key now; the message says how we found out."""


@attrs.frozen
class Fence:
    key: str
    revision: int  # the leader key's create revision when we won it

    @property
    def compare(self) -> Compare:
        return created_at(self.key, self.revision)

    def holds(self, kvs: dict) -> bool:
        """Whether a read of the leader key (as in a transaction's failure branch) is ours."""
        holder = kvs.get(self.key)
        return holder is not None and holder.create_revision == self.revision


@contextlib.asynccontextmanager
async def session(etcd: Etcd, ttl: int) -> AsyncIterator[int]:
    """A lease kept alive for the body; revoked when the body ends, so that what it held goes at
    once. If the lease is lost meanwhile, the body is cancelled and SessionLost raised."""
    granted = trio.current_time()  # before asking: etcd's clock for the lease starts later
    lease = await etcd.grant(ttl)
    lost: list[str] = []
    try:
        async with trio.open_nursery() as nursery:

            async def keep() -> None:
                lost.append(await keep_alive(functools.partial(etcd.keep_alive, lease),
                                             granted + ttl))
                nursery.cancel_scope.cancel()

            nursery.start_soon(keep)
            yield lease
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(etcd.timeout):
            try:
                await etcd.revoke(lease)
            except EtcdError as e:
                log.warning("could not revoke lease %x: %s", lease, e)
    if lost:
        raise SessionLost(lost[0])


async def keep_alive(renew: Callable[[], Awaitable[int]], expires: float) -> str:
    """Renew a lease that `expires` then, for ever; return why it was lost. `renew()` renews it
    and returns the TTL it has now, 0 once it has expired or been revoked.

    The TTL is the time to `expires` when this starts. A renewal is sent every third of it, or
    at expiry if that comes sooner. The lease counts as lost when `renew` says so, or once a full
    TTL has passed since the last renewal that succeeded was sent: a renewal still hanging then
    is cut off, and one that fails then is not tried again."""
    ttl = expires - trio.current_time()
    if ttl <= 0:  # the grant's reply came after the TTL: by our clock it may be gone already
        return f"the lease was granted {-ttl:.1f} s after its TTL had run out"
    while True:
        await trio.sleep(min(ttl / 3, max(0.0, expires - trio.current_time())))
        sent = trio.current_time()
        with trio.move_on_at(expires):
            try:
                remaining = await renew()
            except EtcdError as e:
                log.warning("lease keepalive failed: %s", e)
                if trio.current_time() < expires:
                    continue
            else:
                if remaining <= 0:
                    return "the lease expired"
                expires = sent + remaining
                continue
        return f"the lease was not renewed for {ttl:.0f} s"


async def claim(etcd: Etcd, key: str, value: bytes, lease: int,
                waiting: Callable[[bytes], None] = lambda holder: None,
                usurper: Callable[[bytes, str], None] = lambda holder, why: None) -> int:
    """Create `key` on `lease` as soon as it does not exist; its create revision.

    While someone else holds it, `waiting` is told their value and we watch for the key to go.
    A key holding our own `value` on another lease is ours from a session that was given up
    (etcd could not be reached to revoke it): it is revoked now rather than waited out.
    A key held without a lease, or on one that no instance would grant, would keep every
    instance standing by for ever: `usurper` is told who and why, and the key is taken away.
    etcd errors are retried: a blip must not end the session.
    """
    backoff = Backoff()

    async def attempt() -> int:
        while True:
            result = await etcd.txn([created_at(key, 0)], [put(key, value, lease)], [get(key)])
            if result.succeeded:
                return result.revision
            holder = result.kvs.get(key)
            if holder is None:
                continue  # gone in between
            if holder.lease == lease:
                return holder.create_revision
            if holder.value == value:
                await etcd.revoke(holder.lease)
                continue
            if why := await _not_a_leader(etcd, holder.lease):
                usurper(holder.value, why)
                # Deleted, not overwritten: the next claim creates the key afresh, so that its
                # create revision, our fence, is ours alone.
                await etcd.txn([mod_is(key, holder.mod_revision)], [delete(key)])
                continue
            waiting(holder.value)
            await until_changed(etcd, key, holder.mod_revision, recheck=etcd.timeout * 2)
            backoff.reset()

    return await until_ok(attempt, backoff, errors=EtcdError, failed=denials.failed(
        "the leader key " + key, lambda e: log.warning("campaign for %s: %s; retrying", key, e)))


async def _not_a_leader(etcd: Etcd, lease: int) -> str | None:
    """Why a leader key on `lease` is not held the way rrwatch holds it, or None."""
    if lease == 0:
        return "without a lease"
    granted = await etcd.lease_granted_ttl(lease)
    if granted > MAX_LEASE_TTL:
        return f"on a lease granted for {granted} s, more than any instance asks for"
    return None


async def until_changed(etcd: Etcd, key: str, revision: int, *, recheck: float) -> None:
    """Return once `key` has changed since its mod revision `revision` (0: it did not exist).

    Watched, and re-read every `recheck` seconds in case the stream fails or stays silent;
    etcd errors are retried, so only a change of the key ends the wait.
    """
    watch_from = revision + 1
    while True:
        with trio.move_on_after(recheck):
            try:
                async with etcd.watch(key, watch_from, prefix=False) as stream:
                    async for message in stream:
                        if isinstance(message, EtcdError):
                            raise message
                        if message.events:
                            return
            except EtcdError as e:
                log.debug("watch on %s: %s; reading it again shortly", key, e)
                await trio.sleep_forever()  # until the recheck
        try:
            now, kvs, _ = await etcd.range(key.encode(), key.encode() + b"\0")
        except EtcdError as e:
            log.debug("reading %s: %s; trying again", key, e)
            continue
        if (kvs[0].mod_revision if kvs else 0) != revision:
            return
        watch_from = now + 1  # the old revision may be compacted by now

"""The only module that talks to etcd: requests on etcd3gw's client for unary calls, our own
reader for watches.

Blocking HTTP runs in worker threads. Unary calls share a small limiter; each watch stream has a
thread of its own outside it, so a long-lived stream never starves a put (etcd-notes.md).
etcd3gw's watch is not used: it hangs forever on a dead stream.

Every reply is untrusted input. It is read with a byte cap and, for unary calls, within one total
deadline; whatever is wrong with it (size, time, JSON, shape, types) becomes an EtcdError here,
and only decoded values leave this module.
"""

from __future__ import annotations

import logging
import random

import attrs
import trio

log = logging.getLogger("rrwatch.etcd")


@attrs.define
class Backoff:
    """Capped exponential backoff with full jitter, reset after a success."""

    first: float = 0.1
    cap: float = 5.0
    _attempt: int = 0

    async def sleep(self) -> None:
        delay = min(self.cap, self.first * 2**self._attempt)
        self._attempt += 1
        await trio.sleep(random.uniform(delay / 2, delay))

    def reset(self) -> None:
        self._attempt = 0

"""When the reconciler may write: a settle time after new sessions, a rate of demotions, and
a debounce that makes one plan of a burst of changes."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio

from rrwatch.core.model import ClusterState
from rrwatch.core.plan import PACED, Op, SetNode


class Settle:
    """The gate of the break phase: old sessions are broken only `seconds` after new ones
    were last made (`restart`), so that the new ones are up first. It starts closed, for what
    happened before it was made is unknown."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until = trio.current_time() + seconds

    def restart(self) -> None:
        """New sessions were made just now."""
        self.until = trio.current_time() + self.seconds

    def over(self) -> bool:
        """Whether old sessions may be broken now."""
        return trio.current_time() >= self.until


async def pause(changed: Callable[[], Awaitable[None]], debounce: float, *,
                until: float = math.inf) -> None:
    """Return `debounce` seconds after `changed()` returns, so that a burst of changes makes one
    plan, or at `until` if that comes first."""
    with trio.move_on_at(until):
        await changed()
        await trio.sleep(debounce)


def demotion(op: Op, state: ClusterState) -> bool:
    """A demotion or re-ID of an RR with sessions: one that has a cluster ID (clearing a stale
    label breaks nothing)."""
    return (isinstance(op, SetNode) and op.why in PACED and op.name in state.nodes
            and state.nodes[op.name].cluster_id is not None)


def paced(ops: tuple[Op, ...], demoting: Settle, state: ClusterState) -> tuple[Op, ...]:
    """The break step without its demotions while the last one's settle window is open."""
    return ops if demoting.over() else tuple(op for op in ops if not demotion(op, state))

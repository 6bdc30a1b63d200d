"""The daemon's timing, apart from what it times: capped, jittered backoff; trying until an
attempt succeeds, or for ever; and doing something at an interval.

Attempts and ticks are plain async callables, so that every loop built on these can be run on
trio's MockClock with plain Python functions in place of etcd (tests/test_retry.py).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import attrs
import trio

from rrwatch.errors import leaves

T = TypeVar("T")

Errors = type[Exception] | tuple[type[Exception], ...]


@attrs.define
class Backoff:
    """Capped exponential backoff with jitter, reset after a success: the n-th sleep since the
    last reset lasts between half and all of min(cap, first * 2**n)."""

    first: float = 0.1
    cap: float = 5.0
    uniform: Callable[[float, float], float] = random.uniform  # the jitter: a, b -> [a, b]
    _attempt: int = 0

    def delay(self) -> float:
        """The next sleep, counted as taken."""
        delay = min(self.cap, self.first * 2**self._attempt)
        self._attempt += 1
        return self.uniform(delay / 2, delay)

    async def sleep(self) -> None:
        await trio.sleep(self.delay())

    def reset(self) -> None:
        self._attempt = 0


def _nothing(error: Exception) -> None:
    pass


async def until_ok(attempt: Callable[[], Awaitable[T]], backoff: Backoff, *,
                   errors: Errors = (), failed: Callable[[Exception], None] = _nothing) -> T:
    """What `attempt` returns, calling it again after a backoff sleep while it raises one of
    `errors` (each told to `failed`, also when nurseries grouped them); the backoff is reset once
    it succeeds. Any other exception ends the wait."""
    while True:
        try:
            result = await attempt()
        except* errors as group:
            for e in leaves(group):
                assert isinstance(e, Exception)
                failed(e)
        else:
            backoff.reset()
            return result
        await backoff.sleep()


async def forever(attempt: Callable[[], Awaitable[object]], backoff: Backoff, *,
                  errors: Errors = (), failed: Callable[[Exception], None] = _nothing) -> NoReturn:
    """Call `attempt` again and again, with a backoff sleep after each call, whether it returned
    or raised one of `errors` (each told to `failed`). The attempt resets the backoff when it
    has made progress; any other exception ends the loop."""
    while True:
        try:
            await attempt()
        except* errors as group:
            for e in leaves(group):
                assert isinstance(e, Exception)
                failed(e)
        await backoff.sleep()


async def every(interval: float, tick: Callable[[], Awaitable[T | None]]) -> T:
    """Call `tick` `interval` seconds from now, and again `interval` after each call has
    returned, until it returns something other than None: that."""
    while True:
        await trio.sleep(interval)
        if (result := await tick()) is not None:
            return result

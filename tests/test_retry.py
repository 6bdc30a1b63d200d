"""rrwatch.retry on trio's MockClock (autojump): the times at which attempts and ticks happen,
in virtual time, with plain callables and no etcd."""

from __future__ import annotations

import random

import pytest
import trio

from rrwatch.retry import Backoff, every, forever, until_ok


class Boom(Exception):
    pass


def lowest(a: float, b: float) -> float:
    return a


def highest(a: float, b: float) -> float:
    return b


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 9) for a, b in zip(times, times[1:], strict=False)]


class Attempts:
    """An attempt that fails `failures` times (raising `error`), then returns `result`; the
    virtual time of each call."""

    def __init__(self, failures: int, error: Exception | None = None, result: object = "ok"):
        self.failures = failures
        self.error = error or Boom("down")
        self.result = result
        self.times: list[float] = []

    async def __call__(self) -> object:
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if len(self.times) <= self.failures:
            raise self.error
        return self.result


def test_backoff_doubles_up_to_the_cap():
    backoff = Backoff(first=0.1, cap=5.0, uniform=highest)
    delays = [backoff.delay() for _ in range(9)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])


def test_backoff_jitter_stays_between_half_and_all_of_the_delay():
    backoff = Backoff(first=0.1, cap=5.0, uniform=random.Random(15).uniform)
    ceilings = [min(5.0, 0.1 * 2**n) for n in range(40)]
    delays = [backoff.delay() for _ in ceilings]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered: no two alike


def test_backoff_jitter_defaults_to_the_random_module():
    random.seed(7)
    first = [Backoff().delay() for _ in range(5)]
    random.seed(7)
    assert [Backoff().delay() for _ in range(5)] == first
    assert all(0.05 <= d <= 0.1 for d in first)


def test_backoff_starts_again_after_a_reset():
    backoff = Backoff(first=1.0, cap=60.0, uniform=highest)
    assert [backoff.delay() for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
    backoff.reset()
    assert [backoff.delay() for _ in range(2)] == [1.0, 2.0]


async def test_backoff_sleeps_its_delay(autojump_clock):
    backoff = Backoff(first=1.0, cap=3.0, uniform=lowest)
    times = []
    for _ in range(4):
        await backoff.sleep()
        times.append(trio.current_time())
    assert times == [0.5, 1.5, 3.0, 4.5]


async def test_until_ok_retries_on_the_backoff_schedule(autojump_clock):
    attempt = Attempts(failures=4)
    failed: list[Exception] = []
    result = await until_ok(attempt, Backoff(first=1.0, cap=5.0, uniform=highest),
                            errors=Boom, failed=failed.append)
    assert result == "ok"
    assert attempt.times == [0.0, 1.0, 3.0, 7.0, 12.0]  # sleeps of 1, 2, 4 and the cap, 5
    assert [str(e) for e in failed] == ["down"] * 4


async def test_until_ok_does_not_sleep_when_the_first_attempt_works(autojump_clock):
    attempt = Attempts(failures=0, result=42)
    assert await until_ok(attempt, Backoff(), errors=Boom) == 42
    assert trio.current_time() == 0.0


async def test_until_ok_resets_the_backoff_after_a_success(autojump_clock):
    backoff = Backoff(first=1.0, cap=60.0, uniform=highest)
    await until_ok(Attempts(failures=3), backoff, errors=Boom)  # sleeps 1, 2, 4
    assert trio.current_time() == 7.0
    again = Attempts(failures=2)
    await until_ok(again, backoff, errors=Boom)
    assert again.times == [7.0, 8.0, 10.0]  # from the first delay again, not 8 and 16


async def test_until_ok_jitter_keeps_each_wait_within_bounds(autojump_clock):
    attempt = Attempts(failures=30)
    await until_ok(attempt, Backoff(first=0.1, cap=5.0, uniform=random.Random(3).uniform),
                   errors=Boom)
    for n, gap in enumerate(gaps(attempt.times)):
        ceiling = min(5.0, 0.1 * 2**n)
        assert ceiling / 2 <= gap <= ceiling


async def test_until_ok_lets_other_errors_through_at_once(autojump_clock):
    attempt = Attempts(failures=5, error=ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await until_ok(attempt, Backoff(), errors=Boom)
    assert attempt.times == [0.0]


async def test_until_ok_unwraps_errors_that_a_nursery_grouped(autojump_clock):
    calls = []

    async def attempt() -> str:
        calls.append(trio.current_time())
        if len(calls) == 1:
            async with trio.open_nursery() as nursery:
                for n in range(2):
                    nursery.start_soon(_raise, Boom(f"task {n}"))
        return "ok"

    failed: list[Exception] = []
    assert await until_ok(attempt, Backoff(first=2.0, uniform=highest), errors=Boom,
                          failed=failed.append) == "ok"
    assert sorted(str(e) for e in failed) == ["task 0", "task 1"]
    assert calls == [0.0, 2.0]


async def _raise(error: Exception) -> None:
    raise error


async def test_forever_sleeps_after_every_call_and_the_attempt_resets_it(autojump_clock):
    backoff = Backoff(first=1.0, cap=4.0, uniform=highest)
    times: list[float] = []
    failed: list[Exception] = []

    async def attempt() -> None:
        times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if len(times) in (1, 2, 3):
            raise Boom("down")
        if len(times) == 4:
            await trio.sleep(10)  # a session that held for a while, then ended
            backoff.reset()
        if len(times) == 7:
            raise trio.TooSlowError  # not one of `errors`: the loop ends

    with pytest.raises(trio.TooSlowError):
        await forever(attempt, backoff, errors=Boom, failed=failed.append)
    # Failures back off 1, 2, 4; after the reset, 1 again; a normal return backs off too.
    assert times == [0.0, 1.0, 3.0, 7.0, 18.0, 20.0, 24.0]
    assert len(failed) == 3


async def test_every_ticks_at_the_interval_until_a_tick_returns_something(autojump_clock):
    times: list[float] = []

    async def tick() -> str | None:
        times.append(trio.current_time())
        return "done" if len(times) == 4 else None

    assert await every(5.0, tick) == "done"
    assert times == [5.0, 10.0, 15.0, 20.0]


async def test_every_counts_the_interval_from_the_end_of_a_tick(autojump_clock):
    times: list[float] = []

    async def slow_tick() -> None:
        times.append(trio.current_time())
        await trio.sleep(2.0)

    with trio.move_on_after(30):
        await every(5.0, slow_tick)
    assert times == [5.0, 12.0, 19.0, 26.0]

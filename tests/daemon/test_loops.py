"""The daemon's periodic loops on trio's MockClock (autojump): the probe, anti-entropy and its
grace, the lease keepalive, the reconciler's settle gate and debounce. Each is a small piece
that takes plain callables; no etcd, and every time asserted is virtual."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

import pytest
import trio

from rrwatch.core.model import ClusterState, Node, RRLabel
from rrwatch.core.plan import SetNode
from rrwatch.daemon.election import keep_alive
from rrwatch.daemon.pacing import Settle, paced, pause
from rrwatch.daemon.watcher import DRIFT_GRACE, Probe, WatchStats, anti_entropy, confirmed
from rrwatch.etcd import EtcdError

# --- the probe ------------------------------------------------------------------------------


class Endpoints:
    """What the probe sees of the client: the endpoint in use, which members are frozen, and
    where the streams are."""

    def __init__(self, *endpoints: str) -> None:
        self.endpoints = list(endpoints)
        self.current = endpoints[0]
        self.streams = [self.current] * 3
        self.frozen: set[str] = set()
        self.reads: list[tuple[float, str]] = []
        self.failed_over: list[tuple[float, str]] = []
        self.reopened: list[float] = []

    async def read(self) -> int:
        self.reads.append((trio.current_time(), self.current))
        await trio.lowlevel.checkpoint()
        if self.current in self.frozen:
            raise EtcdError(f"{self.current}: timed out")
        return 1

    def fail_over(self, endpoint: str) -> None:
        self.failed_over.append((trio.current_time(), endpoint))
        if endpoint == self.current:
            self.current = self.endpoints[(self.endpoints.index(endpoint) + 1)
                                          % len(self.endpoints)]

    def reopen(self) -> None:
        self.reopened.append(trio.current_time())
        self.streams = [self.current] * len(self.streams)

    def probe(self, interval: float, stats: WatchStats) -> Probe:
        return Probe(interval, endpoint=lambda: self.current, read=self.read,
                     fail_over=self.fail_over, streams_on=lambda: self.streams,
                     reopen=self.reopen, stats=stats)


async def test_the_probe_reads_through_the_current_endpoint_at_its_interval(autojump_clock):
    client = Endpoints("a", "b")
    stats = WatchStats()
    with trio.move_on_after(21):
        await client.probe(5.0, stats).run()
    assert client.reads == [(5.0, "a"), (10.0, "a"), (15.0, "a"), (20.0, "a")]
    assert stats.probe_failures == 0
    assert client.reopened == [] and client.failed_over == []


async def test_a_failed_probe_is_counted_and_moves_every_stream_elsewhere(autojump_clock,
                                                                           caplog):
    client = Endpoints("a", "b", "c")
    stats = WatchStats()

    async def freeze() -> None:
        await trio.sleep(7)
        client.frozen = {"a", "b"}  # two members freeze between probes

    async with trio.open_nursery() as nursery:
        nursery.start_soon(freeze)
        with trio.move_on_after(21):
            await client.probe(5.0, stats).run()
    # a at 10 fails: over to b, which fails at 15: over to c, where reads work again.
    assert client.reads == [(5.0, "a"), (10.0, "a"), (15.0, "b"), (20.0, "c")]
    assert stats.probe_failures == 2
    assert client.failed_over == [(10.0, "a"), (15.0, "b")]
    assert client.reopened == [10.0, 15.0]
    assert client.streams == ["c"] * 3
    assert [r.getMessage() for r in caplog.records if r.name == "rrwatch.watch"] == [
        "probe of a failed: a: timed out; reopening the watches",
        "probe of b failed: b: timed out; reopening the watches",
    ]


async def test_a_good_probe_moves_streams_left_on_an_endpoint_unary_calls_have_left(
        autojump_clock, caplog):
    client = Endpoints("a", "b")
    stats = WatchStats()

    async def unary_call_fails_over() -> None:
        await trio.sleep(12)
        client.current = "b"  # a put failed on a and moved on; the streams are still on a

    async with trio.open_nursery() as nursery:
        nursery.start_soon(unary_call_fails_over)
        with trio.move_on_after(26):
            await client.probe(5.0, stats).run()
    assert client.reopened == [15.0]  # once: afterwards they are on b
    assert stats.probe_failures == 0 and client.failed_over == []
    assert [r.getMessage() for r in caplog.records if r.name == "rrwatch.watch"] == [
        "moving the watches to b"]


# --- anti-entropy -----------------------------------------------------------------------------


class Checks:
    def __init__(self, *results: list[str] | Exception) -> None:
        self.results = list(results)
        self.times: list[float] = []

    async def __call__(self) -> list[str]:
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        result = self.results.pop(0) if self.results else []
        if isinstance(result, Exception):
            raise result
        return result


async def test_anti_entropy_checks_at_its_interval_until_it_finds_drift(autojump_clock):
    check = Checks([], [], [], ["/calico/a", "/calico/b"])
    drifted = await anti_entropy(300.0, check, ready=lambda: True)
    assert drifted == ["/calico/a", "/calico/b"]
    assert check.times == [300.0, 600.0, 900.0, 1200.0]
    assert trio.current_time() == 1200.0


async def test_anti_entropy_skips_a_check_while_a_stream_is_reopening(autojump_clock):
    check = Checks()
    with trio.move_on_after(1000):
        await anti_entropy(300.0, check,
                           ready=lambda: not 500 < trio.current_time() < 700)
    assert check.times == [300.0, 900.0]


async def test_a_failed_anti_entropy_check_is_logged_and_made_again_an_interval_later(
        autojump_clock, caplog):
    check = Checks(EtcdError("no leader"), [], ["/calico/x"])
    assert await anti_entropy(300.0, check, ready=lambda: True) == ["/calico/x"]
    assert check.times == [300.0, 600.0, 900.0]
    assert [r.getMessage() for r in caplog.records if r.name == "rrwatch.watch"] == [
        "anti-entropy check failed: no leader"]


async def test_drift_is_confirmed_only_after_the_grace(autojump_clock):
    calls: list[float] = []

    def compare() -> list[str]:
        calls.append(trio.current_time())
        return ["/calico/k"]

    assert await confirmed(compare) == ["/calico/k"]
    assert calls == [0.0, DRIFT_GRACE]


async def test_drift_that_an_event_explains_within_the_grace_is_none(autojump_clock):
    model: dict[str, int] = {}

    async def event_arrives() -> None:
        await trio.sleep(2)
        model["/calico/k"] = 7

    def compare() -> list[str]:
        return [] if model.get("/calico/k") == 7 else ["/calico/k"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(event_arrives)
        assert await confirmed(compare) == []
    assert trio.current_time() == DRIFT_GRACE


async def test_no_drift_takes_no_grace(autojump_clock):
    assert await confirmed(lambda: []) == []
    assert trio.current_time() == 0.0


async def test_the_interval_runs_from_the_end_of_a_check_that_took_the_grace(autojump_clock):
    times: list[float] = []

    async def check() -> list[str]:
        times.append(trio.current_time())
        check_no = len(times)
        compared: list[float] = []

        def compare() -> list[str]:
            compared.append(trio.current_time())
            if check_no == 2:  # a difference that an event explains within the grace
                return ["/calico/k"] if len(compared) == 1 else []
            return ["/calico/k"] if check_no == 3 else []

        return await confirmed(compare)

    assert await anti_entropy(300.0, check, ready=lambda: True) == ["/calico/k"]
    assert times == [300.0, 600.0, 600.0 + DRIFT_GRACE + 300.0]
    assert trio.current_time() == 905.0 + DRIFT_GRACE


# --- the lease keepalive ----------------------------------------------------------------------


class Lease:
    """renew() as etcd answers it: the TTL, unless told otherwise for the n-th call."""

    def __init__(self, ttl: int, answers: dict[int, object] | None = None,
                 checkpoint: bool = True) -> None:
        self.ttl = ttl
        self.answers = answers or {}
        self.checkpoint = checkpoint
        self.times: list[float] = []

    async def renew(self) -> int:
        self.times.append(trio.current_time())
        assert len(self.times) < 100, "renewing in a loop"
        answer = self.answers.get(len(self.times), self.ttl)
        if self.checkpoint:
            await trio.lowlevel.checkpoint()
        if answer == "hang":
            await trio.sleep_forever()
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, int)
        return answer


async def test_the_lease_is_renewed_at_a_third_of_its_ttl(autojump_clock):
    lease = Lease(30)
    with trio.move_on_after(95):
        await keep_alive(lease.renew, trio.current_time() + 30)
    assert lease.times == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]


async def test_the_ttl_counts_from_before_the_grant(autojump_clock):
    granted = trio.current_time()
    await trio.sleep(3)  # the grant's round trip
    lease = Lease(30)
    with trio.move_on_after(20):
        await keep_alive(lease.renew, granted + 30)
    assert lease.times == pytest.approx([3 + 9, 3 + 18])  # a third of the 27 s left


async def test_a_grant_answered_after_the_ttl_is_a_lost_lease(autojump_clock):
    """A slow etcd answered the grant 4 s into a 3 s TTL: the lease is lost, not a crash on a
    negative sleep, and nothing is renewed."""
    granted = trio.current_time()
    await trio.sleep(4)
    lease = Lease(3)
    assert await keep_alive(lease.renew, granted + 3) == (
        "the lease was granted 1.0 s after its TTL had run out")
    assert lease.times == []


async def test_a_lease_that_etcd_says_has_expired_is_lost_at_once(autojump_clock):
    lease = Lease(30, {3: 0})
    assert await keep_alive(lease.renew, 30.0) == "the lease expired"
    assert lease.times == [10.0, 20.0, 30.0]
    assert trio.current_time() == 30.0


async def test_failed_renewals_are_retried_until_the_lease_would_have_expired(autojump_clock,
                                                                               caplog):
    down = EtcdError("connection refused")
    lease = Lease(30, {2: down, 3: down, 4: down})
    assert await keep_alive(lease.renew, 30.0) == "the lease was not renewed for 30 s"
    # renewed at 10 (until 40); 20 and 30 fail; 40 is the expiry: cut off there.
    assert lease.times == [10.0, 20.0, 30.0, 40.0]
    assert trio.current_time() == 40.0
    assert [r.getMessage() for r in caplog.records if r.name == "rrwatch.election"] == [
        "lease keepalive failed: connection refused"] * 2


async def test_a_renewal_that_fails_at_once_at_expiry_ends_the_lease(autojump_clock):
    down = EtcdError("connection refused")
    lease = Lease(30, dict.fromkeys(range(1, 10), down), checkpoint=False)
    with trio.fail_after(60):  # (virtual) it must not spin at the expiry
        assert await keep_alive(lease.renew, 30.0) == "the lease was not renewed for 30 s"
    assert lease.times == [10.0, 20.0, 30.0]
    assert trio.current_time() == 30.0


async def test_a_failed_renewal_followed_by_a_good_one_keeps_the_lease(autojump_clock):
    lease = Lease(30, {1: EtcdError("blip")})
    with trio.move_on_after(55):
        await keep_alive(lease.renew, 30.0)
    assert lease.times == [10.0, 20.0, 30.0, 40.0, 50.0]


async def test_a_renewal_that_hangs_is_cut_off_when_the_lease_expires(autojump_clock):
    lease = Lease(30, {2: "hang"})
    assert await keep_alive(lease.renew, 30.0) == "the lease was not renewed for 30 s"
    assert lease.times == [10.0, 20.0]
    assert trio.current_time() == 40.0  # a full TTL after the last renewal that worked


# --- the reconciler's settle and debounce -----------------------------------------------------


async def test_settle_keeps_breaks_back_for_the_settle_time_from_the_start(autojump_clock):
    await trio.sleep(1)
    settle = Settle(10.0)
    assert settle.until == 11.0
    await trio.sleep_until(10.999)
    assert not settle.over()
    await trio.sleep_until(11.0)
    assert settle.over()


async def test_new_sessions_delay_breaks_by_exactly_the_settle_time(autojump_clock):
    settle = Settle(10.0)
    await trio.sleep(4)
    settle.restart()  # sessions made at 4
    await trio.sleep(6)
    assert not settle.over()  # 10: the first settle time is over, not this one
    await trio.sleep_until(settle.until)
    assert trio.current_time() == 14.0 and settle.over()
    settle.restart()  # more made at 14
    assert not settle.over() and settle.until == 24.0


async def test_with_nothing_changing_the_reconciler_wakes_when_settle_is_over(autojump_clock):
    settle = Settle(10.0)
    await pause(trio.sleep_forever, 0.1, until=settle.until)
    assert trio.current_time() == 10.0 and settle.over()


async def test_a_burst_of_changes_makes_one_plan_a_debounce_after_the_first(autojump_clock):
    changed = trio.Event()

    async def burst() -> None:
        for at in (3.0, 3.02, 3.05, 3.09):
            await trio.sleep_until(at)
            changed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(burst)
        await pause(changed.wait, 0.1)
        assert trio.current_time() == pytest.approx(3.1)
    assert trio.current_time() == pytest.approx(3.1)  # the whole burst fell in the pause


async def test_the_settle_deadline_cuts_a_debounce_short(autojump_clock):
    settle = Settle(10.0)
    changed = trio.Event()

    async def change() -> None:
        await trio.sleep(9.95)
        changed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(change)
        await pause(changed.wait, 0.1, until=settle.until)
    assert trio.current_time() == 10.0


@pytest.fixture(autouse=True)
def _logs(caplog):
    caplog.set_level(logging.INFO)


# -- demotions: a rate, not a burst -----------------------------------------------------------

async def test_a_demotion_keeps_the_next_back_for_a_settle_window(autojump_clock):
    """After a demotion the break step goes on without demotions until its window is over:
    at most the step's demotions per settle time. Other breaks are not held back."""
    state = ClusterState("zone", RRLabel("rr", ""))
    for i, cluster in ((1, "224.0.0.1"), (2, "224.0.0.1"), (3, None)):
        state.put_node(Node(f"rr{i}", 1, {"rr": ""}, IPv4Address(f"10.0.0.{i}"),
                            cluster_id=cluster))
    demote = [SetNode(f"rr{i}", 1, None, why="demote") for i in (1, 2)]
    stale = SetNode("rr3", 1, None, why="demote")  # a label without a cluster ID: no sessions
    client = SetNode("client", 1, None, frozenset())
    demoting = Settle(10)
    assert paced((client, demote[0], stale), demoting, state) == (client, stale)
    await trio.sleep(10)
    assert paced((client, demote[0]), demoting, state) == (client, demote[0])
    demoting.restart()  # rr1 went
    await trio.sleep(9.9)
    assert paced((demote[1],), demoting, state) == ()
    await trio.sleep(0.1)
    assert paced((demote[1],), demoting, state) == (demote[1],)

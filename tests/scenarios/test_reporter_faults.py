"""The real `rrwatch report` under the etcd faults that tests/scenarios/test_faults.py puts the
daemon through: etcd killed again and again, down for longer than the lease, frozen, compacted
while the reporter was frozen, and the member in use stopped.

BIRD is a control socket that answers with the reply captured from calico-node's BIRD
(tests/support.FakeBird; tests/bgp/test_report.py holds the reporter against real BIRD). After
each fault a session changes state, and the change must reach etcd: the reporter never exits,
its report comes back, and a lease lost during an outage is replaced by a new one with the
report written on it.
"""

from __future__ import annotations

import random
import signal

import trio

from rrwatch.core.reports import Report, parse_report
from rrwatch.etcd import Etcd, EtcdError, delete, put
from tests.support import FakeBird

NODE = "rr-1"
KEY = "/rrwatch/v1/sessions/" + NODE
TTL = 3  # lease seconds: short, so that a lease is lost within a test
FAST = {"RRWATCH_LEASE_TTL": str(TTL), "RRWATCH_ETCD_TIMEOUT": "1",
        "RRWATCH_WATCH_TIMEOUT": "5"}
SCENARIO = 120  # seconds any one scenario may take
CLIENT, OTHER = "10.0.0.2", "fd00::2"
STATES = ("Active", "Established")


def start_reporter(start_daemon, bird: FakeBird, env: dict[str, str] | None = None):
    return start_daemon({**FAST, **(env or {})}, "--node", NODE, "--socket", bird.path,
                        "--report-interval", "0.2", command="report")


async def stored(etcd: Etcd) -> tuple[Report, int] | None:
    """The report in etcd and the lease it is on; None while there is none or etcd is down."""
    try:
        kv = await etcd.get(KEY)
    except EtcdError:
        return None
    return None if kv is None else (parse_report(KEY, kv.value), kv.lease)


async def shows(etcd: Etcd, reporter, state: str, address: str = CLIENT,
                other_than: int | None = None) -> int:
    """Wait until the report in etcd has the session with `address` in `state` (on a lease
    other than `other_than`, if given), the reporter alive all along; the lease."""
    with trio.fail_after(SCENARIO):
        while True:
            assert reporter.proc.poll() is None, reporter.log()
            found = await stored(etcd)
            if found is not None:
                report, lease = found
                session = report.sessions.get(address)
                if session is not None and session.state == state and lease != other_than:
                    return lease
            await trio.sleep(0.1)


async def restored(etcd: Etcd, value: bytes, lease: int) -> None:
    """Wait until the key holds `value` on `lease` again."""
    with trio.fail_after(SCENARIO):
        while (kv := await etcd.get(KEY)) is None or (kv.value, kv.lease) != (value, lease):
            await trio.sleep(0.1)


async def gone(etcd: Etcd) -> None:
    with trio.fail_after(SCENARIO):
        while (await etcd.get(KEY)) is not None:
            await trio.sleep(0.1)


async def lease_ends(etcd: Etcd, lease: int) -> None:
    """Wait until etcd no longer has `lease` (revoked, or expired)."""
    with trio.fail_after(SCENARIO):
        while True:
            try:
                if await etcd.lease_granted_ttl(lease) == 0:
                    return
            except EtcdError:
                pass
            await trio.sleep(0.2)


async def test_ten_etcd_crashes_each_followed_by_a_change(etcd, etcd_server, start_daemon):
    """SIGKILL and restart etcd 10 times, a session changing state during each outage: every
    change reaches etcd, and the reporter lives through every crash."""
    rng = random.Random(5)
    with FakeBird() as bird:
        bird.set("Established", [CLIENT, OTHER])
        reporter = start_reporter(start_daemon, bird)
        await shows(etcd, reporter, "Established")
        for i in range(10):
            await trio.sleep(rng.uniform(0.3, 1.0))
            await trio.to_thread.run_sync(etcd_server.kill)
            state = STATES[i % 2]
            bird.set(state, [CLIENT])
            await trio.sleep(rng.uniform(0, 0.5))
            await trio.to_thread.run_sync(etcd_server.restart)
            await shows(etcd, reporter, state)
        found = await stored(etcd)
        assert found is not None and found[0].sessions[OTHER].established
    assert reporter.proc.poll() is None, reporter.log()


async def test_a_lease_lost_in_an_outage_is_replaced(etcd, etcd_server, start_daemon):
    """etcd down for longer than the lease: the reporter gives the lease up, and once etcd is
    back writes its report, with the change made meanwhile, on a new lease; the old lease
    ending then takes nothing with it."""
    with FakeBird() as bird:
        bird.set("Established", [CLIENT])
        reporter = start_reporter(start_daemon, bird)
        old = await shows(etcd, reporter, "Established")
        await trio.to_thread.run_sync(etcd_server.kill)
        bird.set("Active", [CLIENT])
        with trio.fail_after(SCENARIO):
            await reporter.wait_for_log("starting a new lease")
        await trio.to_thread.run_sync(etcd_server.restart)
        new = await shows(etcd, reporter, "Active", other_than=old)
        # The reporter could not revoke the old lease while etcd was down; etcd keeps it a TTL
        # after its restart. Its end must not take the report.
        await lease_ends(etcd, old)
        assert await stored(etcd) is not None
        assert await shows(etcd, reporter, "Active") == new
        bird.set("Established", [CLIENT])
        assert await shows(etcd, reporter, "Established") == new


async def test_a_frozen_etcd_costs_the_lease_and_a_new_one_is_taken(etcd, etcd_server,
                                                                   start_daemon):
    """etcd stopped (SIGSTOP) until the reporter has given its lease up: after SIGCONT the
    report, with the change made meanwhile, is back on a new lease."""
    with FakeBird() as bird:
        bird.set("Established", [CLIENT])
        reporter = start_reporter(start_daemon, bird)
        old = await shows(etcd, reporter, "Established")
        etcd_server.pause()
        try:
            bird.set("Active", [CLIENT])
            with trio.fail_after(SCENARIO):
                await reporter.wait_for_log("starting a new lease")
        finally:
            etcd_server.resume()
        await shows(etcd, reporter, "Active", other_than=old)
        bird.set("Established", [CLIENT])
        await shows(etcd, reporter, "Established", other_than=old)


async def test_a_frozen_reporter_comes_back_after_etcd_restarted_and_compacted(
        etcd, etcd_server, start_daemon):
    """The reporter frozen (SIGSTOP) until its lease has expired and its report gone, while
    etcd restarts and compacts: after SIGCONT it takes a new lease and writes its report."""
    with FakeBird() as bird:
        bird.set("Established", [CLIENT])
        reporter = start_reporter(start_daemon, bird)
        old = await shows(etcd, reporter, "Established")
        reporter.signal(signal.SIGSTOP)
        try:
            await gone(etcd)  # the lease expired: the report went with it
            await trio.to_thread.run_sync(etcd_server.kill)
            await trio.to_thread.run_sync(etcd_server.restart)
            bird.set("Active", [CLIENT])
            await trio.to_thread.run_sync(etcd_server.compact, etcd_server.revision())
        finally:
            reporter.signal(signal.SIGCONT)
        await shows(etcd, reporter, "Active", other_than=old)
        bird.set("Established", [CLIENT])
        await shows(etcd, reporter, "Established", other_than=old)


async def test_a_report_deleted_or_overwritten_by_another_writer_is_written_again(
        etcd, etcd_server, start_daemon):
    """Another writer deletes the report, then overwrites it without a lease, BIRD's sessions
    unchanged all along (as test_faults's foreign writer meddles with what rrwatch owns): each
    time the reporter writes it again on its lease, also when etcd restarted in between."""
    with FakeBird() as bird:
        bird.set("Established", [CLIENT])
        reporter = start_reporter(start_daemon, bird)
        lease = await shows(etcd, reporter, "Established")
        kv = await etcd.get(KEY)
        assert kv is not None
        await etcd.txn([], [delete(KEY)])
        await restored(etcd, kv.value, lease)
        await etcd.txn([], [put(KEY, b'{"ok": false, "sessions": {}}')])
        await restored(etcd, kv.value, lease)
        await trio.to_thread.run_sync(etcd_server.kill)
        await trio.to_thread.run_sync(etcd_server.restart)
        await etcd.txn([], [delete(KEY)])
        await restored(etcd, kv.value, lease)
        assert reporter.proc.poll() is None, reporter.log()


async def test_losing_the_member_in_use_moves_to_another(etcd_cluster, tls, start_daemon):
    """Three members; the one the reporter talks to is stopped: it carries on through another,
    and the next change reaches etcd."""
    endpoints = [member.endpoint for member in etcd_cluster]
    client = Etcd(endpoints[1:], tls)
    try:
        with FakeBird() as bird:
            bird.set("Established", [CLIENT])
            reporter = start_reporter(start_daemon, bird,
                                      {"ETCD_ENDPOINTS": ",".join(endpoints)})
            await shows(client, reporter, "Established")
            await trio.to_thread.run_sync(etcd_cluster[0].stop)
            bird.set("Active", [CLIENT])
            await shows(client, reporter, "Active")
            bird.set("Established", [CLIENT])
            await shows(client, reporter, "Established")
    finally:
        await client.close()

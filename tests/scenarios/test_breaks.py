"""The real daemon holds breaks until the sessions replacing them are reported Established.

RRs move to dedicated machines (a policy object excludes the others) whose sessions the RRs'
reports show down, as behind a firewall that drops BGP: the new RRs are promoted, the old ones
stay, the hold is logged and counted. Once the reports show the new sessions Established for
the dwell, the move completes. The reports are written here as `rrwatch report` writes them;
tests/bgp/test_report.py holds `rrwatch report` itself against real BIRD. The last test runs a
real `rrwatch report` (against a fake BIRD socket) for one new RR, and kills it."""

from __future__ import annotations

import datetime
import json
import signal
import time
from collections.abc import Collection

import pytest
import trio

from rrwatch.core import calico
from rrwatch.core.reports import Report, Session, dumps
from rrwatch.testing import simulate
from tests.support import FakeBird, read_cluster, rr_names, wait_until

POLICY = "/rrwatch/v1/policy"
SESSIONS = "/rrwatch/v1/sessions/"


def addresses(data: dict[str, bytes]) -> dict[str, str]:
    return {json.loads(v)["metadata"]["name"]: json.loads(v)["spec"]["bgp"]["ipv4Address"]
            .split("/")[0] for k, v in data.items() if k.startswith(calico.NODES)}


def report(rr: str, nodes: dict[str, str], state: str, since: datetime.datetime,
           behind: Collection[str] = (), opened: datetime.datetime | None = None) -> bytes:
    """`rr`'s sessions with every other node in `state`; those with the machines `behind` the
    firewall Active while it is closed, Established since `opened` once it opens."""
    def session(name: str) -> Session:
        if name in behind or rr in behind:
            if opened is None:
                return Session("Active", since, error="Socket: Connection timed out")
            return Session("Established", opened)
        return Session(state, since)
    return dumps(Report(True, {address: session(name)
                               for name, address in nodes.items() if name != rr}))


async def dedicated(etcd) -> set[str]:
    """Six nodes and two dedicated machines, which the policy keeps from being RRs; their
    names."""
    items = simulate.nodes("a", range(6))
    machines = simulate.nodes("a", range(6, 8))
    for key in machines:  # the dedicated machines, not yet RRs: the policy keeps them out
        node = json.loads(items.setdefault(key, machines[key]))
        node["metadata"]["labels"]["dedicated"] = "true"
        items[key] = json.dumps(node).encode()
    # The node-to-node mesh off, as on any cluster with RRs: a demoted RR's clients keep no
    # session with it (with the mesh on, theirs would become a mesh session, and none breaks).
    first = {"exclude": "has(dedicated)", "min": 2, "max": 2}
    await simulate.put_all(etcd, {**items, calico.BGP_CONFIG: simulate.mesh_off(),
                                  POLICY: json.dumps(first).encode()})
    return {json.loads(machines[k])["metadata"]["name"] for k in machines}


async def test_old_rrs_stay_until_the_new_sessions_are_established(etcd, start_daemon,
                                                                    rrwatch):
    new = await dedicated(etcd)
    daemon = start_daemon({"RRWATCH_VERIFY_SESSIONS": "require", "RRWATCH_SETTLE": "1"})
    old = await rrs(etcd, lambda names: len(names) == 2)
    _, data = await read_cluster(etcd)
    nodes = addresses(data)
    assert not old & new
    earlier = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC)
    await simulate.put_all(etcd, {
        **{SESSIONS + rr: report(rr, nodes, "Established", earlier, new) for rr in old | new},
        POLICY: json.dumps({"exclude": "!has(dedicated)", "min": 2, "max": 2}).encode()})

    # The new RRs are promoted; the old ones are held, every wait logged once and counted.
    await rrs(etcd, lambda names: names == old | new)
    with trio.fail_after(30):
        await daemon.wait_for_log("holding a break: ")
    await wait_until(lambda: daemon.metrics().get("rrwatch_breaks_held", 0) > 0)
    assert f"waits for its session with {sorted(new)[0]}: Active (Socket: Connection timed" \
        in daemon.log()
    await trio.sleep(3)  # three settle times: a timer alone would have demoted by now
    assert await rrs(etcd, lambda names: True) == old | new
    assert daemon.metrics()["rrwatch_breaks_held_seconds"] > 0
    status = rrwatch("status", "--output", "json")
    assert status.returncode == 0, status.stderr
    held = json.loads(status.stdout)["held_breaks"]
    assert {h["rr"] for h in held} == new and {h["state"] for h in held} == {"Active"}
    assert "break held: " in rrwatch("status").stdout

    # The firewall opens: the new sessions come up, and the move completes after the dwell.
    later = earlier.replace(hour=13)
    await simulate.put_all(etcd, {SESSIONS + rr: report(rr, nodes, "Established", earlier, new,
                                                        later) for rr in old | new})
    assert await rrs(etcd, lambda names: names == new) == new
    with trio.fail_after(30):
        await daemon.wait_for_log("breaks no longer held")
    await wait_until(lambda: daemon.metrics().get("rrwatch_breaks_held") == 0)
    assert json.loads(rrwatch("status", "--output", "json").stdout)["held_breaks"] == []


async def rrs(etcd, wanted) -> set[str]:
    """The RRs in etcd, once `wanted(them)`."""
    found: set[str] = set()

    async def check() -> bool:
        nonlocal found
        found = rr_names((await read_cluster(etcd))[1])
        return bool(wanted(found))

    with trio.fail_after(30):
        while not await check():
            await trio.sleep(0.1)
    return found


@pytest.mark.parametrize("mode", ["require", "auto"])
async def test_a_dead_reporters_breaks_are_held_under_require_and_timed_under_auto(
        etcd, start_daemon, mode):
    """The move waits for one new RR's sessions while the other new RR's `rrwatch report`
    (a real process on a short lease) says its own are up; then it is SIGKILLed, its lease
    expires and its report goes. Once the awaited sessions come up, `require` holds the break
    on the dead reporter's sessions (the old RRs stay, the hold shows in the metrics) until a
    reporter speaks again; `auto` lets it go on the timer, counted as unverified."""
    new = await dedicated(etcd)
    speaking, behind = sorted(new)  # `speaking` runs `rrwatch report`; `behind` a firewall
    daemon = start_daemon({"RRWATCH_VERIFY_SESSIONS": mode, "RRWATCH_SETTLE": "1"})
    old = await rrs(etcd, lambda names: len(names) == 2)
    _, data = await read_cluster(etcd)
    nodes = addresses(data)
    others = [address for name, address in nodes.items() if name not in (speaking, behind)]
    an_hour_ago = time.strftime("%H:%M:%S", time.localtime(time.time() - 3600))
    with FakeBird({address: ("Established", an_hour_ago) for address in others}) as bird:
        bird.set("Active", [nodes[behind]])
        reporter = start_daemon({"RRWATCH_LEASE_TTL": "2"}, "--node", speaking, "--socket",
                                bird.path, "--report-interval", "0.2", command="report")
        await wait_for_key(etcd, SESSIONS + speaking, present=True)
        earlier = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC)
        await simulate.put_all(etcd, {
            **{SESSIONS + rr: report(rr, nodes, "Established", earlier, new)
               for rr in old | {behind}},
            POLICY: json.dumps({"exclude": "!has(dedicated)", "min": 2, "max": 2}).encode()})
        await rrs(etcd, lambda names: names == old | new)
        bird.set("Established", others)  # BIRD configured them anew: a new episode
        with trio.fail_after(30):
            await daemon.wait_for_log(f"waits for its session with {behind}: Active")
        await wait_until(lambda: daemon.metrics().get("rrwatch_breaks_held", 0) > 0)

        dead = f"waits for its session with {speaking}: not reported"
        assert dead not in daemon.log()  # while it lives, its word counts
        reporter.signal(signal.SIGKILL)
        await trio.to_thread.run_sync(reporter.proc.wait)
        await wait_for_key(etcd, SESSIONS + speaking, present=False)  # its lease expired
        unverified = daemon.metrics()["rrwatch_breaks_unverified_total"]
        # The firewall opens: all that the move waits for now is the dead reporter's word.
        later = earlier.replace(hour=13)
        await simulate.put_all(etcd, {SESSIONS + rr: report(rr, nodes, "Established", earlier,
                                                            new, later)
                                      for rr in old | {behind}})
        if mode == "auto":
            assert await rrs(etcd, lambda names: names == new) == new
            assert daemon.metrics()["rrwatch_breaks_unverified_total"] > unverified
            return

        with trio.fail_after(30):
            await daemon.wait_for_log(dead)
        await wait_until(lambda: daemon.metrics().get("rrwatch_breaks_held", 0) > 0)
        await trio.sleep(3)  # three settle times: a timer alone would have demoted by now
        assert await rrs(etcd, lambda names: True) == old | new
        assert daemon.metrics()["rrwatch_breaks_unverified_total"] == unverified
        # A reporter there again: its word completes the move.
        start_daemon({"RRWATCH_LEASE_TTL": "2"}, "--node", speaking, "--socket", bird.path,
                     "--report-interval", "0.2", command="report")
        assert await rrs(etcd, lambda names: names == new) == new
        await wait_until(lambda: daemon.metrics().get("rrwatch_breaks_held") == 0)


async def wait_for_key(etcd, key: str, *, present: bool) -> None:
    with trio.fail_after(30):
        while (await etcd.get(key) is not None) != present:
            await trio.sleep(0.1)

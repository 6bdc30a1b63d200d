"""The real daemon under faults, against a real TLS etcd.

etcd killed during churn, frozen, compacted past the daemon's watches, one of three members
stopped; rival instances killed or frozen; a foreign writer fighting over what rrwatch owns.
Every scenario ends with the same check: etcd holds the desired mesh, and every record or field
that rrwatch does not own is what its own writers last wrote.

Each prints how long recovery took (`pytest -s` shows it); the figures are recorded in the
issue, not asserted here.
"""

from __future__ import annotations

import json
import random
import re
import signal
from collections.abc import Awaitable, Callable

import pytest
import trio

from rrwatch.core import calico, edits
from rrwatch.etcd import Etcd, EtcdError, delete, mod_is, put
from rrwatch.testing import local_etcd, simulate
from tests.support import (
    FOREIGN_PEER,
    FOREIGN_PEER_VALUE,
    RR_KEY,
    ZONES,
    converged,
    rr_names,
    seed,
    settled,
    strip_owned,
)

TTL = 3  # lease seconds: short, so that takeovers are quick
FAST = {"RRWATCH_LEASE_TTL": str(TTL), "RRWATCH_PROBE_INTERVAL": "0.5",
        "RRWATCH_ETCD_TIMEOUT": "1", "RRWATCH_WATCH_TIMEOUT": "5"}
SCENARIO = 120  # seconds any one scenario may take


class Writers:
    """The cluster's other writers, as Calico's controllers write: guarded read-modify-write.

    For every node key they track what it may hold now, without the fields rrwatch owns: one
    value, or several after a write whose outcome etcd could not report (None: absent).
    """

    def __init__(self, etcd: Etcd, seeded: dict[str, bytes], seed_: int) -> None:
        self.etcd = etcd
        self.rng = random.Random(seed_)
        self.possible: dict[str, list[dict | None]] = {
            k: [strip_owned(v)] for k, v in seeded.items() if k.startswith(calico.NODES)}
        self.added: list[str] = []
        self.writes = 0

    async def run(self, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await step()
            except EtcdError:
                await trio.sleep(0.05)  # etcd is down: try again shortly
            await trio.sleep(0.01)

    async def _txn(self, key: str, revision: int, value: bytes | None, *, tracked: bool) -> None:
        request = delete(key) if value is None else put(key, value)
        new = None if value is None or not tracked else strip_owned(value)
        try:
            result = await self.etcd.txn([mod_is(key, revision)], [request])
        except EtcdError:
            if tracked:
                self.possible[key] = [*self.possible.get(key, [None]), new]
            raise
        if result.succeeded:
            self.writes += 1
            if tracked:
                self.possible[key] = [new]

    async def churn(self) -> None:
        """Add a node, remove an added one, or change a label of any node."""
        roll = self.rng.random()
        if roll < 0.4:
            zone = self.rng.choice(ZONES)
            [(key, value)] = simulate.nodes(zone, [1000 + len(self.added)]).items()
            self.added.append(key)
            await self._txn(key, 0, value, tracked=True)
            return
        key = self.rng.choice(self.added if roll < 0.6 and self.added else sorted(self.possible))
        current = await self.etcd.get(key)
        if current is None:
            return
        if roll < 0.6:
            await self._txn(key, current.mod_revision, None, tracked=True)
        else:
            obj = json.loads(current.value)
            obj["metadata"]["labels"]["edited"] = str(self.writes)
            await self._txn(key, current.mod_revision, edits.dumps(obj), tracked=True)

    async def meddle(self) -> None:
        """Change what rrwatch owns: RR label and cluster ID of a node, or an owned BGPPeer."""
        if self.rng.random() < 0.7:
            key = self.rng.choice(sorted(self.possible))
            current = await self.etcd.get(key)
            if current is None:
                return
            obj = json.loads(current.value)
            labels, bgp = obj["metadata"]["labels"], obj["spec"]["bgp"]
            if RR_KEY in labels and self.rng.random() < 0.5:
                del labels[RR_KEY]
                bgp.pop("routeReflectorClusterID", None)
            elif self.rng.random() < 0.5:
                labels[RR_KEY] = ""  # half a promotion: the label without an ID
            else:
                bgp["routeReflectorClusterID"] = "224.0.0.99"
            await self._txn(key, current.mod_revision, edits.dumps(obj), tracked=True)
            return
        _, peers = await self.etcd.snapshot([calico.PEERS])
        owned = [kv for kv in peers if b"rrwatch" in kv.value]
        if not owned:
            return
        peer = self.rng.choice(owned)
        if self.rng.random() < 0.5:
            await self._txn(peer.key, peer.mod_revision, None, tracked=False)
        else:
            obj = json.loads(peer.value)
            obj["spec"]["peerSelector"] = "all()"
            await self._txn(peer.key, peer.mod_revision, edits.dumps(obj), tracked=False)


async def assert_desired(etcd: Etcd, writers: Writers | None = None, env: dict | None = None
                         ) -> dict[str, bytes]:
    """The same ending for every scenario: the desired mesh, and others' data as they left it.

    Without `env` the mesh is checked independently (simple topology, seed defaults); with it,
    a fresh plan from etcd's contents under that configuration must be empty.
    """
    if env is None:
        _, data = await converged(etcd)
    else:
        _, data = await settled(etcd, env)
    assert data[FOREIGN_PEER] == FOREIGN_PEER_VALUE
    if writers is not None:
        nodes = {k: strip_owned(v) for k, v in data.items() if k.startswith(calico.NODES)}
        for key, possible in writers.possible.items():
            assert nodes.get(key) in possible, f"{key} lost an update"
        assert nodes.keys() <= writers.possible.keys()
    return data


async def delete_an_rr(etcd: Etcd, data: dict[str, bytes]) -> str:
    """Delete one RR node (a change the daemon must answer with a promotion); its key."""
    key = calico.NODES + sorted(rr_names(data))[0]
    await etcd.txn([], [delete(key)])
    return key


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> float:
    """Poll until `condition()` holds; the seconds it took."""
    started = trio.current_time()
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.05)
    return trio.current_time() - started


async def idle(daemon) -> None:
    """Wait until the daemon has not planned for a second."""
    last = None
    with trio.fail_after(SCENARIO):
        while True:
            now = daemon.metrics()
            if now and last and now["rrwatch_plans_total"] == last["rrwatch_plans_total"]:
                return
            last = now
            await trio.sleep(1)


def report(scenario: str, **figures: float) -> None:
    print(f"\n[{scenario}] " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in figures.items()))


# etcd 3.5.0-3.5.2 can lose acknowledged writes when killed (etcd-io/etcd#13766): the check of
# the writers' data would blame rrwatch. (.ci/run installs Debian's etcd-server.)
LOSES_WRITES = ("needs an etcd that keeps acknowledged writes when killed, not 3.5.0-3.5.2 "
                "(etcd-io/etcd#13766): apt install etcd-server, or set RRWATCH_TEST_ETCD to "
                "etcd 3.4 or >= 3.5.3")


@pytest.fixture
def etcd_keeps_writes(etcd_binary) -> None:
    if (3, 5, 0) <= local_etcd.etcd_version(etcd_binary) <= (3, 5, 2):
        pytest.skip(LOSES_WRITES)


async def test_ten_etcd_crashes_during_churn(etcd_keeps_writes, etcd, etcd_server, start_daemon):
    """SIGKILL and restart etcd 10 times while nodes come, go and change: the daemon lives
    through every crash and ends with the desired mesh and no one else's update lost."""
    writers = Writers(etcd, await seed(etcd, per_zone=20), seed_=1)
    daemon = start_daemon(FAST)
    await converged(etcd)
    rng = random.Random(2)
    with trio.fail_after(SCENARIO):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writers.run, writers.churn)
            for _ in range(10):
                await trio.sleep(rng.uniform(0.3, 1.0))
                await trio.to_thread.run_sync(etcd_server.kill)
                await trio.sleep(rng.uniform(0, 0.5))
                await trio.to_thread.run_sync(etcd_server.restart)
                started = trio.current_time()
                assert daemon.proc.poll() is None, daemon.log()
            nursery.cancel_scope.cancel()
        await assert_desired(etcd, writers)
    metrics = daemon.metrics()
    report("etcd crashes", restarts=10, churn_writes=writers.writes,
           recovered_s=trio.current_time() - started,
           reconnects=int(metrics["rrwatch_watch_reconnects_total"]))
    assert metrics["rrwatch_watch_reconnects_total"] >= 10
    assert daemon.proc.poll() is None and "Traceback" not in daemon.log()


async def test_a_frozen_etcd_is_noticed_and_survived(etcd, etcd_server, start_daemon):
    """etcd stopped (SIGSTOP) for twice the read timeout: the probe notices, and after SIGCONT
    the daemon answers the next change."""
    await seed(etcd, per_zone=20)
    daemon = start_daemon({"RRWATCH_WATCH_TIMEOUT": "2", "RRWATCH_PROBE_INTERVAL": "0.5",
                           "RRWATCH_ETCD_TIMEOUT": "1"})
    _, data = await converged(etcd)
    etcd_server.pause()
    try:
        noticed = await wait_for(lambda: "probe of" in daemon.log(), "the probe to fail")
        await trio.sleep(max(0.0, 4 - noticed))
    finally:
        etcd_server.resume()
    started = trio.current_time()
    await delete_an_rr(etcd, data)
    await assert_desired(etcd)
    report("etcd frozen 4 s", noticed_s=noticed, converged_after_resume_s=trio.current_time()
           - started, probe_failures=int(daemon.metrics()["rrwatch_probe_failures_total"]))
    assert daemon.metrics()["rrwatch_probe_failures_total"] >= 1


async def test_compaction_past_the_watches_resyncs_and_counts_drift(etcd, etcd_server,
                                                                   start_daemon):
    """The daemon frozen while etcd restarts, changes and compacts: its watches cannot resume,
    so it takes a new snapshot, counts each key it had missed as drift, and converges."""
    await seed(etcd, per_zone=20)
    daemon = start_daemon(FAST)
    _, data = await converged(etcd)
    await idle(daemon)  # its model holds all it wrote: what it misses next is exactly known
    daemon.signal(signal.SIGSTOP)
    try:
        await trio.to_thread.run_sync(etcd_server.kill)
        await trio.to_thread.run_sync(etcd_server.restart)
        await delete_an_rr(etcd, data)
        await simulate.put_all(etcd, simulate.nodes("b", range(100, 103)))
        await trio.to_thread.run_sync(etcd_server.compact, etcd_server.revision())
    finally:
        daemon.signal(signal.SIGCONT)
    started = trio.current_time()
    await assert_desired(etcd)
    metrics = daemon.metrics()
    report("compaction", converged_s=trio.current_time() - started,
           resyncs=int(metrics["rrwatch_watch_resyncs_total"]),
           drift=int(metrics["rrwatch_drift_keys_total"]))
    assert metrics["rrwatch_watch_resyncs_total"] == 1
    assert metrics["rrwatch_drift_keys_total"] == 4  # one node deleted, three added


async def test_losing_the_member_in_use_moves_to_another(etcd_cluster, tls, start_daemon):
    """Three members; the one the daemon talks to is stopped; it carries on through another."""
    endpoints = [member.endpoint for member in etcd_cluster]
    client = Etcd(endpoints[1:], tls)
    try:
        await seed(client, per_zone=20)
        daemon = start_daemon({**FAST, "ETCD_ENDPOINTS": ",".join(endpoints)})
        _, data = await converged(client)
        assert f"in sync with {endpoints[0]}" in daemon.log()
        await trio.to_thread.run_sync(etcd_cluster[0].stop)
        started = trio.current_time()
        await delete_an_rr(client, data)
        await assert_desired(client)
        report("member stopped", converged_s=trio.current_time() - started,
               reconnects=int(daemon.metrics()["rrwatch_watch_reconnects_total"]))
        assert "using etcd endpoint" in daemon.log()
    finally:
        await client.close()


async def test_one_leader_and_a_quick_takeover_after_kill_9(etcd, start_daemon):
    """Three instances: never two leaders at a sample; kill -9 the leader and exactly one
    other takes over and answers a change, within about the lease TTL."""
    await seed(etcd, per_zone=20)
    daemons = [start_daemon(FAST) for _ in range(3)]
    leaders_seen: list[int] = []

    async def sample() -> None:
        while True:
            alive = [d for d in daemons if d.proc.poll() is None]
            answers = [d.metrics() for d in alive]
            if all(answers):
                leaders_seen.append(sum(a["rrwatch_leader"] for a in answers))
            await trio.sleep(0.05)

    with trio.fail_after(SCENARIO):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            await wait_for(lambda: any(d.leading() for d in daemons), "a leader")
            _, data = await converged(etcd)
            [leader] = [d for d in daemons if d.leading()]
            # The sampler must have seen the first leader too, or max() below proves nothing.
            await wait_for(lambda: 1 in leaders_seen, "a sample with the first leader")
            leader.proc.kill()
            leader.proc.wait()
            started = trio.current_time()
            await delete_an_rr(etcd, data)
            takeover = await wait_for(lambda: any(d.leading() for d in daemons), "a new leader")
            await assert_desired(etcd)
            converged_s = trio.current_time() - started
            nursery.cancel_scope.cancel()
    report("kill -9 leader", ttl=TTL, takeover_s=takeover, converged_s=converged_s,
           samples=len(leaders_seen))
    assert max(leaders_seen) == 1
    assert sum(d.leading() for d in daemons if d is not leader) == 1


def landed_revisions(log: str) -> list[int]:
    return [int(r) for r in re.findall(r"\(revision (\d+)\)", log)]


async def test_a_frozen_leaders_writes_never_land(etcd, daemon_env, start_daemon):
    """SIGSTOP the leader in the middle of a burst of writes until its lease expires; the
    standby takes over and finishes, and answers a change made meanwhile; SIGCONT the old
    leader: none of its writes lands after the new leader won, and the mesh is right."""
    env = {**FAST, "ROUTE_REFLECTOR_TOPOLOGY": "multi"}
    whole = {**daemon_env, **env}  # what the daemons run with
    await seed(etcd, per_zone=20)
    old = start_daemon(env)
    await old.wait_for_log("leading as")
    new = start_daemon(env)
    await new.wait_for_log("standing by")
    await settled(etcd, whole)
    with trio.fail_after(SCENARIO):
        before = old.metrics()["rrwatch_writes_total"]
        await simulate.put_all(etcd, simulate.nodes("a", range(100, 500)))  # 400 new clients
        await wait_for(lambda: old.metrics().get("rrwatch_writes_total", 0) > before + 20,
                       "the burst to start")
        old.signal(signal.SIGSTOP)
        try:
            await simulate.put_all(etcd, simulate.nodes("b", range(100, 150)))  # work for `new`
            takeover = await wait_for(new.leading, "the standby to lead")
            won = (await etcd.get("/rrwatch/v1/leader")).create_revision
            await wait_for(lambda: new.metrics().get("rrwatch_writes_total", 0) > 0, "a write")
        finally:
            old.signal(signal.SIGCONT)
        await old.wait_for_log("campaigning again")
        await assert_desired(etcd, env=whole)
    metrics = old.metrics()
    report("SIGSTOP leader", ttl=TTL, takeover_s=takeover,
           old_writes=int(metrics["rrwatch_writes_total"]),
           old_fenced=int(metrics["rrwatch_fenced_writes_total"]))
    assert landed_revisions(old.log()) and max(landed_revisions(old.log())) < won
    assert not old.leading() and new.leading()


async def test_a_foreign_writer_loses_no_update_and_the_mesh_is_restored(etcd, start_daemon):
    """For 5 s another writer flips RR labels and cluster IDs, breaks and deletes rrwatch's
    BGPPeers, while nodes churn. No one's update is lost, and the mesh comes back."""
    writers = Writers(etcd, await seed(etcd, per_zone=20), seed_=3)
    # The writers leave dozens of stray RRs; demoting them one per settle time takes most of
    # the test's patience (the pace has tests of its own).
    daemon = start_daemon({**FAST, "RRWATCH_MAX_DEMOTIONS": "8"})
    await converged(etcd)
    with trio.fail_after(SCENARIO):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writers.run, writers.churn)
            nursery.start_soon(writers.run, writers.meddle)
            await trio.sleep(5)
            nursery.cancel_scope.cancel()
        started = trio.current_time()
        await assert_desired(etcd, writers)
    metrics = daemon.metrics()
    report("foreign writer", foreign_writes=writers.writes,
           converged_s=trio.current_time() - started,
           conflicts=int(metrics["rrwatch_write_conflicts_total"]),
           writes=int(metrics["rrwatch_writes_total"]))
    assert writers.writes > 100  # the writers did fight: not a quiet cluster

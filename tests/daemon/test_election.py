"""Sessions, leadership, fencing and registrations against a real etcd, in process."""

from __future__ import annotations

import json

import pytest
import trio

from rrwatch.config.loader import Timing
from rrwatch.config.settings import Settings
from rrwatch.core import calico, edits
from rrwatch.core.model import ClusterState
from rrwatch.core.plan import Limits
from rrwatch.core.policy import Policy
from rrwatch.daemon import election
from rrwatch.daemon.election import Fence, LostLeadership, SessionLost
from rrwatch.daemon.reconciler import Reconciler
from rrwatch.daemon.records import Records
from rrwatch.daemon.watcher import Watcher
from rrwatch.etcd import put
from rrwatch.host import registration
from rrwatch.testing import simulate
from tests.support import RR_LABEL

LEADER = "/rrwatch/v1/leader"


async def test_a_standby_wins_as_soon_as_the_leader_lets_go(etcd):
    """The second claimant waits while the first holds the key, and wins once it is revoked."""
    won: list[str] = []
    with trio.fail_after(10):
        async with election.session(etcd, 30) as first:
            assert await election.claim(etcd, LEADER, b"first", first) > 0
            async with trio.open_nursery() as nursery:

                async def second() -> None:
                    async with election.session(etcd, 30) as lease:
                        await election.claim(etcd, LEADER, b"second", lease,
                                             waiting=lambda holder: won.append(holder.decode()))
                        won.append("second won")

                nursery.start_soon(second)
                while not won:
                    await trio.sleep(0.01)
                assert won == ["first"]  # told who leads, and still waiting
                await etcd.revoke(first)
        assert won == ["first", "second won"]


async def test_claiming_again_on_the_same_lease_keeps_the_fence(etcd):
    async with election.session(etcd, 30) as lease:
        revision = await election.claim(etcd, LEADER, b"me", lease)
        assert await election.claim(etcd, LEADER, b"me", lease) == revision


async def test_a_lost_lease_cancels_the_body_and_says_so(etcd):
    """Revoked behind its back, the session's body is cancelled and SessionLost raised."""
    reached_end = False
    with trio.fail_after(10), pytest.raises(SessionLost, match="expired"):
        async with election.session(etcd, 3) as lease:
            await etcd.revoke(lease)
            await trio.sleep(5)  # keepalive runs every 1 s; it finds the lease gone
            reached_end = True
    assert not reached_end


async def test_leaving_a_session_deletes_what_its_lease_held(etcd):
    async with election.session(etcd, 30) as lease:
        await election.claim(etcd, LEADER, b"me", lease)
        assert await etcd.get(LEADER) is not None
    assert await etcd.get(LEADER) is None


def reconciler_for(etcd, watcher: Watcher) -> Reconciler:
    settings = Settings(Policy(rr_label=RR_LABEL, ratio=0.005, min_rrs=3, max_rrs=25), Limits(),
                        simulate.ZONE_LABEL)
    return Reconciler(etcd, watcher, lambda: settings, Timing(debounce=0.01, settle=0.1))


async def test_a_deposed_leaders_write_is_fenced_off(etcd):
    """Once the leader key is someone else's, the old leader's first write fails atomically:
    nothing lands, LostLeadership ends its run, and the fenced write is counted."""
    watcher = Watcher(etcd, Records(lambda: ClusterState(simulate.ZONE_LABEL, RR_LABEL)))
    reconciler = reconciler_for(etcd, watcher)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            async with election.session(etcd, 30) as old:
                fence = Fence(LEADER, await election.claim(etcd, LEADER, b"old", old))
            async with election.session(etcd, 30) as new:
                await election.claim(etcd, LEADER, b"new", new)
                before, _ = await etcd.snapshot(["/calico/"])
                revision = await simulate.put_all(etcd, simulate.nodes("a", range(5)))
                await watcher.wait_seen({calico.NODES + simulate.node_name("a", 0): revision})
                with pytest.raises(LostLeadership, match="fenced"):
                    await reconciler.run(fence)
                _, kvs = await etcd.snapshot(["/calico/"])
                assert max(kv.mod_revision for kv in kvs) == revision  # only our seed landed
            nursery.cancel_scope.cancel()
    assert reconciler.stats.fenced == 1
    assert reconciler.stats.writes == 0


async def test_a_lost_guard_waits_for_the_truth_and_plans_again(etcd):
    """A write beaten by a foreign change is not retried blindly: the reconciler waits until the
    model holds the record that beat it, and the next plan builds on that record."""
    watcher = Watcher(etcd, Records(lambda: ClusterState(simulate.ZONE_LABEL, RR_LABEL)))
    reconciler = reconciler_for(etcd, watcher)
    nodes = simulate.nodes("a", range(3))
    await simulate.put_all(etcd, nodes)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery, election.session(etcd, 30) as lease:
            await nursery.start(watcher.run)
            fence = Fence(LEADER, await election.claim(etcd, LEADER, b"me", lease))
            # Every node changes under the reconciler's feet between its plan and its writes.
            plan = reconciler.plan()
            for key, value in nodes.items():
                await etcd.txn([], [put(key, with_label(value, "foreign", "x"))])
            assert await reconciler.apply(plan.make, fence) == len(plan.make) - 3
            assert reconciler.stats.conflicts == 3  # the promotions; the new BGPPeers land
            assert reconciler.stats.writes == len(plan.make) - 3
            assert all(node.labels["foreign"] == "x" for node in watcher.state.nodes.values())
            await converge(nursery, reconciler, watcher, fence)
    for key in nodes:
        obj = json.loads((await etcd.get(key)).value)
        assert obj["metadata"]["labels"]["foreign"] == "x"
        assert obj["spec"]["bgp"]["routeReflectorClusterID"] == "224.0.0.1"


async def test_a_record_changed_between_read_and_write_sinks_its_whole_batch(etcd, monkeypatch):
    """Edits read their records in one transaction and write them, guarded, in another. A record
    that changes in between fails that transaction, so no write made from the stale read lands;
    the record counts as beaten, and the next plan writes the rest around it."""
    watcher = Watcher(etcd, Records(lambda: ClusterState(simulate.ZONE_LABEL, RR_LABEL)))
    reconciler = reconciler_for(etcd, watcher)
    nodes = simulate.nodes("a", range(3))
    await simulate.put_all(etcd, nodes)
    first, value = next(iter(nodes.items()))
    real_txn, raced = etcd.txn, []

    async def racing_txn(compare, success, failure=()):
        result = await real_txn(compare, success, failure)
        if not compare and not raced:  # the read of the records to edit
            raced.append(await real_txn([], [put(first, with_label(value, "foreign", "x"))]))
        return result

    monkeypatch.setattr(etcd, "txn", racing_txn)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery, election.session(etcd, 30) as lease:
            await nursery.start(watcher.run)
            fence = Fence(LEADER, await election.claim(etcd, LEADER, b"me", lease))
            plan = reconciler.plan()
            assert await reconciler.apply(plan.make, fence) == 0
            assert raced and reconciler.stats.conflicts == 1
            assert reconciler.stats.writes == 0
            assert watcher.state.nodes[first[len(calico.NODES):]].labels["foreign"] == "x"
            await converge(nursery, reconciler, watcher, fence)
    for key in nodes:
        obj = json.loads((await etcd.get(key)).value)
        assert obj["spec"]["bgp"]["routeReflectorClusterID"] == "224.0.0.1"
    assert json.loads((await etcd.get(first)).value)["metadata"]["labels"]["foreign"] == "x"


async def test_a_write_answering_an_event_uses_the_value_the_event_brought(etcd, monkeypatch):
    """Nodes that arrive as events need no read before their promotion is written: the watch
    kept their values. Only a transaction with guards goes to etcd."""
    watcher = Watcher(etcd, Records(lambda: ClusterState(simulate.ZONE_LABEL, RR_LABEL)))
    reconciler = reconciler_for(etcd, watcher)
    real_txn, calls = etcd.txn, []

    async def counting_txn(compare, success, failure=()):
        calls.append(len(compare))
        return await real_txn(compare, success, failure)

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery, election.session(etcd, 30) as lease:
            await nursery.start(watcher.run)
            fence = Fence(LEADER, await election.claim(etcd, LEADER, b"me", lease))
            nodes = simulate.nodes("a", range(3))
            revision = await simulate.put_all(etcd, nodes)
            await watcher.wait_seen({key: revision for key in nodes})
            plan = reconciler.plan()
            monkeypatch.setattr(etcd, "txn", counting_txn)
            assert await reconciler.apply(plan.make, fence) == len(plan.make)
            nursery.cancel_scope.cancel()
    assert calls == [len(plan.make) + 1]  # one guarded write per op, and the fence; no read
    for key in nodes:
        obj = json.loads((await etcd.get(key)).value)
        assert obj["spec"]["bgp"]["routeReflectorClusterID"] == "224.0.0.1"


async def converge(nursery: trio.Nursery, reconciler: Reconciler, watcher: Watcher,
                   fence: Fence) -> None:
    """Run the reconciler until a plan from the model wants nothing, then stop the nursery."""
    nursery.start_soon(reconciler.run, fence)
    while reconciler.plan():
        await watcher.wait_change(watcher.version)
    nursery.cancel_scope.cancel()


def with_label(value: bytes, key: str, label: str) -> bytes:
    obj = json.loads(value)
    obj["metadata"]["labels"][key] = label
    return edits.dumps(obj)


async def test_registration_lives_and_dies_with_its_session(etcd):
    key, value = edits.registration("10.0.0.9", "224.0.0.9")
    async with election.session(etcd, 30) as lease:
        await registration.register(etcd, key, value, lease)
        kv = await etcd.get(key)
        assert (kv.value, kv.lease) == (value, lease)
        async with election.session(etcd, 30) as successor:  # a restart within the TTL
            await registration.register(etcd, key, value, successor)
            kv = await etcd.get(key)
            assert kv.lease == successor
        assert await etcd.get(key) is None  # gone with the lease that held it last


async def test_a_registration_made_by_hand_is_left_alone(etcd):
    key, value = edits.registration("fd00::9")
    assert key == calico.RR_V6 + "fd00::9"
    static = b'{"ip": "fd00::9", "cluster_id": "224.0.0.7"}'
    await etcd.txn([], [put(key, static)])
    async with election.session(etcd, 30) as lease:
        await registration.register(etcd, key, value, lease)
    kv = await etcd.get(key)
    assert (kv.value, kv.lease) == (static, 0)


@pytest.mark.parametrize("holder_ttl", [None, 3600])
async def test_a_leader_key_no_instance_could_hold_is_taken_over(etcd, holder_ttl):
    """A leader key without a lease, or on a lease longer than any instance asks for, would
    keep every instance standing by for ever: the claimant is told, and wins."""
    lease = 0 if holder_ttl is None else await etcd.grant(holder_ttl)
    await etcd.txn([], [put(LEADER, b"forged\n\x1b[2J", lease)])
    usurpers: list[tuple[bytes, str]] = []
    with trio.fail_after(10):
        async with election.session(etcd, 10) as mine:
            fence = await election.claim(etcd, LEADER, b"me", mine,
                                         usurper=lambda holder, why: usurpers.append((holder, why)))
    assert fence > 0
    assert usurpers == [(b"forged\n\x1b[2J", "without a lease" if holder_ttl is None
                         else "on a lease granted for 3600 s, more than any instance asks for")]

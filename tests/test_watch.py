"""The watcher against a real etcd: events, resume after a crash, resync after compaction."""

from __future__ import annotations

import functools

import trio

from rrwatch import calico, simulate
from rrwatch.model import ClusterState
from rrwatch.watch import Backoff, Watcher
from tests.strategies import RR_LABEL


def watcher_for(etcd, **kwargs) -> Watcher:
    return Watcher(etcd, lambda: ClusterState(simulate.ZONE_LABEL, RR_LABEL), **kwargs)


def names(state: ClusterState) -> set[str]:
    return set(state.nodes)


async def test_events_update_the_model(etcd):
    """Puts and deletes after the snapshot reach the model, without any re-listing."""
    await simulate.put_all(etcd, simulate.nodes("a", range(3)))
    watcher = watcher_for(etcd)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            assert names(watcher.state) == {simulate.node_name("a", i) for i in range(3)}
            more = simulate.nodes("b", range(2))
            revision = await simulate.put_all(etcd, more)
            await watcher.wait_seen(dict.fromkeys(more, revision))
            gone = calico.NODES + simulate.node_name("a", 0)
            revision = await simulate.delete_all(etcd, [gone])
            await watcher.wait_seen({gone: revision})
            nursery.cancel_scope.cancel()
    assert names(watcher.state) == {simulate.node_name("a", 1), simulate.node_name("a", 2),
                                    simulate.node_name("b", 0), simulate.node_name("b", 1)}
    assert watcher.stats.snapshots == 1


# A slow first reconnect gives the test a window in which etcd changes while nobody watches.
SLOW = functools.partial(Backoff, first=3.0, cap=3.0)


async def started_then_crashed(nursery, watcher, server) -> None:
    """Start the watcher, then kill etcd and bring it back before the watcher reconnects."""
    await nursery.start(watcher.run)
    await trio.to_thread.run_sync(server.kill)
    await trio.to_thread.run_sync(server.restart)


async def test_resumes_after_etcd_is_killed_without_losing_events(etcd, etcd_server):
    """After etcd is killed and restarted, writes made before the reconnect all arrive."""
    watcher = watcher_for(etcd, backoff=SLOW)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await started_then_crashed(nursery, watcher, etcd_server)
            items = simulate.nodes("c", range(50))
            revision = await simulate.put_all(etcd, items)
            await watcher.wait_seen(dict.fromkeys(items, revision))
            nursery.cancel_scope.cancel()
    assert len(watcher.state.nodes) == 50
    assert watcher.stats.reconnects >= 1
    assert watcher.stats.snapshots == 1  # resumed, not re-listed


async def test_compaction_past_the_resume_point_resyncs(etcd, etcd_server):
    """When the history a stream needs is compacted away, a new snapshot rebuilds the model."""
    await simulate.put_all(etcd, simulate.nodes("a", range(5)))
    watcher = watcher_for(etcd, backoff=SLOW)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await started_then_crashed(nursery, watcher, etcd_server)
            await simulate.delete_all(etcd, [calico.NODES + simulate.node_name("a", 0)])
            await simulate.put_all(etcd, simulate.nodes("b", range(5)))
            await trio.to_thread.run_sync(etcd_server.compact, etcd_server.revision())
            while watcher.stats.snapshots < 2:
                await watcher.wait_change(watcher.version)
            nursery.cancel_scope.cancel()
    expected = {simulate.node_name("a", i) for i in range(1, 5)}
    expected |= {simulate.node_name("b", i) for i in range(5)}
    assert names(watcher.state) == expected

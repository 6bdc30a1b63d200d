"""The watcher against a real etcd: events, resume after a crash, resync after compaction,
idle streams, probes of a frozen etcd, anti-entropy."""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Callable

import trio

from rrwatch import config
from rrwatch.core import calico
from rrwatch.core.model import ClusterState
from rrwatch.daemon.live import Live
from rrwatch.daemon.records import Records, drift, load
from rrwatch.daemon.watcher import Watcher
from rrwatch.etcd import KV, Etcd
from rrwatch.retry import Backoff
from rrwatch.testing import simulate
from rrwatch.tls import session as tls_session
from tests.support import RR_LABEL


def watcher_for(etcd, **kwargs) -> Watcher:
    return Watcher(etcd, Records(lambda: ClusterState(simulate.ZONE_LABEL, RR_LABEL)), **kwargs)


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
    assert watcher.stats.resyncs == 1
    assert watcher.stats.drift == 6  # the delete and the 5 puts it missed


def test_drift_compares_revisions_as_of_the_snapshot():
    model = {"same": 3, "missed-put": 2, "missed-delete": 4, "ahead": 9}
    deleted = {"deleted-later": 8, "deleted-long-ago": 1}
    fresh = {"same": 3, "missed-put": 5, "ahead": 6, "deleted-later": 2, "missed-create": 4,
             "deleted-long-ago": 5}
    assert drift(model, deleted, fresh, 7) == ["deleted-long-ago", "missed-create",
                                                "missed-delete", "missed-put"]
    assert drift(fresh, {}, fresh, 7) == []


class PagedEtcd:
    """Stands in for etcd's paged reads: the given pages, one at a time, with `between` called
    before each page after the first."""

    def __init__(self, pages: list[dict[str, bytes]], between: Callable[[], None]) -> None:
        self._pages = pages
        self._between = between

    async def pages(self, prefixes, *, page=1000, keys_only=False):
        revision = len(self._pages)
        for i, items in enumerate(self._pages):
            if i:
                self._between()
            yield revision, [KV(key, value, revision) for key, value in items.items()]


async def test_a_snapshot_read_page_by_page_is_the_one_read_at_once():
    """Applying each page as it comes builds the model that applying them all at the end did."""
    pages = [simulate.nodes("a", range(3)), {calico.NODES + "bad": b"{}"},
             simulate.nodes("b", range(2))]
    records = Records(lambda: ClusterState(simulate.ZONE_LABEL, RR_LABEL))
    snapshot = await load(PagedEtcd(pages, lambda: None), records)
    state = records.new_state()
    for key, value in (item for items in pages for item in items.items()):
        with contextlib.suppress(calico.BadRecord):
            calico.apply(state, key, value, len(pages))
    assert snapshot.state == state
    assert snapshot.bad == {calico.NODES + "bad": "metadata.name None does not match the key"}
    assert snapshot.revisions == {key: len(pages) for items in pages for key in items}


async def test_a_policy_object_in_a_snapshot_takes_effect_once_the_model_is_whole():
    """Nodes land in the new model page by page, but the settings in force change only once
    the last page is in, never while the model they shape is half read; and they shape it."""
    live = Live(config.load({}))
    seen = []
    policy = {live.key: b'{"zone_label": "%s"}' % simulate.ZONE_LABEL.encode()}
    nodes = simulate.nodes("a", range(2)), simulate.nodes("b", range(2))
    etcd = PagedEtcd([policy, *nodes], lambda: seen.append(live.settings.zone_label))
    snapshot = await load(etcd, live.records)
    assert seen == ["", ""]
    assert live.settings.zone_label == simulate.ZONE_LABEL
    assert snapshot.state.zone_label == simulate.ZONE_LABEL
    assert set(snapshot.state.zones) == {"a", "b"}
    assert set(snapshot.revisions) == {*policy, *nodes[0], *nodes[1]}


async def test_settings_reloaded_during_a_snapshot_shape_the_model_it_loads():
    """A reload (SIGHUP) while the pages come in: the new model follows the new settings."""
    live = Live(config.load({}))
    reloaded = config.load({"ROUTE_REFLECTOR_ZONE_LABEL": simulate.ZONE_LABEL})
    etcd = PagedEtcd([simulate.nodes("a", range(2)), simulate.nodes("b", range(2))],
                     lambda: live.reconfigure(reloaded, live.settings_state()))
    snapshot = await load(etcd, live.records)
    assert snapshot.state.shape == live.settings_state().shape
    assert set(snapshot.state.zones) == {"a", "b"}


async def test_pages_are_all_read_at_the_revision_of_the_first(etcd):
    """A paged read is one snapshot: what etcd gets meanwhile is not in its later pages."""
    before = simulate.nodes("a", range(5))
    revision = await simulate.put_all(etcd, before)
    pages = []
    async for page in etcd.pages([calico.NODES], page=2):
        pages.append(page)
        if len(pages) == 1:
            await simulate.put_all(etcd, simulate.nodes("b", range(3)))
    assert [(r, len(kvs)) for r, kvs in pages] == [(revision, 2), (revision, 2), (revision, 1)]
    assert [kv.key for _, kvs in pages for kv in kvs] == sorted(before)


async def test_anti_entropy_finds_a_lost_event_and_rebuilds_the_model(etcd):
    """A model that lost an event (one node dropped behind the watcher's back) is found out by
    the periodic check, counted as drift, and rebuilt from a new snapshot."""
    await simulate.put_all(etcd, simulate.nodes("a", range(3)))
    watcher = watcher_for(etcd, check_interval=0.2)
    lost = simulate.node_name("a", 1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            while watcher.stats.checks < 2:
                await trio.sleep(0.05)
            assert watcher.stats.drift == 0  # a healthy model is not drift
            watcher.state.remove_node(lost)
            del watcher.revisions[calico.NODES + lost]
            while watcher.stats.resyncs < 1:
                await watcher.wait_change(watcher.version)
            nursery.cancel_scope.cancel()
    assert watcher.stats.drift == 1
    assert lost in watcher.state.nodes


async def test_a_silent_stream_is_reopened_quietly_without_losing_events(etcd_server, tls):
    """With a read timeout shorter than etcd's progress interval, idle streams reopen from
    where they were; that is not an error, and later events still arrive."""
    client = Etcd([etcd_server.endpoint], tls, watch_timeout=0.5)
    watcher = watcher_for(client)

    async def idle_thrice() -> None:
        while watcher.stats.idle_reopens < 3:
            await trio.sleep(0.05)

    await then_events_still_arrive(client, watcher, idle_thrice)
    assert watcher.stats.reconnects == 0
    assert watcher.stats.snapshots == 1


async def test_a_frozen_etcd_is_probed_and_the_watches_recover(etcd_server, tls):
    """etcd stopped (SIGSTOP) answers nothing; the probe notices within its interval plus the
    request timeout, and once etcd runs again the watches resume without a new snapshot."""
    client = Etcd([etcd_server.endpoint], tls, timeout=0.5)
    watcher = watcher_for(client, probe_interval=0.2)

    async def frozen_until_probed() -> None:
        etcd_server.pause()
        try:
            while watcher.stats.probe_failures < 1:
                await trio.sleep(0.05)
        finally:
            etcd_server.resume()

    await then_events_still_arrive(client, watcher, frozen_until_probed)
    assert watcher.stats.snapshots == 1


async def then_events_still_arrive(client: Etcd, watcher: Watcher, first) -> None:
    """Run the watcher on its own client; once `first()` returns, new writes must reach it."""
    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(watcher.run)
                await first()
                items = simulate.nodes("a", range(3))
                revision = await simulate.put_all(client, items)
                await watcher.wait_seen(dict.fromkeys(items, revision))
                nursery.cancel_scope.cancel()
    finally:
        await client.close()


async def test_connections_to_etcd_use_tcp_keepalive(etcd_server, tls):
    """A peer that vanishes without a word is noticed even on a silent watch stream."""
    with tls_session(tls) as session:
        response = session.get(etcd_server.endpoint + "/health", stream=True, timeout=5)
        sock = response.raw.connection.sock
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
        response.close()

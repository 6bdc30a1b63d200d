"""The real daemon against a real TLS etcd: convergence, steady state, scaling, foreign data."""

from __future__ import annotations

import json

import trio

from rrwatch.core import calico, edits
from rrwatch.etcd import Compacted, Etcd, EtcdError, put
from rrwatch.testing import simulate
from tests.support import (
    CONVERGE,
    FOREIGN_PEER,
    FOREIGN_PEER_VALUE,
    RR_KEY,
    converged,
    expected_rrs,
    read_cluster,
    rr_names,
    seed,
    strip_owned,
)


async def test_converges_and_keeps_foreign_bytes(etcd, start_daemon):
    """3 zones × 40 nodes converge to the expected RRs and peers; nothing else changes."""
    seeded = await seed(etcd)
    bad = {
        calico.NODES + "garbage": b"{not json",
        calico.NODES + "no-bgp": edits.dumps(
            {"kind": "Node", "apiVersion": "projectcalico.org/v3",
             "metadata": {"name": "no-bgp"}, "spec": {}}),
    }
    await simulate.put_all(etcd, bad)
    daemon = start_daemon()
    with trio.fail_after(CONVERGE):
        _, data = await converged(etcd)
    rrs = rr_names(data)
    for key, value in {**seeded, **bad}.items():
        if key.removeprefix(calico.NODES) in rrs:
            assert strip_owned(data[key]) == strip_owned(value), key
            assert json.loads(data[key])["metadata"]["labels"][RR_KEY] == ""
        else:
            assert data[key] == value, f"{key} changed"
    for key in bad:
        await daemon.wait_for_log(f"skipping {key}")
    assert "Traceback" not in daemon.log()


async def calico_revisions(etcd: Etcd) -> dict[str, int]:
    """Every Calico key's mod revision: any write or delete under /calico/ changes this."""
    _, kvs = await etcd.snapshot(["/calico/"], keys_only=True)
    return {kv.key: kv.mod_revision for kv in kvs}


async def test_steady_state_writes_nothing_even_after_restart(etcd, start_daemon):
    """Once converged no Calico key changes for 5 s, and a restarted daemon writes none.

    (Only the leader key, outside /calico/, changes hands with the restart.)"""
    await seed(etcd)
    first = start_daemon()
    with trio.fail_after(CONVERGE + 20):
        await converged(etcd)
        before = await calico_revisions(etcd)
        await trio.sleep(5)
        assert await calico_revisions(etcd) == before
        assert first.stop() == 0
        second = start_daemon()
        await second.wait_for_log("leading as")
        await trio.sleep(3)  # several settle times: any pending demotion would have run
        assert await calico_revisions(etcd) == before
    assert "promote" not in second.log() and "demote" not in second.log()


async def node_history(etcd: Etcd, start: int, end: int) -> list[tuple[int, str, bool]]:
    """(revision, node, is RR after) for every node write in (start, end]."""
    history = []
    async with etcd.watch(calico.NODES, start + 1) as stream:
        async for message in stream:
            if isinstance(message, (Compacted, EtcdError)):
                raise message
            for event in message.events:
                is_rr = event.value is not None and b"routeReflectorClusterID" in event.value
                history.append((event.revision, event.key[len(calico.NODES):], is_rr))
            if message.events and message.events[-1].revision >= end:
                return history
    return history


async def test_scaling_follows_the_ratio_make_before_break(etcd, start_daemon):
    """600 more nodes in one zone add an RR, removing them drops it; replacements come first."""
    await seed(etcd)
    start_daemon()
    with trio.fail_after(4 * CONVERGE):
        _, data = await converged(etcd)
        before = rr_names(data, "a")
        big = simulate.nodes("a", range(1000, 1600))
        await simulate.put_all(etcd, big)
        _, data = await converged(etcd)
        assert len(rr_names(data, "a")) == expected_rrs(640) == 4
        assert before < rr_names(data, "a")  # sticky: the old RRs stay

        await simulate.delete_all(etcd, big)
        _, data = await converged(etcd)
        assert len(rr_names(data, "a")) == 3

        # An RR loses its BGP address: a replacement is promoted before it is demoted.
        victim = sorted(rr_names(data, "b"))[0]
        key = calico.NODES + victim
        obj = json.loads(data[key])
        obj["spec"]["bgp"].pop("ipv4Address")
        obj["spec"]["bgp"].pop("ipv6Address")
        start = (await etcd.txn([], [put(key, edits.dumps(obj))])).revision
        end, data = await converged(etcd)
        assert victim not in rr_names(data)
        history = await node_history(etcd, start, end)
        promoted = [rev for rev, _, is_rr in history if is_rr]
        demoted = [rev for rev, name, is_rr in history if name == victim and not is_rr]
        assert promoted and demoted
        assert max(promoted) < min(demoted)

    _, data = await read_cluster(etcd)
    assert data[FOREIGN_PEER] == FOREIGN_PEER_VALUE
    for key, value in data.items():
        if key.startswith(calico.NODES):
            assert json.loads(value)["metadata"]["labels"]["rack"].startswith("r")


async def test_dry_run_plans_but_never_writes(etcd, start_daemon):
    """`run --dry-run` logs the promotions it would make and leaves etcd's revision alone."""
    await seed(etcd)
    revision, _ = await read_cluster(etcd)
    daemon = start_daemon({}, "--dry-run")
    with trio.fail_after(CONVERGE):
        await daemon.wait_for_log("would create BGPPeer rrwatch-rr-mesh")
    assert daemon.log().count("would promote") == 3 * expected_rrs(40)
    assert (await read_cluster(etcd))[0] == revision


async def test_sigterm_hands_leadership_over_at_once(etcd, start_daemon):
    """A stopping leader revokes its lease: the leader key is gone (or already the standby's)
    the moment it exits, not a TTL later."""
    first = start_daemon({"RRWATCH_LEASE_TTL": "30"})
    await first.wait_for_log("leading as")
    second = start_daemon({"RRWATCH_LEASE_TTL": "30"})
    await second.wait_for_log("standing by")
    held = await etcd.get("/rrwatch/v1/leader")
    assert first.stop() == 0
    now = await etcd.get("/rrwatch/v1/leader")
    assert now is None or now.lease != held.lease
    with trio.fail_after(CONVERGE):
        await second.wait_for_log("leading as")


async def test_register_ip_holds_a_registration_while_running(etcd, start_daemon):
    """`RRWATCH_REGISTER_IP` registers the host on the daemon's lease: the mesh peers with it;
    a clean exit removes it at once, a killed daemon's goes when its lease runs out."""
    await seed(etcd, per_zone=3)
    env = {"RRWATCH_REGISTER_IP": "10.200.0.7", "RRWATCH_REGISTER_CLUSTER_ID": "224.0.0.50",
           "RRWATCH_LEASE_TTL": "2"}
    key = calico.RR_V4 + "10.200.0.7"
    host_peer = calico.PEERS + "rrwatch-host-10-200-0-7"
    daemon = start_daemon(env)
    with trio.fail_after(CONVERGE):
        while await etcd.get(host_peer) is None:
            await trio.sleep(0.05)
        registration = await etcd.get(key)
        assert json.loads(registration.value) == {"ip": "10.200.0.7", "cluster_id": "224.0.0.50"}
        assert registration.lease != 0
        assert daemon.stop() == 0
        assert await etcd.get(key) is None

        killed = start_daemon(env)
        while await etcd.get(key) is None:
            await trio.sleep(0.05)
        killed.proc.kill()
        killed.proc.wait()
        while await etcd.get(key) is not None:  # the lease (2 s) runs out
            await trio.sleep(0.1)

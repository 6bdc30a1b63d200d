"""The reconciler's pure parts: how operations are batched into transactions, and the request
each one becomes given its record as it is now; and, on a real etcd, a step held because it
would cut routes."""

from __future__ import annotations

import base64
import json
import logging

import pytest
import trio

from rrwatch.config.loader import Timing
from rrwatch.config.settings import Settings
from rrwatch.core import calico, edits
from rrwatch.core.model import ClusterState, RRLabel, client_labels
from rrwatch.core.plan import DeletePeer, Limits, PutPeer, SetNode
from rrwatch.core.policy import Policy
from rrwatch.core.selector import parse
from rrwatch.daemon import election
from rrwatch.daemon.election import Fence
from rrwatch.daemon.reconciler import Reconciler
from rrwatch.daemon.records import Records
from rrwatch.daemon.requests import (
    BATCH,
    BATCH_BYTES,
    InvalidWrite,
    batches,
    chunks,
    write_request,
)
from rrwatch.daemon.watcher import Watcher
from rrwatch.etcd import KV
from rrwatch.testing import simulate

RR = RRLabel("calico-route-reflector", "")
NODE = calico.NODES + "node-a-00001"


def _value(request: dict) -> dict:
    return json.loads(base64.b64decode(request["request_put"]["value"]))


def test_batches_keep_order_and_fit_etcds_operation_limit():
    ops = tuple(SetNode(f"n{i:04d}", i, None) for i in range(300))
    out = batches(ops)
    assert [len(b) for b in out] == [BATCH, BATCH, 300 - 2 * BATCH]
    assert sum(out, ()) == ops
    assert BATCH + 1 <= 128  # and the fence's compare, or read, still fits


def test_large_values_split_a_batch_into_transactions_under_the_byte_budget():
    big = {"request_put": {"value": "x" * (BATCH_BYTES // 3)}}
    small = {"request_delete_range": {"key": "eA=="}}
    requests = [(SetNode(f"n{i}", i, None), big) for i in range(5)] + [
        (DeletePeer("p", 1), small)]
    cut = chunks(requests)
    assert [len(c) for c in cut] == [3, 3]
    assert [pair for chunk in cut for pair in chunk] == requests
    assert chunks(requests[::-1]) == [requests[::-1][:4], requests[::-1][4:]]
    huge = (SetNode("n", 1, None), {"request_put": {"value": "x" * BATCH_BYTES * 2}})
    assert chunks([huge, huge]) == [[huge], [huge]]  # over the budget: alone, still sent


def test_an_edit_is_made_on_the_record_it_was_planned_from_only():
    value = simulate.node_value("node-a-00001", "a", 1)
    op = SetNode("node-a-00001", 7, "224.0.0.1", why="promote")
    assert write_request(op, KV(NODE, value, 8), RR) is None  # changed since the plan
    assert write_request(op, None, RR) is None  # deleted since the plan
    obj = _value(write_request(op, KV(NODE, value, 7), RR))
    assert obj["spec"]["bgp"]["routeReflectorClusterID"] == "224.0.0.1"
    assert obj["metadata"]["labels"][RR.key] == ""
    assert obj["metadata"]["uid"] == json.loads(value)["metadata"]["uid"]


def test_creating_and_deleting_peers_need_no_record():
    create = write_request(PutPeer("rrwatch-rr-mesh", None, {"peerSelector": "x == ''"}),
                           None, RR)
    assert _value(create)["spec"]["peerSelector"] == "x == ''"
    delete = write_request(DeletePeer("rrwatch-old", 3), None, RR)
    assert base64.b64decode(delete["request_delete_range"]["key"]) == (
        calico.PEERS + "rrwatch-old").encode()


def test_a_write_calicos_validation_would_refuse_is_not_made():
    """The backstop behind the planner: the record a write leaves is held to Calico's v3
    rules, for the problems the write would bring (tests/core/test_validation.py holds every
    plan to them)."""
    with pytest.raises(InvalidWrite, match="not a DNS-1123 subdomain"):
        write_request(PutPeer("rrwatch-Zone_A", None, {"peerSelector": "x == ''"}), None, RR)
    value = simulate.node_value("node-a-00001", "a", 1)
    with pytest.raises(InvalidWrite, match="not a dotted-quad"):
        write_request(SetNode("node-a-00001", 7, "224.0.1", why="promote"),
                      KV(NODE, value, 7), RR)


# -- steps judged on a real etcd -----------------------------------------------------------------

LEADER = "/rrwatch/v1/leader"
LEGACY = calico.PEERS + "rrwatch-legacy-v6"


def _node(name: str, index: int, *, v4: bool, v6: bool, **labels: str) -> bytes:
    obj = json.loads(simulate.node_value(name, "a", index, labels=labels))
    if not v4:
        del obj["spec"]["bgp"]["ipv4Address"]
    if not v6:
        del obj["spec"]["bgp"]["ipv6Address"]
    return edits.dumps(obj)


async def test_a_break_step_that_would_cut_routes_is_held_until_a_change_frees_it(etcd, caplog):
    """The RRs have IPv4 only, and two IPv6-only nodes reach each other through a BGPPeer that
    rrwatch owns but its mesh no longer wants. Deleting it (a break step) would cut them off, so
    the step is not written: the peer stays, the refusal is logged and counted once however
    often the reconciler plans again. Once an RR gains an IPv6 address, the mesh carries their
    routes, and the same break goes through."""
    prefer = parse("role == 'rr'")
    settings = Settings(Policy(rr_label=RR, ratio=0.005, min_rrs=3, max_rrs=3, prefer=prefer),
                        Limits(), simulate.ZONE_LABEL)
    watcher = Watcher(etcd, Records(lambda: ClusterState(simulate.ZONE_LABEL, RR, None, prefer)))
    reconciler = Reconciler(etcd, watcher, lambda: settings, Timing(debounce=0.01, settle=0.1))
    items = {calico.BGP_CONFIG: simulate.mesh_off(), LEGACY: edits.new_peer(
        "rrwatch-legacy-v6", {"nodeSelector": "has(v6only)", "peerSelector": "has(v6only)"})}
    for i in range(3):
        items[calico.NODES + f"rr-{i}"] = _node(f"rr-{i}", i, v4=True, v6=False, role="rr")
    for i in range(2):
        items[calico.NODES + f"v6-{i}"] = _node(f"v6-{i}", 10 + i, v4=False, v6=True, v6only="")
    await simulate.put_all(etcd, items)
    with trio.fail_after(30), caplog.at_level(logging.INFO, logger="rrwatch.reconcile"):
        async with trio.open_nursery() as nursery, election.session(etcd, 30) as lease:
            await nursery.start(watcher.run)
            fence = Fence(LEADER, await election.claim(etcd, LEADER, b"me", lease))
            nursery.start_soon(reconciler.run, fence)
            while not reconciler.stats.steps_refused:
                await trio.sleep(0.05)
            assert reconciler.plan().brk == (DeletePeer("rrwatch-legacy-v6",
                                                        watcher.state.peers[LEGACY[len(
                                                            calico.PEERS):]].revision),)
            # An unrelated change: the reconciler plans again, and holds again, silently.
            key = calico.NODES + "v6-0"
            value = json.loads((await etcd.get(key)).value)
            value["metadata"]["labels"]["rack"] = "r99"
            revision = await simulate.put_all(etcd, {key: edits.dumps(value)})
            await watcher.wait_seen({key: revision})
            plans = reconciler.stats.plans
            while reconciler.stats.plans == plans:
                await trio.sleep(0.05)
            assert await etcd.get(LEGACY) is not None
            assert reconciler.stats.steps_refused == 1
            # rr-0 gains an IPv6 address: the RRs now carry the IPv6 routes, and the break goes.
            value = json.loads((await etcd.get(calico.NODES + "rr-0")).value)
            value["spec"]["bgp"]["ipv6Address"] = "fd00:10::99/64"
            await simulate.put_all(etcd, {calico.NODES + "rr-0": edits.dumps(value)})
            while await etcd.get(LEGACY) is not None:
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    held = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert held == ["holding the break step (1 writes, from delete BGPPeer rrwatch-legacy-v6): it"
                    " would make routes unreachable that reach now: IPv6: 2 (origin -> receiver)"
                    " would stop reaching: v6-0 -> v6-1, v6-1 -> v6-0"]
    assert any(r.getMessage() == "steps no longer held" for r in caplog.records)
    assert reconciler.stats.steps_refused == 1


async def test_a_mesh_on_first_start_cut_into_steps_goes_as_one_whole_make_phase(etcd, caplog):
    """The node-to-node mesh on, `multi`, two node writes per step: promoted RRs leave the mesh
    at once, so any cut of the first start would leave the other clients without the RRs'
    routes. The reconciler takes the whole make phase, which loses nothing, instead of holding
    forever, and converges; nothing is refused."""
    settings = Settings(Policy(rr_label=RR, ratio=0.005, min_rrs=3, max_rrs=3,
                               topology="multi", client_rrs=2), Limits(node_writes=2),
                        simulate.ZONE_LABEL)
    watcher = Watcher(etcd, Records(lambda: ClusterState(simulate.ZONE_LABEL, RR)))
    reconciler = Reconciler(etcd, watcher, lambda: settings, Timing(debounce=0.01, settle=0.1))
    await simulate.put_all(etcd, simulate.nodes("a", range(8)))  # no BGPConfiguration: mesh on
    with trio.fail_after(30), caplog.at_level(logging.INFO, logger="rrwatch.reconcile"):
        async with trio.open_nursery() as nursery, election.session(etcd, 30) as lease:
            await nursery.start(watcher.run)
            fence = Fence(LEADER, await election.claim(etcd, LEADER, b"me", lease))
            nursery.start_soon(reconciler.run, fence)
            await reconciler.wait_converged(watcher.version)
            nursery.cancel_scope.cancel()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("taking the whole make phase (") for m in messages), messages
    assert reconciler.stats.steps_refused == 0
    assert not [m for m in messages if m.startswith("holding")]
    clients = [n for n in watcher.state.nodes.values() if n.cluster_id is None]
    assert len(clients) == 5 and all(len(client_labels(n)) == 2 for n in clients)

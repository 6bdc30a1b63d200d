"""The reconciler's pure parts: how operations are batched into transactions, and the request
each one becomes given its record as it is now."""

from __future__ import annotations

import base64
import json

from rrwatch.core import calico
from rrwatch.core.model import RRLabel
from rrwatch.core.plan import DeletePeer, PutPeer, SetNode
from rrwatch.daemon.reconciler import BATCH, BATCH_BYTES, _chunks, batches, write_request
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
    chunks = _chunks(requests)
    assert [len(c) for c in chunks] == [3, 3]
    assert [pair for chunk in chunks for pair in chunk] == requests
    assert _chunks(requests[::-1]) == [requests[::-1][:4], requests[::-1][4:]]
    huge = (SetNode("n", 1, None), {"request_put": {"value": "x" * BATCH_BYTES * 2}})
    assert _chunks([huge, huge]) == [[huge], [huge]]  # over the budget: alone, still sent


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

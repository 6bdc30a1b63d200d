"""Calico codecs: parsing at the edge, edits that keep every byte rrwatch does not own."""

from __future__ import annotations

import datetime
import ipaddress
import json
import uuid

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrwatch.core import calico, edits
from rrwatch.core.model import CLIENT_LABEL_PREFIX, ClusterState, RRLabel, client_labels
from rrwatch.testing import simulate
from tests import support as s

KEY = calico.NODES + "node-1"


def node_bytes(bgp: object, **metadata: object) -> bytes:
    return json.dumps({"kind": "Node", "metadata": {"name": "node-1", **metadata},
                       "spec": {"bgp": bgp}}).encode()


@given(s.nodes())
def test_node_round_trip(node):
    """A node encoded as Calico stores it parses back to the same model value."""
    parsed = calico.parse_node(calico.NODES + node.name, s.node_json(node), node.revision)
    assert parsed == attrs.evolve(node, asn=64512)


@pytest.mark.parametrize("address", ["10.0.0.1", "10.0.0.1/24"])
def test_ipv4_address_cidr_or_bare(address):
    """spec.bgp.ipv4Address may be a CIDR or a bare IP."""
    node = calico.parse_node(KEY, node_bytes({"ipv4Address": address}), 1)
    assert str(node.ipv4) == "10.0.0.1"


@pytest.mark.parametrize(("value", "reason"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (node_bytes(None), "no spec.bgp"),
    (node_bytes("x"), "bgp is str"),
    (node_bytes({"ipv4Address": "300.1.1.1"}), "not an IP address"),
    (node_bytes({"ipv4Address": "fd00::1"}), "not IPv4"),
    (node_bytes({"asNumber": "sixty"}), "not an AS number"),
    (node_bytes({"asNumber": 2**32}), "out of range"),
    (node_bytes({"asNumber": True}), "not an AS number"),
    (node_bytes({"routeReflectorClusterID": "1.2.3"}), "not an IPv4 address"),
    (node_bytes({}, labels={"a": 1}), "labels must map strings"),
    (json.dumps({"metadata": {"name": "other"}, "spec": {"bgp": {}}}).encode(), "does not match"),
])
def test_bad_node_values_are_rejected_with_a_reason(value, reason):
    """Each kind of malformed node value raises BadRecord naming the key and the reason."""
    with pytest.raises(calico.BadRecord) as error:
        calico.parse_node(KEY, value, 1)
    assert error.value.key == KEY
    assert reason in error.value.reason


@pytest.mark.parametrize(("asn", "expected"), [(64512, 64512), ("64512", 64512), ("1.10", 65546)])
def test_as_number_forms(asn, expected):
    """AS numbers are accepted as numbers, decimal strings and AS-dot notation."""
    assert calico.parse_node(KEY, node_bytes({"asNumber": asn}), 1).asn == expected


def test_nodes_share_one_copy_of_their_repeated_label_strings():
    """Label keys and values that nodes repeat are one string in memory, and so are a node's
    name and the hostname label that repeats it; the labels read the same."""
    values = simulate.nodes("a", range(2))
    a, b = (calico.parse_node(key, value, 1) for key, value in values.items())
    assert a.labels == json.loads(values[calico.NODES + a.name])["metadata"]["labels"]
    assert all(x is y for x, y in zip(a.labels, b.labels, strict=True))
    assert a.labels[simulate.ZONE_LABEL] is b.labels[simulate.ZONE_LABEL]
    assert a.labels["kubernetes.io/hostname"] is a.name


def test_bad_value_removes_the_old_model_entry():
    """A node whose value turns bad leaves the model (rrwatch never acts on unreadable data)."""
    state = ClusterState("", s.RR_LABEL)
    calico.apply(state, KEY, node_bytes({"ipv4Address": "10.0.0.1"}), 1)
    assert "node-1" in state.nodes
    with pytest.raises(calico.BadRecord):
        calico.apply(state, KEY, b"garbage", 2)
    assert "node-1" not in state.nodes


@given(s.nodes(), st.dictionaries(s.label_keys, s.awkward_text, max_size=3), s.label_values)
def test_promote_then_demote_gives_back_the_original_bytes(node, foreign, value):
    """Promotion then demotion (with the client labels it had) restores a Go-encoded node byte
    for byte."""
    label = RRLabel("calico-route-reflector", value)
    client = attrs.evolve(node, cluster_id=None,
                          labels={k: v for k, v in node.labels.items() if k != label.key})
    # A value with both quote characters is a bad record by design (no selector can name it).
    raw = s.node_json(client, extra_labels={k: v for k, v in foreign.items()
                                            if k != label.key and not {"'", '"'} <= set(v)})
    promoted = edits.edit_node(raw, label, "224.0.0.7")
    parsed = calico.parse_node(KEY[: len(calico.NODES)] + node.name, promoted, 2)
    assert parsed.cluster_id == "224.0.0.7" and label.on(parsed)
    assert not client_labels(parsed)
    assert edits.edit_node(promoted, label, None, client_labels(client)) == raw


@given(s.nodes(), st.frozensets(st.sampled_from(["224.0.0.1", "224.0.0.2", "224.0.0.9"])))
def test_client_labels_are_set_exactly_and_nothing_else_changes(node, clusters):
    """A client edit leaves exactly the given client labels; other labels and fields stay."""
    label = RRLabel("calico-route-reflector", "")
    wanted = frozenset(CLIENT_LABEL_PREFIX + c for c in clusters)
    raw = s.node_json(attrs.evolve(node, cluster_id=None))
    parsed = calico.parse_node(calico.NODES + node.name, edits.edit_node(raw, label, None, wanted),
                               2)
    assert client_labels(parsed) == wanted
    assert {k: v for k, v in parsed.labels.items() if k not in wanted and k != label.key} == {
        k: v for k, v in node.labels.items()
        if not k.startswith(CLIENT_LABEL_PREFIX) and k != label.key}
    assert (parsed.ipv4, parsed.ipv6, parsed.cluster_id) == (node.ipv4, node.ipv6, None)


def test_edit_keeps_unknown_fields_and_places_cluster_id_in_go_order():
    """An edit keeps unknown fields where they were, puts the cluster ID where Go does, and
    records the RR label it set in its annotation beside the others."""
    raw = (b'{"kind":"Node","metadata":{"name":"node-1","uid":"u","annotations":{"a":"b"},'
           b'"zzz":1},"spec":{"bgp":{"asNumber":1,"ipv4Address":"10.0.0.1","extra":true},'
           b'"future":{}},"status":{}}')
    edited = edits.edit_node(raw, RRLabel("rr", "true"), "224.0.0.1")
    assert edited == (
        b'{"kind":"Node","metadata":{"name":"node-1","uid":"u","labels":{"rr":"true"},'
        b'"annotations":{"a":"b","rrwatch.io/rr-label":"rr"},"zzz":1},'
        b'"spec":{"bgp":{"asNumber":1,"ipv4Address":"10.0.0.1",'
        b'"extra":true,"routeReflectorClusterID":"224.0.0.1"},"future":{}},"status":{}}'
    )


def test_dumps_escapes_like_go():
    """HTML-sensitive characters and line separators are escaped as Go's encoder does."""
    escaped = b'{"s":"a\\u0026b\\u003cc\\u003e\\u2028\xc3\xa9"}'
    assert edits.dumps({"s": "a&b<c>\u2028é"}) == escaped


@given(st.fixed_dictionaries({}, optional={
    "nodeSelector": st.just("rr == 'x'"), "peerSelector": st.just("rr != 'x'"),
    "peerIP": st.just("10.0.0.5"), "asNumber": st.integers(1, 2**32 - 1)}))
def test_peer_round_trip(spec):
    """A peer rrwatch creates parses back as owned, with the same spec; uid and time set."""
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    raw = edits.new_peer("rrwatch-x", spec, now=now)
    peer = calico.parse_peer(calico.PEERS + "rrwatch-x", raw, 9)
    assert peer.owned and peer.spec == spec and peer.revision == 9
    metadata = json.loads(raw)["metadata"]
    assert metadata["creationTimestamp"] == "2026-01-02T03:04:05Z"
    assert uuid.UUID(metadata["uid"]).version == 4


def test_peer_edit_keeps_fields_others_added():
    """Updating an owned peer changes rrwatch's fields and keeps a password someone added."""
    raw = edits.new_peer("rrwatch-x", {"nodeSelector": "a == 'b'", "peerSelector": "c == 'd'"})
    obj = json.loads(raw)
    obj["spec"]["password"] = {"secretKeyRef": {"name": "bgp", "key": "pw"}}
    edited = json.loads(edits.edit_peer(edits.dumps(obj), {"nodeSelector": "all()",
                                                             "peerIP": "10.0.0.9"}))
    assert edited["spec"] == {"nodeSelector": "all()", "peerIP": "10.0.0.9",
                              "password": {"secretKeyRef": {"name": "bgp", "key": "pw"}}}
    assert edited["metadata"] == obj["metadata"]


def test_unowned_peer_is_not_owned():
    """A BGPPeer without the ownership label is parsed as not owned."""
    raw = b'{"metadata":{"name":"tor","labels":{"team":"net"}},"spec":{"peerIP":"10.0.0.1"}}'
    assert not calico.parse_peer(calico.PEERS + "tor", raw, 1).owned


@pytest.mark.parametrize(("key", "value", "ok"), [
    (calico.RR_V4 + "10.0.0.5", b'{"ip":"10.0.0.5","cluster_id":"224.0.0.1"}', True),
    (calico.RR_V4 + "10.0.0.5", b'{"ip":"10.0.0.5"}', True),
    (calico.RR_V6 + "fd00::5", b'{"ip":"fd00::5","cluster_id":""}', True),
    (calico.RR_V4 + "fd00::5", b'{"ip":"fd00::5"}', False),
    (calico.RR_V4 + "10.0.0.5", b'{"ip":5}', False),
    (calico.RR_V4 + "10.0.0.5", b'{"cluster_id":"224.0.0.1"}', False),
])
def test_registrations(key, value, ok):
    """Seed-004 registrations parse when well-formed and are rejected otherwise."""
    if ok:
        assert calico.parse_reflector(key, value, 1).ip.version == (4 if "rr_v4" in key else 6)
    else:
        with pytest.raises(calico.BadRecord):
            calico.parse_reflector(key, value, 1)


def test_bgp_config_defaults():
    """An absent AS number and mesh flag mean 64512 and mesh on."""
    key = calico.BGP_CONFIG
    config = calico.parse_bgp_config(key, b'{"metadata":{"name":"default"},"spec":{}}', 3)
    assert (config.asn, config.mesh_enabled) == (64512, True)


@pytest.mark.parametrize("value", [
    b'{"metadata":{"name":"n1","labels":{"zone":"\\ud800"}},"spec":{"bgp":{}}}',
    b'{"metadata":{"name":"n1","labels":{"zone":"a\'b\\""}},"spec":{"bgp":{}}}',
])
def test_values_no_writer_or_selector_could_handle_are_bad_records(value):
    """A lone UTF-16 surrogate, or a label value holding both quote characters, is a bad
    record (logged and skipped), not a crash later when writing or rendering selectors."""
    with pytest.raises(calico.BadRecord):
        calico.parse_node(calico.NODES + "n1", value, 1)


@given(st.ip_addresses(), st.one_of(st.none(), st.integers(0, 129)), st.booleans())
def test_the_fast_address_parser_agrees_with_ipaddress(address, prefix, upper):
    """canonical_address answers only for text that ipaddress reads the same way."""
    text = str(address).upper() if upper else str(address)
    text += "" if prefix is None else f"/{prefix}"
    fast = calico.canonical_address(text, address.version)
    if fast is not None:
        assert fast == ipaddress.ip_interface(text).ip


@given(st.text(alphabet="0123456789abcdef:./%", max_size=45))
def test_the_fast_address_parser_refuses_what_ipaddress_refuses(text):
    for version in (4, 6):
        fast = calico.canonical_address(text, version)
        if fast is not None:
            assert fast == ipaddress.ip_interface(text).ip


def test_calicos_addresses_take_the_fast_path():
    value = json.loads(simulate.node_value("node-a-00001", "a", 1))["spec"]["bgp"]
    assert calico.canonical_address(value["ipv4Address"], 4) is not None
    assert calico.canonical_address(value["ipv6Address"], 6) is not None
    assert calico.canonical_address("10.0.0.1/33", 4) is None
    assert calico.canonical_address("010.0.0.1", 4) is None


def test_set_mesh_keeps_every_other_byte_or_makes_the_default_configuration():
    raw = (b'{"kind":"BGPConfiguration","apiVersion":"projectcalico.org/v3","metadata":{"name":'
           b'"default","uid":"5d2e"},"spec":{"logSeverityScreen":"Info","asNumber":64512}}')
    off = edits.set_mesh(raw, False)
    assert off == raw.replace(b'"Info",', b'"Info","nodeToNodeMeshEnabled":false,')
    assert edits.set_mesh(off, True) == off.replace(b"false", b"true")
    made = edits.set_mesh(None, False)
    assert calico.parse_bgp_config(calico.BGP_CONFIG, made, 1).mesh_enabled is False

"""Hypothesis strategies for the pure core: names, labels, nodes, clusters."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from rrwatch.core import calico, edits
from rrwatch.core.model import CLIENT_LABEL_PREFIX, Node, Reflector, RRLabel
from rrwatch.core.policy import Policy

RR_LABEL = RRLabel("calico-route-reflector", "")
ZONE_LABEL = "zone"

names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
label_keys = st.from_regex(r"([a-z]{1,5}\.io/)?[a-z][-a-z0-9_.]{0,8}[a-z0-9]", fullmatch=True)
label_values = st.from_regex(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?)?", fullmatch=True)
# Label values that Go would escape or that JSON must escape, for codec round trips.
awkward_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
zones = st.sampled_from(["", "a", "b", "c", "d"])
cluster_ids = st.sampled_from([None, "224.0.0.1", "224.0.0.2"])
ipv4s = st.builds(ipaddress.IPv4Address, st.integers(1, 2**32 - 2))
ipv6s = st.builds(ipaddress.IPv6Address, st.integers(1, 2**128 - 2))


@st.composite
def nodes(draw, name=names) -> Node:
    labels = draw(st.dictionaries(label_keys, label_values, max_size=4))
    labels.pop(RR_LABEL.key, None)
    zone = draw(zones)
    if zone:
        labels[ZONE_LABEL] = zone
    cluster = draw(cluster_ids)
    if cluster is not None and draw(st.booleans()):
        labels[RR_LABEL.key] = RR_LABEL.value
    if draw(st.integers(0, 9)) == 0:  # a stale `multi` client label
        labels[CLIENT_LABEL_PREFIX + draw(st.sampled_from(["224.0.0.1", "224.0.0.7"]))] = ""
    if draw(st.integers(0, 4)) == 0:
        labels["role"] = draw(st.sampled_from(["rr", "db"]))
    return Node(
        name=draw(name),
        revision=draw(st.integers(1, 10**6)),
        labels=labels,
        ipv4=draw(st.none() | ipv4s),
        ipv6=draw(st.none() | ipv6s),
        cluster_id=cluster,
    )


def clusters(min_size: int = 0, max_size: int = 60) -> st.SearchStrategy[list[Node]]:
    """Nodes with distinct names."""
    return st.lists(nodes(), min_size=min_size, max_size=max_size, unique_by=lambda n: n.name)


@st.composite
def reflectors(draw) -> Reflector:
    """A registered RR host (seed 004), IPv4 or IPv6, with or without a cluster ID."""
    ip = draw(ipv4s | ipv6s)
    key = (calico.RR_V4 if ip.version == 4 else calico.RR_V6) + str(ip)
    cluster = draw(st.sampled_from([None, "224.0.0.1", "10.9.9.9"]))
    return Reflector(key=key, revision=1, ip=ip, cluster_id=cluster)


TOPOLOGIES = st.sampled_from(["simple", "zoned", "multi"])


@st.composite
def policies(draw, topology: st.SearchStrategy[str] = TOPOLOGIES) -> Policy:
    """Policies of every topology; `role` labels drive the prefer and exclude selectors."""
    from rrwatch.core.selector import parse

    low = draw(st.integers(0, 4))
    return Policy(
        rr_label=RR_LABEL,
        ratio=draw(st.sampled_from([0.05, 0.2, 0.5])),
        min_rrs=low,
        max_rrs=draw(st.integers(max(low, 1), 6)),
        topology=draw(topology),
        client_rrs=draw(st.integers(1, 4)),
        exclude=draw(st.sampled_from([None, parse("role == 'db'")])),
        prefer=draw(st.sampled_from([None, parse("role == 'rr'")])),
    )


def node_json(node: Node, *, extra_labels: dict[str, str] | None = None) -> bytes:
    """A node as calico/node would store it, with fields rrwatch does not own."""
    bgp: dict = {"asNumber": 64512}
    if node.ipv4:
        bgp["ipv4Address"] = f"{node.ipv4}/24"
    if node.ipv6:
        bgp["ipv6Address"] = f"{node.ipv6}/64"
    bgp["ipv4IPIPTunnelAddr"] = "192.168.0.1"
    if node.cluster_id:
        bgp["routeReflectorClusterID"] = node.cluster_id
    metadata: dict = {"name": node.name, "uid": "3f1c", "creationTimestamp": "2024-05-01T12:00:00Z"}
    labels = {**node.labels, **(extra_labels or {})}
    if labels:
        metadata["labels"] = dict(sorted(labels.items()))
    return edits.dumps({
        "kind": "Node",
        "apiVersion": "projectcalico.org/v3",
        "metadata": metadata,
        "spec": {"bgp": bgp, "orchRefs": [{"nodeName": node.name, "orchestrator": "k8s"}],
                 "futureField": {"x": [1, 2]}},
        "status": {},
    })


# -- selectors -----------------------------------------------------------------------------------

selector_labels = st.sampled_from(["a", "b", "zone", "x.io/rr", "in", "has", "all"])
selector_values = st.text(st.sampled_from("xy1 -'&"), max_size=4) | st.text(
    st.sampled_from('xy1 -"'), max_size=4)
label_sets = st.dictionaries(selector_labels, st.sampled_from(["", "x", "y1", "x'y", "1 -"]))


def selectors():
    from rrwatch.core import selector as sel

    leaves = st.one_of(
        st.builds(sel.All),
        st.builds(sel.Global),
        st.builds(sel.Has, selector_labels),
        st.builds(sel.Compare, selector_labels,
                  st.sampled_from(["==", "!=", "contains", "starts with", "ends with"]),
                  selector_values),
        st.builds(sel.In, selector_labels, st.frozensets(selector_values, max_size=3),
                  st.booleans()),
    )
    return st.recursive(leaves, lambda inner: st.one_of(
        st.builds(sel.Not, inner),
        st.builds(sel.And, st.tuples(inner, inner)),
        st.builds(sel.Or, st.tuples(inner, inner)),
    ), max_leaves=8)



# -- hostile etcd gateway replies ----------------------------------------------------------------

# The field names the reply decoders look for, so that hostile values land where they are read.
REPLY_FIELDS = ["header", "revision", "kvs", "key", "value", "mod_revision", "create_revision",
                "lease", "more", "responses", "response_range", "succeeded", "ID", "TTL",
                "grantedTTL", "result", "events", "kv", "type", "created", "canceled",
                "compact_revision", "cancel_reason", "error", "message"]


def _b64text(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _nested(value, depth: int, kind: str):
    """`value` inside `depth` arrays or objects, built without recursion."""
    for _ in range(depth):
        value = [value] if kind == "array" else {"header": value, "kvs": value, "result": value}
    return value


def hostile_scalars():
    """Leaves a gateway should never send: huge integers, digit strings past int64 or past
    Python's int-digits limit, digits that are not ASCII, non-base64 text, floats, NaN."""
    return st.one_of(
        st.none(), st.booleans(), st.floats(), st.integers(),
        st.integers(18, 5000).map(lambda n: 10**n - 1),
        st.integers(18, 5000).map(lambda n: "9" * n),
        st.sampled_from(["²", "١٢", "٣", " 12", "12\n", "1_000", "-0", "0x10", "PUT", "DELETE",
                         "%%%%", "L2E=", "L2E", "====", "", "true", "false"]),
        st.text(max_size=12),
        st.binary(max_size=12).map(_b64text),
    )


def shallow_json():
    """JSON values shaped like etcd's replies or not, with hostile leaves."""
    return st.recursive(
        hostile_scalars(),
        lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(REPLY_FIELDS) | st.text(max_size=4), inner,
                          max_size=6),
        max_leaves=24,
    )


def hostile_json():
    """Any JSON value a gateway could send, up to 100,000 deep."""
    deep = st.builds(_nested, shallow_json(), st.integers(100, 100_000),
                     st.sampled_from(["array", "object"]))
    return shallow_json() | deep


def _dumped(value) -> bytes:
    import json

    try:
        return json.dumps(value).encode()
    except ValueError:  # an integer too long to print
        return b"9" * 5000


def _deep_text(depth: int, opener: bytes, closer: bytes) -> bytes:
    return opener * depth + closer * depth


def hostile_bytes():
    """Bytes a gateway could send as a reply or a watch line: garbage, JSON nested up to
    200,000 deep, integers past Python's int-digits limit, and etcd-shaped JSON with hostile
    values."""
    return st.one_of(
        st.binary(max_size=64),
        st.builds(_deep_text, st.integers(1, 200_000),
                  st.sampled_from([b"[", b'{"result":', b'{"a":[']), st.sampled_from([b"]", b"}"])),
        st.integers(4000, 6000).map(lambda n: b'{"result":{"header":{"revision":%s}}}'
                                    % (b"9" * n)),
        shallow_json().map(_dumped),
    )

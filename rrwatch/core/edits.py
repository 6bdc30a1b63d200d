"""The records rrwatch writes: node edits and BGPPeers, with every byte it does not own kept
and Calico's field order followed."""

from __future__ import annotations

import datetime
import ipaddress
import json
import uuid
from collections.abc import Mapping
from typing import Any

from rrwatch.core.calico import LABEL_ANNOTATION, OWNER_LABEL, PEER_FIELDS
from rrwatch.core.model import (
    RRLabel,
    host_key,
    owned_labels,
)
from rrwatch.core.plan import DeletePeer, Op, PutPeer, SetNode

# Go struct field order, for inserting a field where Go's encoder would have put it.
_METADATA_ORDER = (
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields",
)
_NODE_BGP_ORDER = (
    "asNumber", "ipv4Address", "ipv6Address", "ipv4IPIPTunnelAddr", "routeReflectorClusterID",
)
_BGP_CONFIG_SPEC_ORDER = ("logSeverityScreen", "nodeToNodeMeshEnabled", "asNumber")
_PEER_SPEC_ORDER = (
    "node", "nodeSelector", "peerIP", "asNumber", "localASNumber", "peerSelector",
    "keepOriginalNextHop", "nextHopMode", "password", "sourceAddress", "maxRestartTime",
    "keepaliveTime", "numAllowedLocalASNumbers", "ttlSecurity", "reachableBy", "filters",
    "localWorkloadSelector", "reversePeering",
)


# -- writing -------------------------------------------------------------------------------------


def dumps(obj: Any) -> bytes:
    """JSON as Go's encoding/json writes it (given dicts already in Go's field order)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text.encode()


def _ordered_set(
    obj: dict[str, Any], field: str, value: Any, order: tuple[str, ...]
) -> dict[str, Any]:
    """`obj` with `field` set, placed where Go's struct order puts it; unknown fields keep
    their places."""
    if field in obj:
        return {**obj, field: value}
    rank = order.index(field)
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if field not in out and k in order and order.index(k) > rank:
            out[field] = value
        out[k] = v
    out.setdefault(field, value)
    return out


def _with_map(metadata: dict[str, Any], field: str, values: dict[str, str]) -> dict[str, Any]:
    """`metadata` with a string map (labels, annotations) set as Go writes it, or omitted when
    empty."""
    if not values:
        return {k: v for k, v in metadata.items() if k != field}
    return _ordered_set(metadata, field, dict(sorted(values.items())), _METADATA_ORDER)


def edit_node(
    raw: bytes, label: RRLabel, cluster: str | None, clients: frozenset[str] = frozenset()
) -> bytes:
    """Set the fields rrwatch owns on a node: a route reflector gets `cluster` and the RR label,
    a client neither; either way its client labels become exactly `clients`."""
    obj = json.loads(raw)
    metadata = obj.get("metadata") or {}
    annotations = dict(metadata.get("annotations") or {})
    labels = owned_labels(metadata.get("labels") or {}, label, cluster, clients,
                          annotations.pop(LABEL_ANNOTATION, None))
    if cluster is not None:
        annotations[LABEL_ANNOTATION] = label.key
    metadata = _with_map(metadata, "labels", labels)
    obj["metadata"] = _with_map(metadata, "annotations", annotations)
    spec = obj.get("spec") or {}
    bgp = dict(spec.get("bgp") or {})
    if cluster is None:
        bgp.pop("routeReflectorClusterID", None)
    else:
        bgp = _ordered_set(bgp, "routeReflectorClusterID", cluster, _NODE_BGP_ORDER)
    if bgp:
        obj["spec"] = {**spec, "bgp": bgp}
    else:  # Calico's API refuses a present-but-empty spec.bgp: an RR without an address
        obj["spec"] = {k: v for k, v in spec.items() if k != "bgp"}
    return dumps(obj)


def written(op: Op, current: bytes | None, rr_label: RRLabel) -> bytes | None:
    """The value `op` leaves at its key, from the record as it is (`current`, for an op that
    edits a stored one); None for a delete."""
    if isinstance(op, DeletePeer):
        return None
    if isinstance(op, PutPeer) and op.revision is None:
        return new_peer(op.name, op.spec)
    if current is None:
        raise ValueError(f"{op} edits a record, and none was given")
    if isinstance(op, SetNode):
        return edit_node(current, rr_label, op.cluster, op.clients)
    return edit_peer(current, op.spec)


def _peer_spec(base: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in base.items() if k not in PEER_FIELDS}
    for field in PEER_FIELDS:
        if field in spec:
            out = _ordered_set(out, field, spec[field], _PEER_SPEC_ORDER)
    return out


def new_peer(name: str, spec: Mapping[str, Any], *, now: datetime.datetime | None = None) -> bytes:
    """A BGPPeer that rrwatch owns, with the uid and creationTimestamp Calico's API would set."""
    now = now or datetime.datetime.now(datetime.UTC)
    metadata = {
        "name": name,
        "uid": str(uuid.uuid4()),
        "creationTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "labels": dict([OWNER_LABEL]),
    }
    return dumps({
        "kind": "BGPPeer",
        "apiVersion": "projectcalico.org/v3",
        "metadata": metadata,
        "spec": _peer_spec({}, spec),
    })


def edit_peer(raw: bytes, spec: Mapping[str, Any]) -> bytes:
    """An owned BGPPeer with rrwatch's fields set to `spec`; everything else kept."""
    obj = json.loads(raw)
    obj["spec"] = _peer_spec(obj.get("spec") or {}, spec)
    return dumps(obj)


def set_mesh(raw: bytes | None, enabled: bool) -> bytes:
    """The default BGPConfiguration (`raw`, or a new one) with the node-to-node mesh on or off;
    every other field kept."""
    if raw is None:
        obj: dict[str, Any] = {"kind": "BGPConfiguration", "apiVersion": "projectcalico.org/v3",
                               "metadata": {"name": "default"}, "spec": {}}
    else:
        obj = json.loads(raw)
    obj["spec"] = _ordered_set(obj.get("spec") or {}, "nodeToNodeMeshEnabled", enabled,
                               _BGP_CONFIG_SPEC_ORDER)
    return dumps(obj)


def registration(ip: str, cluster: str = "") -> tuple[str, bytes]:
    """The key and value that register an RR host (seed 004's format)."""
    address = ipaddress.ip_address(ip)
    key = host_key(address)
    obj = {"ip": str(address)}
    if cluster:
        obj["cluster_id"] = cluster
    return key, dumps(obj)

"""Calico's v3 validation, for the records rrwatch writes. Pure code.

calicoctl and Calico's API run these checks (libcalico-go `lib/validator/v3`); a direct etcd
write skips them. A record that fails them is one calicoctl refuses to update afterwards, so
rrwatch never writes one: the write path holds every value to the rules that apply to it.

- metadata: the name a DNS-1123 subdomain; labels as Kubernetes has them (qualified-name keys,
  values of at most 63 characters).
- Node: `spec.bgp` not present-but-empty; `routeReflectorClusterID` a dotted-quad IPv4.
- BGPPeer: selectors of at most 1024 characters that Calico's parser reads; not both `node` and
  `nodeSelector`, not both `peerIP` and `peerSelector`, no `asNumber` with `peerSelector`;
  `peerIP` an address, `ip:port` or `[ip]:port`; `asNumber` a 32-bit AS number.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from rrwatch.core import calico
from rrwatch.core.bgp_peers import peer_address
from rrwatch.core.decoding import BadRecord
from rrwatch.core.selector import SelectorError, parse
from rrwatch.core.validate import is_node_name

_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")  # Kubernetes' name part
MAX_SELECTOR = 1024
MAX_AS = 2**32 - 1


def problems(key: str, value: bytes | str | Mapping[str, Any]) -> list[str]:
    """Why Calico's API would refuse the record `value` at `key` (none: it would take it)."""
    obj = json.loads(value) if isinstance(value, (bytes, str)) else value
    if not isinstance(obj, Mapping):
        return ["not a JSON object"]
    found = list(_metadata(obj.get("metadata")))
    spec = obj.get("spec")
    if key.startswith(calico.NODES):
        found += _node(spec)
    elif key.startswith(calico.PEERS):
        found += _peer(spec)
    return found


def introduced(key: str, before: bytes | None, after: bytes) -> list[str]:
    """The problems `after` has that the record it replaces (`before`, None if new) had not:
    what others wrote wrong is theirs, and rrwatch never changes what it does not own."""
    old = set(problems(key, before)) if before is not None else set()
    return [p for p in problems(key, after) if p not in old]


def name_problems(name: object) -> Iterator[str]:
    if not isinstance(name, str) or not is_node_name(name):  # Calico's nameRegex
        yield f"name {name!r} is not a DNS-1123 subdomain (lower-case, digits, '-', '.')"


def label_problems(key: str, value: object) -> Iterator[str]:
    """Kubernetes' IsQualifiedName for the key, IsValidLabelValue for the value."""
    prefix, _, name = key.rpartition("/")
    if ("/" in key and not is_node_name(prefix)) or (
            len(name) > 63 or not _QUALIFIED.fullmatch(name)):
        yield f"label key {key!r} is not a qualified name"
    if not isinstance(value, str) or len(value) > 63 or (
            value and not _QUALIFIED.fullmatch(value)):
        yield f"label {key!r}: value {value!r} is not a valid label value"


def _metadata(metadata: object) -> Iterator[str]:
    if not isinstance(metadata, Mapping):
        yield "metadata is missing"
        return
    yield from name_problems(metadata.get("name"))
    labels = metadata.get("labels") or {}
    if not isinstance(labels, Mapping):
        yield "metadata.labels is not a map"
        return
    for key, value in labels.items():
        yield from label_problems(key, value)


def _node(spec: object) -> Iterator[str]:
    if not isinstance(spec, Mapping) or "bgp" not in spec:
        return
    bgp = spec["bgp"]
    if not isinstance(bgp, Mapping) or not bgp:
        yield "spec.bgp is present but empty (Calico wants the key left out)"
        return
    cluster = bgp.get("routeReflectorClusterID")
    if cluster is not None and not _dotted_quad(cluster):
        yield f"routeReflectorClusterID {cluster!r} is not a dotted-quad IPv4 address"


def _peer(spec: object) -> Iterator[str]:
    if not isinstance(spec, Mapping):
        yield "spec is missing"
        return
    for field in ("nodeSelector", "peerSelector"):
        text = spec.get(field)
        if text is None:
            continue
        if not isinstance(text, str) or len(text) > MAX_SELECTOR:
            yield f"{field} is longer than {MAX_SELECTOR} characters"
            continue
        try:
            parse(text)
        except SelectorError as e:
            yield f"{field} {text!r} does not parse: {e}"
    if spec.get("node") and spec.get("nodeSelector"):
        yield "node and nodeSelector are both set"
    if spec.get("node"):
        yield from (f"node: {p}" for p in name_problems(spec["node"]))
    if spec.get("peerIP") and spec.get("peerSelector"):
        yield "peerIP and peerSelector are both set"
    if spec.get("asNumber") and spec.get("peerSelector"):
        yield "asNumber is set with peerSelector"
    asn = spec.get("asNumber")
    if asn is not None and (isinstance(asn, bool) or not isinstance(asn, int)
                            or not 0 <= asn <= MAX_AS):
        yield f"asNumber {asn!r} is not an AS number"
    if spec.get("peerIP") and not _peer_ip(spec["peerIP"]):
        yield f"peerIP {spec['peerIP']!r} is not an address, ip:port or [ip]:port"


def _dotted_quad(text: object) -> bool:
    """As the model reads a cluster ID (`calico.cluster_id`), and written as it reads it."""
    try:
        return calico.cluster_id("", text) == text
    except BadRecord:
        return False


def _peer_ip(text: object) -> bool:
    try:
        return isinstance(text, str) and bool(peer_address(text))
    except ValueError:
        return False

"""Calico's etcd key layout and JSON codecs: etcd bytes become model values here, and only here.

Writes edit the stored JSON rather than re-encoding a model, so every field rrwatch does not own
(uid, creationTimestamp, other people's labels, fields of newer Calico versions) survives as it was.
Output follows Go's encoder (compact, struct order, sorted map keys, HTML-safe escapes) so that
an edit changes only the bytes it means to.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any

from rrwatch.core.decoding import BadRecord, BirdRefuses, json_object, reading
from rrwatch.core.model import (
    DEFAULT_AS,
    BgpConfig,
    ClusterState,
    IPAddress,
    Node,
    Peer,
    Reflector,
)

RESOURCES = "/calico/resources/v3/projectcalico.org/"
NODES = RESOURCES + "nodes/"
PEERS = RESOURCES + "bgppeers/"
BGP_CONFIG = RESOURCES + "bgpconfigurations/default"
RR_V4 = "/calico/bgp/v1/rr_v4/"
RR_V6 = "/calico/bgp/v1/rr_v6/"

# The key ranges rrwatch watches, as prefixes. Few and narrow: Calico's busy keys (IPAM blocks,
# workload endpoints, felix status) fall outside all of them.
WATCHED_PREFIXES = (NODES, RESOURCES + "bgp", "/calico/bgp/v1/rr_v")

OWNER_LABEL = ("app.kubernetes.io/managed-by", "rrwatch")
# A BGPPeer is rrwatch's only with both its name prefix and OWNER_LABEL: a peer copied from a
# manifest with the label alone (a ToR uplink) is someone else's, and is reported, not deleted.
OWNED_PEER_PREFIX = "rrwatch-"
# The node annotation that records which RR label key rrwatch set on a node: a label is only
# ever removed where rrwatch wrote it, so a changed or deleted policy cannot destroy the values
# of another writer who uses the same key.
LABEL_ANNOTATION = "rrwatch.io/rr-label"

# The BGPPeer spec fields that decide sessions: read from every peer, and set exactly on the
# peers rrwatch owns (reversePeering is always left unset there: Calico's default, Auto).
# Any other field someone adds to an owned peer (a password, timers) stays.
PEER_FIELDS = ("node", "nodeSelector", "peerIP", "asNumber", "peerSelector", "reversePeering")


# -- reading -------------------------------------------------------------------------------------


def apply(state: ClusterState, key: str, value: bytes | None, revision: int) -> None:
    """Apply one put (value) or delete (None) to the model; raise BadRecord for a bad value.

    A bad value also removes what the model held for that key: rrwatch never acts on a record
    it cannot read, and the record itself stays untouched in etcd.
    """
    route = _route(state, key)
    if route is None:
        return  # a key in a watched range that rrwatch does not read
    parse, put, remove = route
    state.unreadable.discard(key)
    state.bird_refuses.pop(key, None)
    if value is None:
        remove()
        return
    try:
        with reading(key):
            parsed = parse(key, value, revision)
    except BadRecord as e:
        # The defaults are no stand-in for an unreadable BGPConfiguration: they would change
        # every peer's AS. The last good one stays, and AS-dependent writes wait.
        state.bgp_unreadable() if key == BGP_CONFIG else remove()
        state.unreadable.add(key)
        if isinstance(e, BirdRefuses):
            state.bird_refuses[key] = e.reason
        raise
    put(parsed)


def _route(
    state: ClusterState, key: str
) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]] | None:
    """The parser for a key, and how to put or remove its value in the model."""
    if key.startswith(NODES):
        return parse_node, state.put_node, functools.partial(state.remove_node, key[len(NODES):])
    if key.startswith(PEERS):
        return parse_peer, state.put_peer, functools.partial(state.remove_peer, key[len(PEERS):])
    if key == BGP_CONFIG:
        return parse_bgp_config, state.set_bgp, functools.partial(state.set_bgp, None)
    if key.startswith((RR_V4, RR_V6)):
        return parse_reflector, state.put_reflector, functools.partial(state.remove_reflector, key)
    return None


def _field(key: str, obj: Mapping[str, Any], name: str, kind: type, default: Any) -> Any:
    value = obj.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRecord(key, f"{name} is {type(value).__name__}, not {kind.__name__}")
    return value


def _resource(
    key: str, value: bytes, prefix: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The metadata, spec and labels of a v3 resource, checked against its key."""
    obj = json_object(key, value)
    metadata = _field(key, obj, "metadata", dict, {})
    spec = _field(key, obj, "spec", dict, {})
    name = metadata.get("name")
    if name != key[len(prefix):]:
        raise BadRecord(key, f"metadata.name {name!r} does not match the key")
    labels = _field(key, metadata, "labels", dict, {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise BadRecord(key, "labels must map strings to strings")
    for k, v in labels.items():
        if "'" in v and '"' in v:  # no selector could name it (nor does Kubernetes allow it)
            raise BadRecord(key, f"label {k} has a value with both quote characters")
    return metadata, spec, labels


def as_number(key: str, value: Any) -> int | None:
    """Calico's numorstring.ASNumber: a number, a decimal string or AS-dot notation."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        asn = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        asn = int(value)
    elif isinstance(value, str) and (dot := _AS_DOT.fullmatch(value)):
        high, low = int(dot[1]), int(dot[2])
        asn = high << 16 | low if high < 65536 and low < 65536 else -1
    else:
        raise BadRecord(key, f"asNumber {value!r} is not an AS number")
    if not 0 <= asn < 2**32:
        raise BadRecord(key, f"asNumber {value!r} is out of range")
    return asn


# ASCII digits only: str.isdigit() takes "²" and Arabic-Indic digits, which Calico refuses.
_DIGITS = re.compile(r"[0-9]{1,10}")
_AS_DOT = re.compile(r"([0-9]{1,5})\.([0-9]{1,5})")


def _address(key: str, field: str, value: Any, version: int) -> Any:
    """A BGP address: CIDR or bare IP of the given version, as a string; empty means none."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):  # ipaddress would take an integer; Calico takes a string
        raise BadRecord(key, f"{field} is {type(value).__name__}, not a string")
    address = canonical_address(value, version)
    if address is not None:
        return address
    try:
        address = ipaddress.ip_interface(value).ip
    except (TypeError, ValueError):
        raise BadRecord(key, f"{field} {value!r} is not an IP address") from None
    if address.version != version:
        raise BadRecord(key, f"{field} {value!r} is not IPv{version}")
    return address


_FAMILIES: dict[int, tuple[socket.AddressFamily, type[IPAddress], int]] = {
    4: (socket.AF_INET, ipaddress.IPv4Address, 32),
    6: (socket.AF_INET6, ipaddress.IPv6Address, 128)}


def canonical_address(text: str, version: int) -> IPAddress | None:
    """The address in a CIDR or bare IP written in canonical form, as Calico writes it, parsed
    in C: ipaddress takes ten times as long, which shows on a 50,000-node snapshot. None for any
    other text; ipaddress then decides."""
    family, kind, bits = _FAMILIES[version]
    ip, slash, prefix = text.partition("/")
    if slash and not (prefix.isascii() and prefix.isdigit() and int(prefix) <= bits):
        return None
    try:
        packed = socket.inet_pton(family, ip)
    except (OSError, ValueError):
        return None
    return kind(packed) if socket.inet_ntop(family, packed) == ip else None


def cluster_id(key: str, value: Any) -> str | None:
    """A cluster ID: an IPv4 address in dotted form; empty means none."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadRecord(key, f"cluster ID {value!r} is not a string")
    try:
        return str(ipaddress.IPv4Address(value))
    except (TypeError, ValueError):
        raise BadRecord(key, f"cluster ID {value!r} is not an IPv4 address") from None


def _node_cluster_id(key: str, value: Any) -> str | None:
    try:
        return cluster_id(key, value)
    except BadRecord as e:
        raise BirdRefuses(key, e.reason) from None


@functools.lru_cache(maxsize=4096)
def _shared(text: str) -> str:
    """`text`, or an equal string met lately: one copy of the label keys and values that most
    nodes repeat (a zone, an instance type), and of a node's name and its hostname label.

    A few thousand strings at most, unlike sys.intern: Python 3.12 never frees interned strings,
    so interning the names of nodes that come and go would leak.
    """
    return text


def parse_node(key: str, value: bytes, revision: int) -> Node:
    metadata, spec, labels = _resource(key, value, NODES)
    bgp = _field(key, spec, "bgp", dict, None)
    if bgp is None:
        raise BadRecord(key, "no spec.bgp")
    annotations = _field(key, metadata, "annotations", dict, {})
    return Node(
        name=_shared(key[len(NODES):]),
        revision=revision,
        labels={_shared(k): _shared(v) for k, v in labels.items()},
        ipv4=_address(key, "ipv4Address", bgp.get("ipv4Address"), 4),
        ipv6=_address(key, "ipv6Address", bgp.get("ipv6Address"), 6),
        asn=as_number(key, bgp.get("asNumber")),
        cluster_id=_node_cluster_id(key, bgp.get("routeReflectorClusterID")),
        rr_label=_field(key, annotations, LABEL_ANNOTATION, str, None),
    )


def parse_peer(key: str, value: bytes, revision: int) -> Peer:
    _, spec, labels = _resource(key, value, PEERS)
    owner_key, owner_value = OWNER_LABEL
    name = key[len(PEERS):]
    labelled = labels.get(owner_key) == owner_value
    return Peer(
        name=name,
        revision=revision,
        owned=labelled and name.startswith(OWNED_PEER_PREFIX),
        spec={field: spec[field] for field in PEER_FIELDS if field in spec},
        disowned=labelled and not name.startswith(OWNED_PEER_PREFIX),
    )


def parse_bgp_config(key: str, value: bytes, revision: int) -> BgpConfig:
    _, spec, _ = _resource(key, value, RESOURCES + "bgpconfigurations/")
    asn = as_number(key, spec.get("asNumber"))
    return BgpConfig(
        asn=DEFAULT_AS if asn is None else asn,
        mesh_enabled=_field(key, spec, "nodeToNodeMeshEnabled", bool, True),
        revision=revision,
    )


def parse_reflector(key: str, value: bytes, revision: int) -> Reflector:
    obj = json_object(key, value)
    version = 4 if key.startswith(RR_V4) else 6
    ip: IPAddress = _address(key, "ip", _field(key, obj, "ip", str, None), version)
    if ip is None:
        raise BadRecord(key, "no ip")
    if key[len(RR_V4):] != str(ip):  # one key per address, so one address is never two hosts
        raise BadRecord(key, f"ip {str(ip)!r} is not the key's address in canonical form")
    return Reflector(
        key=key,
        revision=revision,
        ip=ip,
        cluster_id=cluster_id(key, _field(key, obj, "cluster_id", str, None)),
    )

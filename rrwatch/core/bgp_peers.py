"""A BGPPeer as confd reads it: which nodes it applies to, what it peers with (nodes, or an
address and port), its AS and whether the far end peers back. Pure code."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Set

import attrs

from rrwatch.core import calico
from rrwatch.core.model import IPAddress


@attrs.frozen
class ByIP:
    """A peerIP peering of one node: the address, its port (None: 179), the AS, the BGPPeer,
    and whether the node at that address peers back (confd's automatic reverse peering)."""

    address: IPAddress
    port: int | None
    asn: int | None
    peer: str
    reverse: bool


def ends(
    spec: Mapping[str, object], select: Callable[[str], frozenset[str]], names: Set[str]
) -> tuple[frozenset[str], frozenset[str], tuple[IPAddress, int | None] | None, int | None,
           bool]:
    """A BGPPeer's nodes, the nodes or the address (and port) they peer with, its AS, and
    whether the far end peers back. As confd reads it: `nodeSelector` wins over `node`, a
    non-empty `peerSelector` over `peerIP` (Calico's API refuses both, a direct write need not)."""
    node, node_selector = _text(spec, "node"), _text(spec, "nodeSelector")
    peer_selector, peer_ip = _text(spec, "peerSelector"), _text(spec, "peerIP")
    if node_selector:
        local = select(node_selector)
    elif node:
        local = frozenset(n for n in (node,) if n in names)
    else:
        local = frozenset(names)  # a global peer
    remote = select(peer_selector) if peer_selector else frozenset()
    endpoint = peer_endpoint(peer_ip) if peer_ip and not peer_selector else None
    reverse = _text(spec, "reversePeering") != "Manual"
    asn = calico.as_number("asNumber", spec.get("asNumber"))
    return local, remote, endpoint, asn, reverse


def _text(spec: Mapping[str, object], field: str) -> str:
    """A string field; absent and empty are the same, as for Go's omitempty."""
    value = spec.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{field} is not a string: {value!r}")
    return value


def peer_endpoint(text: str) -> tuple[IPAddress, int | None]:
    """A peerIP: `a.b.c.d`, `a.b.c.d:port` or `[v6]:port`, as (address, port or None)."""
    try:
        return ipaddress.ip_address(text), None
    except ValueError:
        pass
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port[1:] if port.startswith(":") else "?"
    else:
        host, _, port = text.rpartition(":")
    if port.isdigit() and 0 < int(port) < 65536:
        try:
            return ipaddress.ip_address(host), int(port)
        except ValueError:
            pass
    raise ValueError(f"peerIP {text!r} is not an address, address:port or [address]:port")


def peer_address(text: str) -> IPAddress:
    """The address of a peerIP (`peer_endpoint` without the port)."""
    return peer_endpoint(text)[0]

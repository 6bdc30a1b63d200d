"""What a BGP session needs before it may reach BIRD: pure checks of AS numbers and addresses.

BIRD refuses a whole configuration over one bad neighbour, so one node with a bad value would
freeze every session of the speaker that renders it. These checks run first, per neighbour.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

AS_TRANS = 23456  # RFC 6793: a placeholder for 4-byte AS numbers, never a real peer's AS

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# A Calico node's name: a DNS subdomain, as Kubernetes names nodes.
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_node_name(text: str) -> bool:
    return len(text) <= 253 and _NODE_NAME.fullmatch(text) is not None


def asn_problem(asn: int | None) -> str | None:
    """Why `asn` cannot be a BGP neighbour's AS, or None."""
    if asn is None:
        return None  # the global AS applies
    if not 1 <= asn < 2**32:
        return f"AS {asn} is outside 1..4294967295"
    if asn == AS_TRANS:
        return f"AS {asn} is AS_TRANS, not a real AS"
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why `ip` cannot be a BGP neighbour address, or None: unicast, and reachable beyond
    the link (BIRD's multihop sessions need an address routed like any other)."""
    if ip.version == 6 and ip.scope_id is not None:
        return f"{ip} has a zone index"  # link-bound, and the zone is free text
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is link-local"
    if ip.is_multicast:
        return f"{ip} is multicast"
    if ip.version == 4 and (ip in _V4_NOT_UNICAST or ip.is_reserved):
        return f"{ip} is not a unicast address"
    return None


_V4_NOT_UNICAST = ipaddress.IPv4Network("0.0.0.0/8")


def speaker_problem(asn: int | None, ips: tuple[IPAddress | None, ...]) -> str | None:
    """Why a speaker with this AS and these addresses cannot have sessions, or None."""
    return asn_problem(asn) or next(
        (p for ip in ips if ip is not None and (p := address_problem(ip))), None)


def claim_problems(claims: Iterable[tuple[str, IPAddress]], owners: Mapping[IPAddress, str]
                   ) -> dict[str, str]:
    """Why each claimant cannot have the address it claims, for those that cannot, by name.

    An address in `owners` is its owner's (a registered RR host keeps its own address). An
    address that two claimants claim is neither's: nothing in the records says which one is
    right, and a session given to either might reach the other.
    """
    first: dict[IPAddress, str] = {}
    out: dict[str, str] = {}
    for name, ip in claims:
        if ip in owners:
            out[name] = f"{ip} is the address of {owners[ip]}"
        elif (other := first.setdefault(ip, name)) != name:
            out.setdefault(name, f"{ip} is claimed by {other!r} too")
            out.setdefault(other, f"{ip} is claimed by {name!r} too")
    return out

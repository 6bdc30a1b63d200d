"""What a BGP session needs before it may reach BIRD: pure checks of AS numbers and addresses.

BIRD refuses a whole configuration over one bad neighbour, so one node with a bad value would
freeze every session of the speaker that renders it. These checks run first, per neighbour.
"""

from __future__ import annotations

import ipaddress

AS_TRANS = 23456  # RFC 6793: a placeholder for 4-byte AS numbers, never a real peer's AS

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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

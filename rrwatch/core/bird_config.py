"""RR host mode: the local BIRD 2 route reflector's configuration, kept in step with the model.

Rendering is pure. The sessions are the ones `verify` simulates for a registered host: every node
whose BGPPeers point at one of the host's registered addresses, and every other registered host.
A neighbour is an `rr client` unless it has the host's own cluster ID, as Calico's template
decides on the node side (calico-datastore.md); `rr cluster id` goes on client sessions only.
Every session has `add paths on`, as Calico's have: the host passes on every path it holds, as
`verify` models it.

Every neighbour is checked before it is rendered (`verify.host_refusals`): BIRD refuses a whole
configuration over one bad neighbour, so a node with AS 0 or a link-local address would
otherwise freeze the host's sessions with every node. A node that fails gets no session, is
named in the log once per change and counted in the metrics, and blocks nobody else. Two nodes
that claim one address both fail (which one is right cannot be told), and a node that claims
the host's own registered address never takes it over.

Applying is I/O: write a temporary file beside the target, check it with `bird -p -c`, rename it
into place, and ask BIRD to load it through its control socket. A file BIRD rejects is never
renamed into place, so BIRD keeps running the last good one. The control socket also gives the
session states, for metrics and `rrwatch status`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping, Sequence

import attrs

from rrwatch.core.model import ClusterState
from rrwatch.core.sessions import HOST_PREFIX, Speaker, fabric

log = logging.getLogger("rrwatch.bird")

# The whole template, in one place. Protocol blocks depend only on their own neighbour, so a
# reload restarts the sessions that changed and no others.
HEADER = """\
# Written by rrwatch for the route reflector at {addresses}.
# Do not edit: rrwatch rewrites this file whenever the mesh in etcd changes.
{router_id}
{include}
protocol device {{
}}

# Connected and kernel routes, so that the next hops of reflected routes resolve.
protocol direct {{
  ipv4;
  ipv6;
}}
"""
FAMILY = """
protocol kernel kernel{family} {{
  learn;
  ipv{family} {{ import all; export none; }};
}}

template bgp rrwatch_v{family} {{
  local {address} as {asn};
  connect delay time 2;
  connect retry time 5;
  error wait time 5, 30;
  ipv{family} {{ import all; export where source = RTS_BGP; add paths on; }};
}}
"""
SESSION = """
protocol bgp {name} from rrwatch_v{family} {{
  description "{description}";
  neighbor {address} as {asn};{client}
}}
"""
CLIENT = "\n  rr client;"
CLUSTER_ID = "\n  rr cluster id {cluster};"


@attrs.frozen
class Rendering:
    """The host's BIRD configuration, its sessions, and the neighbours refused a session."""

    text: str
    sessions: tuple[Session, ...]
    refused: Mapping[str, str]  # neighbour (node name, or host/<ip>) -> why it has no session


@attrs.frozen
class Session:
    """One BGP session of the host, as rendered."""

    protocol: str
    family: int
    address: str
    asn: int
    description: str
    client: bool


def protocol_name(address: str) -> str:
    """A BIRD symbol for the session with `address`: peer4_10_0_0_1, peer6_fd00__1."""
    version = ipaddress.ip_address(address).version
    return f"peer{version}_" + re.sub(r"[.:]", "_", address)


def sessions(state: ClusterState, addresses: Sequence[str]
             ) -> tuple[dict[str, str], list[Session], dict[str, str]]:
    """The host's registrations found in `state` (address -> cluster ID or ""), its sessions,
    and the neighbours it refuses (name -> why).

    Only registered addresses count: the nodes peer with what etcd holds, so a registration not
    seen yet (or gone) has no sessions. Every neighbour address is one speaker's alone: a host
    keeps its own, and two nodes that claim one address are both refused.
    """
    registered = {str(r.ip): r.cluster_id or "" for r in state.reflectors.values()}
    found = {a: registered[a] for a in addresses if a in registered}
    out = []
    refused: dict[str, str] = {}
    for address in found:
        family = ipaddress.ip_address(address).version
        fab = fabric(state, family, hosts_only=True)
        me = fab.speakers[HOST_PREFIX + address]
        refused.update(fab.refused[me.name])
        for name in sorted(fab.sessions[me.name], key=lambda n: (fab.speakers[n].address, n)):
            peer = fab.speakers[name]
            out.append(Session(
                protocol_name(str(peer.address)), family, str(peer.address), peer.asn,
                _description(peer), _is_client(me, peer)))
    return found, out, refused


def _description(peer: Speaker) -> str:
    if peer.node:  # nothing that changes: a reload would restart the session
        return "node " + re.sub(r'[^A-Za-z0-9._-]', "?", peer.name)  # a name is not BIRD syntax
    return f"RR host {peer.name.removeprefix(HOST_PREFIX)}"


def _is_client(me: Speaker, peer: Speaker) -> bool:
    """Calico's rule, with the host knowing every cluster ID: same AS, other cluster ID."""
    return peer.asn == me.asn and peer.cluster_id != me.cluster_id


def render(state: ClusterState, addresses: Sequence[str], include: str = ""
           ) -> Rendering | None:
    """The BIRD configuration for the RR host at `addresses`, its sessions and the neighbours
    it refuses; None while no address is registered."""
    found, peers, refused = sessions(state, addresses)
    if not found:
        return None
    v4 = [a for a in found if ipaddress.ip_address(a).version == 4]
    parts = [HEADER.format(
        addresses=", ".join(found),
        router_id=f"router id {v4[0]};" if v4 else "# router id: chosen by BIRD (no IPv4)",
        include=f'include "{include}";\n' if include else "",
    )]
    for address, cluster in found.items():
        family = ipaddress.ip_address(address).version
        parts.append(FAMILY.format(family=family, address=address, asn=state.bgp.asn))
        for s in (s for s in peers if s.family == family):
            client = (CLIENT + (CLUSTER_ID.format(cluster=cluster) if cluster else "")
                      if s.client else "")
            parts.append(SESSION.format(name=s.protocol, family=family, address=s.address,
                                        asn=s.asn, description=s.description, client=client))
    return Rendering("".join(parts), tuple(peers), refused)

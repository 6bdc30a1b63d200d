"""The node side, as Calico configures it: BIRD configurations for Calico nodes, rendered from
the records in etcd the way confd's template does (calico-datastore.md, confd's bird.cfg.template
and its peer computation), written here independently of rrwatch's own session logic.

- Sessions: the node-to-node mesh (when on, between nodes without a cluster ID), and BGPPeers:
  the nodes a BGPPeer applies to (`node`, `nodeSelector`, or all) peer with its `peerIP` or with
  the nodes its `peerSelector` matches, and those nodes peer back (reverse peering).
- An RR node (one with a cluster ID) configures a same-AS peer as `rr client` with its `rr
  cluster id` unless the peer is known to have the same cluster ID; the cluster ID of a peer
  reached by `peerIP` is not known.

The rendering is `configs16`: calico-node's own BIRD 1.6 (`bird.cfg` and `bird6.cfg`, Calico's
protocol names), which the lab's node speakers run. Calico's `add paths on` is set where a test
asks for it (the hand-made confd layouts, which `rrwatch verify` models with ADD-PATH), not in
the scenario tests: with it, Debian's BIRD 1.6.8 (not Calico's patched fork) sends updates for
tens of seconds in the `zoned` and `multi` layouts with RR hosts (`multi`: past the tests' 30 s,
busy enough to leave its control socket unanswered), while those layouts reach everything
either way. Left out on purpose: graceful restart (it would keep a dead RR's routes for two
minutes and hide what the tests look for), BFD, passwords, IP-pool export filters and the
kernel protocol (the lab checks BIRD's tables, not the kernel's).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping

import attrs

from rrwatch.core.selector import SelectorError, parse

NODES = "/calico/resources/v3/projectcalico.org/nodes/"
PEERS = "/calico/resources/v3/projectcalico.org/bgppeers/"
BGP_DEFAULT = "/calico/resources/v3/projectcalico.org/bgpconfigurations/default"


@attrs.frozen
class CalicoNode:
    name: str
    labels: Mapping[str, str]
    ipv4: str | None
    ipv6: str | None
    asn: int
    cluster: str  # "" unless an RR


@attrs.frozen
class Records:
    nodes: Mapping[str, CalicoNode]
    peers: tuple[Mapping[str, object], ...]  # BGPPeer specs
    mesh: bool
    asn: int


def read(data: Mapping[str, bytes]) -> Records:
    """Calico's records from etcd contents (key -> value)."""
    asn, mesh = 64512, True
    if BGP_DEFAULT in data:
        spec = json.loads(data[BGP_DEFAULT])["spec"]
        asn = int(spec.get("asNumber", asn))
        mesh = spec.get("nodeToNodeMeshEnabled", True)
    nodes = {}
    for key, value in data.items():
        if key.startswith(NODES):
            obj = json.loads(value)
            bgp = obj["spec"].get("bgp") or {}
            v4, v6 = bgp.get("ipv4Address"), bgp.get("ipv6Address")
            name = obj["metadata"]["name"]
            nodes[name] = CalicoNode(
                name, obj["metadata"].get("labels", {}),
                v4.split("/")[0] if v4 else None, v6.split("/")[0] if v6 else None,
                int(bgp.get("asNumber", asn)), bgp.get("routeReflectorClusterID", ""))
    peers = tuple(json.loads(v)["spec"] for k, v in sorted(data.items()) if k.startswith(PEERS))
    return Records(nodes, peers, mesh, asn)


def _matching(records: Records, selector: str) -> list[str]:
    """The nodes a selector selects; none if it does not parse (confd's reading)."""
    try:
        parsed = parse(selector)
    except SelectorError:
        return []
    return sorted(n for n, node in records.nodes.items() if parsed.matches(node.labels))


def _peer_ip(text: str) -> str:
    if text.startswith("["):
        return text[1:].partition("]")[0]
    if text.count(":") == 1:
        return text.partition(":")[0]
    return text


def _port(text: str) -> int:
    if text.startswith("[") or text.count(":") == 1:
        return int(text.rpartition(":")[2])
    return 179


@attrs.frozen
class Peering:
    asn: int
    cluster: str  # the peer's cluster ID; "" when it has none or is reached by peerIP
    kind: str  # confd's protocol name prefix: Mesh, Global or Node


def peers_of(records: Records, name: str) -> dict[str, Peering]:
    """The peers node `name` configures, by address: the mesh, then global BGPPeers, then
    node-specific ones (reverse peerings among them); the first peering of an address wins."""
    me = records.nodes[name]
    found: dict[str, Peering] = {}

    def add_node(other: str, kind: str) -> None:
        node = records.nodes[other]
        for address in (node.ipv4, node.ipv6):
            if address and other != name:
                found.setdefault(address, Peering(node.asn, node.cluster, kind))

    if records.mesh and not me.cluster:
        for other, node in sorted(records.nodes.items()):
            if not node.cluster:
                add_node(other, "Mesh")
    def kind(spec: Mapping[str, object]) -> str:
        return "Node" if spec.get("node") or spec.get("nodeSelector") else "Global"

    reverse = []
    for spec in sorted(records.peers, key=kind):  # global ones first (the sort is stable)
        if spec.get("nodeSelector"):  # it wins over `node`, as `peerSelector` over `peerIP`
            local = _matching(records, spec["nodeSelector"])
        elif spec.get("node"):
            local = [spec["node"]]
        else:
            local = sorted(records.nodes)
        remote = _matching(records, spec["peerSelector"]) if spec.get("peerSelector") else []
        peer_ip = "" if remote or spec.get("peerSelector") else spec.get("peerIP", "")
        if name in local:
            if peer_ip:  # without asNumber, confd writes `as 0`
                found.setdefault(_peer_ip(peer_ip),
                                 Peering(int(spec.get("asNumber") or 0), "", kind(spec)))
            for other in remote:
                add_node(other, kind(spec))
        # The reverse side: the selected nodes, and the node whose IP, AS and port a peerIP
        # names.
        at_me = bool(peer_ip) and _peer_ip(peer_ip) in (me.ipv4, me.ipv6) and int(
            spec.get("asNumber") or records.asn) == me.asn and _port(peer_ip) == 179
        if (name in remote or at_me) and spec.get("reversePeering", "Auto") != "Manual":
            reverse += local
    for other in reverse:  # confd writes reverse peerings as node-specific ones
        add_node(other, "Node")
    for address in (me.ipv4, me.ipv6):
        found.pop(address, None)  # a node never peers with itself
    return found


def _client(me: CalicoNode, peer: Peering) -> str:
    """confd's rr-client rule: on an RR, a same-AS peer without its cluster ID is a client."""
    if peer.asn == me.asn and me.cluster and peer.cluster != me.cluster:
        return f" rr client; rr cluster id {me.cluster};"
    return ""


def configs16(records: Records, name: str, prefixes: tuple[str, str], *, add_paths: bool = False
              ) -> tuple[str, str]:
    """calico-node's bird.cfg and bird6.cfg for node `name` on BIRD 1.6, as confd's templates
    write them: protocols `Mesh_<ip>`, `Global_<ip>` and `Node_<ip>` (the address with `.` or
    `:` made `_`) from `bgp_template`, the mesh passive towards a greater address (compared as
    text, as the template does), `source address` the node's own; `add paths on` if
    `add_paths`. Graceful restart is left out (see the module's docstring). The timers
    are Calico's but for `error wait time`: 1 to 5 s, not 5 to 60, since a lab's speakers start
    and learn of each other within seconds and the tests wait 30 s for routes, not minutes."""
    me = records.nodes[name]
    peers = peers_of(records, name)
    out = []
    for family, local, prefix in ((4, me.ipv4, prefixes[0]), (6, me.ipv6, prefixes[1])):
        lines = [f"router id {me.ipv4};",
                 "protocol device { scan time 2; }",
                 'protocol direct { interface "eth0"; }',
                 f"protocol static {{ route {prefix} blackhole; }}"]
        if local:
            lines.append(
                f"template bgp bgp_template {{ local as {me.asn}; multihop; gateway recursive;"
                " import all; export where source ~ [RTS_STATIC, RTS_BGP];"
                f"{' add paths on;' if add_paths else ''} connect delay time 1;"
                " connect retry time 3; error wait time 1,5; }")
            for address, peer in sorted(peers.items()):
                if ipaddress.ip_address(address).version != family:
                    continue
                symbol = f"{peer.kind}_" + address.replace(".", "_").replace(":", "_")
                passive = " passive on;" if peer.kind == "Mesh" and address > local else ""
                lines.append(f"protocol bgp {symbol} from bgp_template {{ neighbor {address} as"
                             f" {peer.asn}; source address {local};{passive}{_client(me, peer)} }}")
        out.append("\n".join(lines) + "\n")
    return out[0], out[1]

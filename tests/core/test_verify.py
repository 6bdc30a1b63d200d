"""Reachability: sessions from the records, RFC 4456 propagation, single-RR failures."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrwatch.core import calico, decoding, reachability, sessions
from rrwatch.core.model import BgpConfig, Node, Peer, Reflector
from rrwatch.core.reachability import Verdict, unreachable, verify
from rrwatch.core.sessions import fabric
from rrwatch.testing import simulate
from tests.support import state_of

RR = "calico-route-reflector"
RR_ONLY = f"{RR} == ''"
CLIENTS = f"{RR} != ''"
CID = "224.0.0.1"


def node(name: str, n: int, *, cluster: str | None = None, asn: int | None = None,
         labels: dict[str, str] | None = None, v6: bool = False) -> Node:
    """Node `name` at 10.0.0.n (and fd00::n with v6); an RR, labelled so, when it has a cluster."""
    labels = dict(labels or {})
    if cluster is not None:
        labels[RR] = ""
    return Node(name, 1, labels, ipv4=IPv4Address(f"10.0.0.{n}"),
                ipv6=IPv6Address(f"fd00::{n}") if v6 else None, asn=asn, cluster_id=cluster)


def build(nodes, peers=(), *, mesh=False, hosts=()):
    """A state of `nodes`, peers given as name -> spec, and external RRs as (ip, cluster ID)."""
    state = state_of(nodes)
    state.set_bgp(BgpConfig(mesh_enabled=mesh))
    for name, spec in dict(peers).items():
        state.put_peer(Peer(name, 1, False, spec))
    for ip, cluster in hosts:
        family = "rr_v6" if ":" in ip else "rr_v4"
        state.put_reflector(Reflector(f"/calico/bgp/v1/{family}/{ip}", 1,
                                      IPv4Address(ip) if family == "rr_v4" else IPv6Address(ip),
                                      cluster))
    return state


def all_pairs(names):
    return {(a, b) for a, b in itertools.permutations(names, 2)}


def pairs_between(group, others):
    return {(a, b) for a in group for b in others} | {(b, a) for a in group for b in others}


RR_MESH = {"nodeSelector": RR_ONLY, "peerSelector": RR_ONLY}
CLIENTS_TO_RRS = {"nodeSelector": CLIENTS, "peerSelector": RR_ONLY}


# -- meshes and simple layouts -------------------------------------------------------------------


def test_full_mesh_reaches_everything():
    """With the node-to-node mesh on and no RRs, every node hears every other node."""
    verdict = verify(build([node(f"n{i}", i) for i in range(1, 6)], mesh=True))
    assert verdict.ok and verdict.scenarios == 1 and not verdict.problems


def test_no_mesh_and_no_peers_reaches_nothing():
    """With the mesh off and no BGPPeers there are no sessions, so every pair is unreachable."""
    names = [f"n{i}" for i in range(1, 5)]
    verdict = verify(build([node(name, i) for i, name in enumerate(names, 1)]))
    assert set(verdict.unreachable[(4, None)]) == all_pairs(names)


def test_two_rrs_sharing_a_cluster_with_every_client_on_both():
    """Two RRs of one cluster, meshed, each peered with every client: ok, also after one fails."""
    nodes = [node("rr1", 1, cluster=CID), node("rr2", 2, cluster=CID)]
    nodes += [node(f"n{i}", i) for i in range(3, 8)]
    state = build(nodes, {"mesh": RR_MESH, "clients": CLIENTS_TO_RRS})
    assert verify(state).ok
    survived = verify(state, failures=1)
    assert survived.ok and survived.scenarios == 3


def test_single_rr_is_ok_until_it_fails():
    """One RR serves everyone, but losing it loses everything, and the report names it."""
    nodes = [node("rr1", 1, cluster=CID)] + [node(f"n{i}", i) for i in range(2, 5)]
    state = build(nodes, {"clients": CLIENTS_TO_RRS})
    assert verify(state).ok
    verdict = verify(state, failures=1)
    assert not verdict.ok
    assert set(verdict.unreachable) == {(4, "rr1")}
    assert set(verdict.unreachable[(4, "rr1")]) == all_pairs(["n2", "n3", "n4"])
    assert "IPv4 without rr1: 6 unreachable (origin -> receiver)" in verdict.lines()


def test_rr_with_mesh_still_on():
    """RRs leave the mesh while clients stay in it; everyone still hears everyone."""
    nodes = [node("rr1", 1, cluster=CID)] + [node(f"n{i}", i) for i in range(2, 6)]
    state = build(nodes, {"clients": CLIENTS_TO_RRS}, mesh=True)
    fab = fabric(state, 4)
    assert fab.sessions["n2"] == {"n3", "n4", "n5", "rr1"}
    assert verify(state, failures=1).ok


# -- calico issue 2735 ---------------------------------------------------------------------------

LEFT, RIGHT = ["node1", "node2"], ["node3", "node4"]


def split_clients(*, rr1: str, rr2: str) -> dict[str, dict[str, object]]:
    """node1 and node2 peer with rr1 only, node3 and node4 with rr2 only.

    An address is an external host, reached by peerIP; a name is a node, reached by selector.
    """
    peers = {}
    for name in LEFT + RIGHT:
        rr = rr1 if name in LEFT else rr2
        target = ({"peerIP": rr, "asNumber": 64512} if rr[0].isdigit()
                  else {"peerSelector": f"name == '{rr}'"})
        peers[f"{name}-rr"] = {"node": name, **target}
    return peers


def in_cluster_rrs(*clusters: str | None) -> list[Node]:
    """rr1, rr2, … with the given cluster IDs, labelled `name` for split_clients."""
    return [node(f"rr{r}", 100 + r, cluster=cluster, labels={"name": f"rr{r}"})
            for r, cluster in enumerate(clusters, 1)]


def test_issue_2735_external_rrs_sharing_the_clients_cluster_id():
    """Issue 2735 as reported: external RRs sharing a cluster ID drop each other's reflections."""
    nodes = [node(name, i) for i, name in enumerate(LEFT + RIGHT, 1)]
    state = build(nodes, split_clients(rr1="10.0.0.101", rr2="10.0.0.102"),
                  hosts=[("10.0.0.101", CID), ("10.0.0.102", CID)])
    verdict = verify(state)
    assert not verdict.ok
    assert set(verdict.unreachable[(4, None)]) == pairs_between(LEFT, RIGHT)


def test_issue_2735_with_every_node_carrying_the_cluster_id():
    """If every node carries the RRs' cluster ID, every session is non-client: nothing reflects.

    (A cluster ID makes a Calico node an RR itself, so node1 no longer hears node2 either.)
    """
    nodes = in_cluster_rrs(CID, CID)
    nodes += [node(name, i, cluster=CID) for i, name in enumerate(LEFT + RIGHT, 1)]
    rr_pair = {"node": "rr1", "peerSelector": "name == 'rr2'"}  # every node has the RR label
    state = build(nodes, {"rr-pair": rr_pair, **split_clients(rr1="rr1", rr2="rr2")})
    fab = fabric(state, 4)
    sessions = {(a, b) for a in fab.sessions for b in fab.sessions[a]}
    names = ["rr1", "rr2", *LEFT, *RIGHT]
    assert set(verify(state).unreachable[(4, None)]) == all_pairs(names) - sessions


def test_issue_2735_in_cluster_rrs_sharing_an_id_with_split_clients():
    """In-cluster RRs sharing an ID, clients on one RR each: the halves are cut off.

    As BIRD does it (tests/bgp shows it with real speakers): the RRs' session is not a client
    session, so its cluster ID is the router ID and rr2 keeps rr1's reflection of node1's
    route; but rr2 never passes it to its clients, whose sessions carry the shared ID.
    """
    nodes = in_cluster_rrs(CID, CID) + [node(name, i) for i, name in enumerate(LEFT + RIGHT, 1)]
    state = build(nodes, {"mesh": RR_MESH, **split_clients(rr1="rr1", rr2="rr2")})
    assert set(verify(state).unreachable[(4, None)]) == pairs_between(LEFT, RIGHT)


def test_issue_2735_fixed_by_distinct_cluster_ids():
    """The same split layout with one cluster ID per RR: the RRs are each other's clients."""
    nodes = in_cluster_rrs("224.0.0.1", "224.0.0.2")
    nodes += [node(name, i) for i, name in enumerate(LEFT + RIGHT, 1)]
    state = build(nodes, {"mesh": RR_MESH, **split_clients(rr1="rr1", rr2="rr2")})
    assert verify(state).ok


# -- the multi topology --------------------------------------------------------------------------


def multi_state(clients: int, rrs: int = 6, k: int = 3):
    """Each RR its own cluster ID; each client labelled for, and peered with, k of them."""
    ids = [f"224.0.0.{r + 1}" for r in range(rrs)]
    nodes = [node(f"rr{r}", 200 + r, cluster=ids[r]) for r in range(rrs)]
    for c in range(clients):
        labels = {f"rr.rrwatch.io/{ids[(c + j) % rrs]}": "" for j in range(k)}
        nodes.append(node(f"c{c}", c + 1, labels=labels))
    peers = {f"rr{r}": {"node": f"rr{r}", "peerSelector": f"has(rr.rrwatch.io/{ids[r]})"}
             for r in range(rrs)}
    return build(nodes, {**peers, "mesh": RR_MESH})


def test_multi_topology_survives_any_single_rr_failure():
    """Distinct cluster IDs and k=3 RRs per client: ok with and without any one RR."""
    verdict = verify(multi_state(60), failures=1)
    assert verdict.ok and verdict.scenarios == 7


def test_multi_topology_with_k1_fails_with_its_rr():
    """With one RR per client, losing an RR cuts exactly its clients off from everyone."""
    state = multi_state(12, rrs=3, k=1)
    verdict = verify(state, failures=1)
    assert verify(state).ok
    lost = set(verdict.unreachable[(4, "rr0")])
    orphans = {f"c{c}" for c in range(0, 12, 3)}
    others = {n for n in state.nodes if n != "rr0"} - orphans
    assert lost == all_pairs(orphans) | pairs_between(orphans, others)


# -- external route reflectors -------------------------------------------------------------------


def test_nodes_peered_with_external_rr_by_peer_ip():
    """A global peerIP BGPPeer to a registered host: the host reflects for every node."""
    nodes = [node(f"n{i}", i) for i in range(1, 5)]
    state = build(nodes, {"to-host": {"peerIP": "10.0.0.100", "asNumber": 64512}},
                  hosts=[("10.0.0.100", None)])
    fab = fabric(state, 4)
    assert fab.sessions["host/10.0.0.100"] == {"n1", "n2", "n3", "n4"}
    assert fab.reflectors_of("n1") == {"host/10.0.0.100"}
    assert verify(state).ok
    assert verify(state, failures=1).unreachable.keys() == {(4, "host/10.0.0.100")}


def test_external_rr_in_ipv6_with_bracketed_peer_ip():
    """An IPv6 registration and v6 nodes form a family-6 fabric; `[v6]:port` names the host."""
    nodes = [node(f"n{i}", i, v6=True) for i in range(1, 4)]
    state = build(nodes, {"to-host": {"peerIP": "[fd00::5]:179", "asNumber": 64512}},
                  hosts=[("fd00::5", "224.0.0.9")])
    assert fabric(state, 6).sessions["host/fd00::5"] == {"n1", "n2", "n3"}
    assert fabric(state, 4).sessions["n1"] == frozenset()
    verdict = verify(state)
    assert set(verdict.unreachable) == {(4, None)}  # no IPv4 session at all
    assert verdict.scenarios == 2


def test_external_rrs_mesh_with_each_other():
    """Hosts with distinct (default) cluster IDs mesh and reflect between their clients."""
    nodes = [node(name, i) for i, name in enumerate(LEFT + RIGHT, 1)]
    state = build(nodes, split_clients(rr1="10.0.0.101", rr2="10.0.0.102:179"),
                  hosts=[("10.0.0.101", None), ("10.0.0.102", None)])
    assert fabric(state, 4).sessions["host/10.0.0.101"] == {"node1", "node2", "host/10.0.0.102"}
    assert verify(state).ok


def test_peer_ip_with_the_wrong_as_number_brings_up_no_session():
    """A peerIP peer whose asNumber is not the host's AS is reported and configures nothing."""
    state = build([node("n1", 1)], {"to-host": {"peerIP": "10.0.0.100", "asNumber": 65000}},
                  hosts=[("10.0.0.100", None)])
    assert fabric(state, 4).sessions["n1"] == frozenset()
    assert any("asNumber 65000" in p for p in verify(state).problems)


# -- hostile records and RR hosts ----------------------------------------------------------------

TO_HOST = {"to-host": {"peerIP": "10.0.0.100", "asNumber": 64512}}
HOST = "host/10.0.0.100"


def in_force(state, ip: str, cluster: str | None = None) -> None:
    """The registration of `ip` in force, whatever the model makes of it: the speaker mapping
    must hold whatever registrations reach it."""
    key = f"/calico/bgp/v1/rr_v4/{ip}"
    state.reflectors[key] = Reflector(key, 1, IPv4Address(ip), cluster)


def test_a_node_claiming_a_hosts_address_does_not_take_its_sessions():
    """Sixteen nodes peer with a registered host; a node that claims the host's address is
    left out and reported, and the host keeps all sixteen sessions."""
    nodes = [node(f"n{i}", i) for i in range(1, 17)]
    thief = Node("thief", 1, {}, ipv4=IPv4Address("10.0.0.100"))
    state = build([*nodes, thief], TO_HOST)
    in_force(state, "10.0.0.100")
    fab = fabric(state, 4)
    assert fab.speakers[HOST].node is False and "thief" not in fab.speakers
    assert fab.sessions[HOST] == {n.name for n in nodes}
    assert fab.refused[HOST] == {"thief": "10.0.0.100 is the address of RR host 10.0.0.100"}
    verdict = verify(state)
    assert verdict.ok
    assert "node 'thief': 10.0.0.100 is the address of RR host 10.0.0.100; left out of IPv4" \
        in verdict.problems


def test_a_node_named_like_a_host_is_left_out():
    """A node record named host/<ip> never stands in for the registered host of that name."""
    impostor = Node(HOST, 1, {"x": "y"}, ipv4=IPv4Address("10.0.0.7"), asn=65000)
    state = build([node("n1", 1), impostor], {**TO_HOST, "to-impostor": {
        "node": "n1", "peerSelector": "x == 'y'"}}, hosts=[("10.0.0.100", None)])
    fab = fabric(state, 4)
    assert fab.speakers[HOST].address == IPv4Address("10.0.0.100")
    assert fab.speakers[HOST].asn == 64512 and not fab.speakers[HOST].node
    assert fab.sessions[HOST] == {"n1"} and fab.sessions["n1"] == {HOST}
    assert HOST in fab.refused[HOST]


@pytest.mark.parametrize("bad", [
    node("bad", 5, asn=0), node("bad", 5, asn=23456),
    Node("bad", 1, {}, ipv4=IPv4Address("10.0.0.5"), ipv6=IPv6Address("fe80::1")),
    Node("bad", 1, {}, ipv4=IPv4Address("10.0.0.5"), ipv6=IPv6Address("::")),
], ids=["as-0", "as-trans", "link-local", "unspecified"])
def test_a_host_has_no_session_with_a_bad_node_and_keeps_the_others(bad):
    """A node whose record fails a check gets no session with the host (at either end), is
    reported, and the other nodes keep theirs."""
    state = build([node("n1", 1), node("n2", 2), bad], TO_HOST, hosts=[("10.0.0.100", None)])
    fab = fabric(state, 4, hosts_only=True)
    assert fab.sessions[HOST] == {"n1", "n2"}
    assert HOST not in fab.sessions["bad"]
    assert list(fab.refused[HOST]) == ["bad"]
    assert any(p.startswith("node 'bad': ") for p in verify(state).problems)


def test_two_nodes_claiming_one_address_get_no_session_with_the_host():
    """Neither of two nodes with one address gets a session with the host; both are named."""
    copy = Node("copy", 1, {}, ipv4=IPv4Address("10.0.0.2"))
    state = build([node("n1", 1), node("n2", 2), copy], TO_HOST, hosts=[("10.0.0.100", None)])
    fab = fabric(state, 4, hosts_only=True)
    assert fab.sessions[HOST] == {"n1"}
    assert fab.refused[HOST] == {"n2": "10.0.0.2 is claimed by 'copy' too",
                                 "copy": "10.0.0.2 is claimed by 'n2' too"}


def test_a_host_whose_registration_bird_would_refuse_has_no_host_sessions():
    """Two hosts: one registered at an address no neighbour can have; the other host refuses
    a session with it and says why."""
    state = build([node("n1", 1)], TO_HOST, hosts=[("10.0.0.100", None)])
    in_force(state, "127.0.0.2")
    fab = fabric(state, 4)
    assert fab.sessions[HOST] == {"n1"}
    assert fab.refused[HOST] == {"host/127.0.0.2": "127.0.0.2 is a loopback address"}


# -- eBGP ----------------------------------------------------------------------------------------


def as_chain(*asns: int) -> list[Node]:
    """Nodes a, b, c, … in the given ASes, each labelled with its own name."""
    return [Node(name, 1, {"name": name}, ipv4=IPv4Address(f"10.0.0.{i}"), asn=asn)
            for i, (name, asn) in enumerate(zip("abcd", asns, strict=False), 1)]


CHAIN = {"ab": {"node": "a", "peerSelector": "name == 'b'"},
         "bc": {"node": "b", "peerSelector": "name == 'c'"}}


def test_ebgp_passes_routes_on():
    """A chain of three ASes: routes cross each eBGP session and are passed along."""
    assert verify(build(as_chain(65001, 65002, 65003), CHAIN)).ok


def test_as_path_loop_is_dropped():
    """a and c share an AS and meet only through b: each drops the other's route (AS loop)."""
    verdict = verify(build(as_chain(65001, 65002, 65001), CHAIN))
    assert set(verdict.unreachable[(4, None)]) == {("a", "c"), ("c", "a")}


def test_non_rr_passes_ibgp_routes_to_ebgp_peers_only():
    """b (no RR) hears a over iBGP and tells d (eBGP) but not c (iBGP); d's route reaches all."""
    peers = {"b": {"node": "b", "peerSelector": "name in {'a', 'c', 'd'}"}}
    verdict = verify(build(as_chain(65001, 65001, 65001, 65002), peers))
    assert set(verdict.unreachable[(4, None)]) == {("a", "c"), ("c", "a")}


# -- what configures a session -------------------------------------------------------------------


def test_manual_reverse_peering_is_one_sided():
    """With reversePeering Manual the selected node does not peer back: no session."""
    nodes = [node("rr1", 1, cluster=CID), node("n2", 2)]
    spec = {"node": "n2", "peerSelector": RR_ONLY}
    assert fabric(build(nodes, {"p": spec}), 4).sessions["n2"] == {"rr1"}
    manual = fabric(build(nodes, {"p": {**spec, "reversePeering": "Manual"}}), 4)
    assert manual.sessions["n2"] == frozenset()


def test_a_peer_ip_peering_to_a_node_is_answered_by_confds_reverse_side():
    """confd makes the node whose IP, AS and port match a peerIP BGPPeer peer back: one record
    brings the session up, unless the BGPPeer asks for `reversePeering: Manual`, or names a
    port the node does not listen on."""
    nodes = [node("n1", 1), node("n2", 2)]
    one = {"node": "n1", "peerIP": "10.0.0.2", "asNumber": 64512}
    assert fabric(build(nodes, {"p": one}), 4).sessions == {"n1": {"n2"}, "n2": {"n1"}}
    for other in ({"reversePeering": "Manual"}, {"peerIP": "10.0.0.2:1790"}):
        assert fabric(build(nodes, {"p": {**one, **other}}), 4).sessions["n1"] == frozenset()
    manual = {**one, "reversePeering": "Manual"}
    both = {"p": manual, "q": {"node": "n2", "peerIP": "10.0.0.1:179", "asNumber": 64512,
                               "reversePeering": "Manual"}}
    assert fabric(build(nodes, both), 4).sessions["n1"] == {"n2"}


def test_a_peer_ip_without_as_number_takes_bgp_down_on_its_nodes():
    """confd renders `neighbor <ip> as 0`; BIRD refuses that configuration, and confd's check
    keeps every later one of those nodes from being installed. A fatal finding that names
    them; the simulation runs on what remains (they have no session)."""
    nodes = [node("rr1", 1, cluster=CID), node("n2", 2), node("n3", 3)]
    peers = {"clients": CLIENTS_TO_RRS, "bad": {"node": "n3", "peerIP": "10.0.0.9"}}
    verdict = verify(build(nodes, peers))
    assert not verdict.ok
    assert verdict.fatal == ("BGPPeer bad: peerIP 10.0.0.9 without asNumber: confd writes"
                             " `as 0`, which BIRD refuses, so BGP is down on n3",)
    assert set(verdict.unreachable[(4, None)]) == pairs_between(["n3"], ["rr1", "n2"])
    assert verify(build(nodes, {"clients": CLIENTS_TO_RRS})).ok
    assert verdict.lines()[0].startswith("fatal: BGPPeer bad:")


@pytest.mark.parametrize("by", ["selector", "peerIP"])
def test_a_peer_ip_peering_makes_even_a_same_id_rr_a_client(by):
    """confd's rr-client rule is per peering: a peerIP peering carries no cluster ID, so rr1
    takes rr2 for a client though they share one (rr2's reverse side carries rr1's, and takes
    rr1 for a non-client). x is an RR of the same ID, peered with rr1 by selector. rr1 then
    reflects x's route to rr2, which by selector it may not (non-client to non-client)."""
    nodes = [node(name, i, cluster=CID, labels={"name": name})
             for i, name in enumerate(["x", "rr1", "rr2"], 1)]
    to_rr2 = ({"peerSelector": "name == 'rr2'"} if by == "selector"
              else {"peerIP": "10.0.0.3", "asNumber": 64512})
    state = build(nodes, {"x-rr1": {"node": "x", "peerSelector": "name == 'rr1'"},
                          "rr1-rr2": {"node": "rr1", **to_rr2}})
    fab = fabric(state, 4)
    assert fab.sessions["rr1"] == {"x", "rr2"}
    assert fab.clients("rr1") == (set() if by == "selector" else {"rr2"})
    assert fab.clients("rr2") == frozenset() and fab.clients("x") == frozenset()
    missed = set(verify(state).unreachable.get((4, None), ()))
    assert missed == ({("x", "rr2"), ("rr2", "x")} if by == "selector" else set())


def test_the_first_peering_of_an_rr_to_an_address_decides_whether_it_is_a_client():
    """confd keeps the first peering per address (BGPPeers by name within their group): a
    selector one before the peerIP one carries the cluster ID, so the same-ID RR stays a
    non-client; the other way round it is a client."""
    nodes = [node(name, i, cluster=CID, labels={"name": name})
             for i, name in enumerate(["rr1", "rr2"], 1)]
    by_selector = {"node": "rr1", "peerSelector": "name == 'rr2'"}
    by_ip = {"node": "rr1", "peerIP": "10.0.0.2", "asNumber": 64512}
    first = fabric(build(nodes, {"a": by_selector, "b": by_ip}), 4)
    assert first.sessions["rr1"] == {"rr2"} and first.clients("rr1") == frozenset()
    second = fabric(build(nodes, {"a": by_ip, "b": by_selector}), 4)
    assert second.clients("rr1") == {"rr2"}


def test_the_first_peering_to_an_address_decides_the_as_too():
    """A peerIP peering with the wrong AS that confd keeps (it comes first) brings no session,
    whatever comes after it; one that comes after a peering to that node is dropped."""
    nodes = [node("n1", 1, labels={"name": "n1"}), node("n2", 2, labels={"name": "n2"})]
    by_selector = {"node": "n1", "peerSelector": "name == 'n2'"}
    wrong = {"node": "n1", "peerIP": "10.0.0.2", "asNumber": 65000}
    first = build(nodes, {"a": wrong, "b": by_selector})
    assert fabric(first, 4).sessions["n1"] == frozenset()
    assert any("asNumber 65000" in p for p in verify(first).problems)
    later = build(nodes, {"a": by_selector, "b": wrong})
    assert fabric(later, 4).sessions["n1"] == {"n2"}
    assert not any("asNumber" in p for p in verify(later).problems)
    right = {**wrong, "asNumber": 64512}
    assert fabric(build(nodes, {"a": wrong, "b": right}), 4).sessions["n1"] == frozenset()
    assert fabric(build(nodes, {"a": right, "b": wrong}), 4).sessions["n1"] == {"n2"}


def test_an_rr_whose_cluster_id_bird_refuses_is_a_fatal_finding():
    """A cluster ID that is not a dotted quad: confd passes it on and the node's BIRD refuses
    its whole configuration. The model leaves the node out (a bad record, logged and counted),
    and verify names it in a fatal finding until the record is mended or deleted."""
    state = build([node("rr1", 1, cluster=CID), node("n2", 2)],
                  {"clients": CLIENTS_TO_RRS})
    key = calico.NODES + "rr3"
    bad = simulate.node_value("rr3", "a", 3).replace(
        b'"bgp":{', b'"bgp":{"routeReflectorClusterID":"224.0.0",')
    with pytest.raises(decoding.BirdRefuses):
        calico.apply(state, key, bad, 2)
    assert "rr3" not in state.nodes
    fatal = verify(state).fatal
    assert len(fatal) == 1 and fatal[0].startswith("node rr3: cluster ID '224.0.0' is not")
    assert not verify(state).ok
    calico.apply(state, key, simulate.node_value("rr3", "a", 3), 3)
    assert verify(state).fatal == () and "rr3" in state.nodes
    with pytest.raises(decoding.BirdRefuses):
        calico.apply(state, key, bad, 4)
    calico.apply(state, key, None, 5)
    assert verify(state).fatal == ()


def test_which_field_wins_when_both_of_a_pair_are_set():
    """Calico's API refuses both `node` and `nodeSelector`, or both `peerSelector` and
    `peerIP`; a direct write may set both, and confd then takes the selector alone."""
    nodes = [node("n1", 1, labels={"x": "", "name": "n1"}), node("n2", 2, labels={"name": "n2"}),
             node("n3", 3, labels={"name": "n3"})]
    spec = {"node": "n2", "nodeSelector": "has(x)", "peerSelector": "name == 'n3'",
            "peerIP": "10.0.0.2", "asNumber": 64512}
    fab = fabric(build(nodes, {"p": spec}), 4)
    assert fab.sessions == {"n1": {"n3"}, "n2": frozenset(), "n3": {"n1"}}


def test_no_node_peers_with_itself():
    """A node matched by both selectors of a peer (or by its own IP) gets no session to itself."""
    nodes = [node("n1", 1), node("n2", 2)]
    fab = fabric(build(nodes, {"all": {"nodeSelector": "all()", "peerSelector": "all()"},
                               "self": {"node": "n1", "peerIP": "10.0.0.1",
                                        "asNumber": 64512}}), 4)
    assert fab.sessions == {"n1": {"n2"}, "n2": {"n1"}}


def test_unparsable_selector_is_reported_and_configures_nothing():
    """A BGPPeer with a bad selector is a fatal finding (confd selects nothing with it), a bad
    peerIP a problem; the others still count."""
    nodes = [node("rr1", 1, cluster=CID), node("n2", 2)]
    state = build(nodes, {"bad": {"nodeSelector": "has(", "peerSelector": RR_ONLY},
                          "wrong": {"peerIP": "10.0.0.300"}})
    verdict = verify(state)
    assert [p.split(":")[0] for p in verdict.problems] == ["BGPPeer wrong"]
    assert [p.split(":")[0] for p in verdict.fatal] == ["BGPPeer bad"]
    assert set(verdict.unreachable[(4, None)]) == all_pairs(["rr1", "n2"])
    assert fabric(state, 4).sessions["n2"] == frozenset()


def test_reflectors_of_lists_rr_neighbours_only():
    """reflectors_of gives the RR sessions of a client (the make-before-break check uses it)."""
    nodes = [node("rr1", 1, cluster=CID), node("rr2", 2, cluster=CID), node("n3", 3),
             node("n4", 4)]
    fab = fabric(build(nodes, {"clients": CLIENTS_TO_RRS}, mesh=True), 4)
    assert fab.reflectors_of("n3") == {"rr1", "rr2"}
    assert fab.reflectors_of("rr1") == frozenset()


# -- the report ----------------------------------------------------------------------------------


def test_lines_name_pairs_and_truncate():
    """The report has a header per case, at most `limit` pairs, then a count of the rest."""
    verdict = Verdict(("BGPPeer x: bad",),
                      {(4, None): (("a", "b"), ("a", "c"), ("b", "a")),
                       (6, "rr1"): (("c", "a"),)}, 2)
    assert not verdict.ok
    assert verdict.lines(limit=2) == [
        "problem: BGPPeer x: bad",
        "IPv4: 3 unreachable (origin -> receiver)", "  a -> b", "  a -> c", "  ... and 1 more",
        "IPv6 without rr1: 1 unreachable (origin -> receiver)", "  c -> a",
    ]
    assert Verdict((), {}, 1).ok


def test_an_rr_reflects_a_path_that_is_not_its_best():
    """ADD-PATH, which Calico sets on every session. o is a client of x and of b2; x reaches b
    through y; b2 shares b's cluster ID. b's best path to o is b2's reflection (shorter, from the
    lower address), which b may not reflect to its client t (it carries b's own cluster ID).
    Passing on its best path only, b would leave t without o's route; b passes on y's too."""
    ids = {"x": "224.0.0.1", "y": "224.0.0.3", "b": "224.0.0.2", "b2": "224.0.0.2"}
    nodes = [node(name, n, cluster=ids.get(name), labels={"name": name})
             for name, n in (("o", 1), ("x", 10), ("y", 30), ("b", 20), ("b2", 5), ("t", 2))]
    peers = {f"{a}-{b}": {"node": a, "peerSelector": f"name == '{b}'"} for a, b in (
        ("o", "x"), ("x", "y"), ("y", "b"), ("b", "b2"), ("t", "b"), ("o", "b2"))}
    assert verify(build(nodes, peers)).ok


def test_failures_other_than_0_or_1_are_refused():
    """Only single failures are simulated."""
    with pytest.raises(ValueError, match="failures"):
        verify(build([]), failures=2)


# -- twins ---------------------------------------------------------------------------------------

SELECTORS = ["", "all()", RR_ONLY, CLIENTS, "g == 'a'", "g != 'a'", f"{RR_ONLY} || g == 'b'"]
CLUSTERS = [None, None, None, "224.0.0.1", "224.0.0.2"]


@st.composite
def fabrics(draw):
    """Small random clusters: RRs, ASes, external hosts, selector and peerIP peers, mesh."""
    count = draw(st.integers(1, 9))
    asns = draw(st.sampled_from([[None], [None, None, None, 65001]]))  # one AS, or some eBGP
    nodes = [node(f"n{i}", i, cluster=draw(st.sampled_from(CLUSTERS)),
                  asn=draw(st.sampled_from(asns)),
                  labels={"g": draw(st.sampled_from("ab"))})
             for i in range(1, count + 1)]
    hosts = [(f"10.0.0.{100 + h}", draw(st.sampled_from(CLUSTERS)))
             for h in range(draw(st.integers(0, 2)))]
    addresses = [f"10.0.0.{i}" for i in range(1, count + 1)] + [ip for ip, _ in hosts]
    local = st.fixed_dictionaries({}, optional={"node": st.sampled_from([n.name for n in nodes]),
                                                "nodeSelector": st.sampled_from(SELECTORS)})
    remote = st.one_of(
        st.fixed_dictionaries({"peerSelector": st.sampled_from(SELECTORS)},
                              optional={"reversePeering": st.just("Manual")}),
        st.fixed_dictionaries({"peerIP": st.sampled_from(addresses)}),
    )
    specs = draw(st.lists(st.builds(lambda a, b: {**a, **b}, local, remote), max_size=5))
    return build(nodes, {f"p{i}": spec for i, spec in enumerate(specs)},
                 mesh=draw(st.booleans()), hosts=hosts)


@given(fabrics())
def test_sessions_are_symmetric_and_never_with_self(state):
    """Both ends list every session, and no speaker lists itself."""
    for family in (4, 6):
        fab = fabric(state, family)
        for name, near in fab.sessions.items():
            assert name not in near and all(name in fab.sessions[m] for m in near)


HOSTILE = [
    Node("as0", 1, {"g": "a"}, ipv4=IPv4Address("10.0.0.50"), asn=0),
    Node("ll", 1, {"g": "b"}, ipv4=IPv4Address("10.0.0.51"), ipv6=IPv6Address("fe80::1")),
    Node("dup", 1, {"g": "a"}, ipv4=IPv4Address("10.0.0.1")),
    Node("thief", 1, {"g": "b"}, ipv4=IPv4Address("10.0.0.100")),
    Node("host/10.0.0.101", 1, {"g": "a"}, ipv4=IPv4Address("10.0.0.52")),
]


@st.composite
def hostile_fabrics(draw):
    """`fabrics`, with some nodes whose records RR hosts must refuse, and every drawn host's
    registration in force."""
    state = draw(fabrics())
    for bad in draw(st.lists(st.sampled_from(HOSTILE), max_size=3, unique_by=lambda n: n.name)):
        state.put_node(bad)
    for reflector in list(state.registrations.values()):
        state.reflectors[reflector.key] = reflector
    return state


@given(hostile_fabrics())
def test_hostile_sessions_are_symmetric_and_never_with_self(state):
    """Both ends list every session, and no speaker lists itself, with bad records about."""
    for family in (4, 6):
        fab = fabric(state, family)
        for name, near in fab.sessions.items():
            assert name not in near and all(name in fab.sessions[m] for m in near)


@given(hostile_fabrics())
def test_hosts_have_sessions_only_with_neighbours_that_pass_every_check(state):
    """A host's neighbours: hosts at their registered addresses, and nodes whose records pass
    every check, each address one speaker's."""
    refusals = sessions.host_refusals(state)
    for family in (4, 6):
        fab = fabric(state, family, hosts_only=True)
        for host in (n for n, s in fab.speakers.items() if not s.node):
            near = fab.sessions[host]
            assert not {n for n in near if fab.speakers[n].node} & refusals.keys()
            addresses = [fab.speakers[n].address for n in near | {host}]
            assert len(addresses) == len(set(addresses))
            assert all(fab.speakers[n].node or n == sessions.HOST_PREFIX + str(
                fab.speakers[n].address) for n in near)


@given(fabrics())
def test_twin_grouping_equals_brute_force(state):
    """Silent-receiver and twin shortcuts give exactly the plain per-origin simulation."""
    fab = fabric(state, 4)
    for failed in [None, *sorted(fab.reflectors)]:
        assert unreachable(fab, failed) == unreachable(fab, failed, group=False)


def test_mesh_nodes_and_clients_of_the_same_rrs_are_twins():
    """Nodes of one mesh are adjacent twins; clients of the same RRs are twins apart."""
    meshed = fabric(build([node(f"n{i}", i) for i in range(1, 6)], mesh=True), 4)
    net = reachability.index_net(meshed, None, everyone=False)
    assert [len(g) for g in reachability._twins(net)] == [5]
    clients = fabric(multi_state(12, rrs=3, k=1), 4)
    net = reachability.index_net(clients, None, everyone=False)
    assert sorted(len(g) for g in reachability._twins(net)) == [4, 4, 4]


def test_twin_grouping_equals_brute_force_on_a_large_layout():
    """On a multi layout where most clients are twins, shortcuts and brute force agree."""
    fab = fabric(multi_state(30, rrs=4, k=2), 4)
    for failed in [None, "rr0"]:
        assert unreachable(fab, failed) == unreachable(fab, failed, group=False)

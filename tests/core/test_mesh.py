"""The desired mesh: sizing, deterministic and sticky choice, topologies, cluster IDs."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rrwatch.core.mesh import Assignment, choose_reflectors, client_label, desired
from rrwatch.core.model import Node, client_labels
from rrwatch.core.policy import Policy, PolicyError
from rrwatch.core.selector import parse, render
from tests import support as s
from tests.support import POLICY, converge, fresh, state_of


def rrs(state, policy):
    return {name for names in choose_reflectors(state, policy).values() for name in names}


@given(st.integers(0, 100_000), st.floats(0.0001, 1), st.integers(0, 30), st.integers(0, 30))
def test_rr_count_formula(eligible, ratio, low, high):
    """RRs per zone = clamp(ceil(eligible × ratio), min, max), at most the eligible count."""
    low, high = min(low, high), max(low, high)
    policy = Policy(ratio=ratio, min_rrs=low, max_rrs=high)
    wanted = math.ceil(eligible * ratio)
    assert policy.rr_count(eligible) == min(eligible, max(low, min(high, wanted)))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ratio": 0}, "ratio"),
    ({"min_rrs": 4, "max_rrs": 3}, "min 4 and max 3"),
    ({"cluster_id_template": "224.0.0.%s.%d"}, "template"),
    ({"cluster_id_template": "300.0.0.%d"}, "template"),
    ({"cluster_id_template": "224.0.0.%03d"}, "template"),
    ({"cluster_id_template": "224.0.0.1"}, "template"),
    ({"cluster_id_template": "224.0.0.%d", "topology": "multi", "max_rrs": 300},
     "gives only 255 distinct IDs"),
    ({"topology": "ring"}, "topology"),
    ({"client_rrs": 0}, "RRs per client"),
])
def test_bad_policies_are_rejected(kwargs, message):
    """Impossible sizes, templates that cannot name enough RRs, unknown topologies: refused."""
    with pytest.raises(PolicyError, match=message):
        Policy(**kwargs)


def test_template_capacity_counts_valid_distinct_ids():
    """The template's capacity is how many indexes from 1 give an IPv4 address."""
    assert Policy().id_capacity == 255
    assert Policy(cluster_id_template="10.%d.0.1").id_capacity == 255
    assert Policy(cluster_id_template="224.0.0.1%d").id_capacity == 99


@given(s.clusters(), s.policies(), st.lists(s.reflectors(), max_size=2),
       st.randoms(use_true_random=False))
def test_mesh_does_not_depend_on_event_order(nodes, policy, hosts, random):
    """The same records, put in any order (with deletes and re-puts), give the same mesh."""
    shuffled = list(nodes)
    random.shuffle(shuffled)
    state = state_of(shuffled, policy)
    for node in shuffled[: len(shuffled) // 2]:
        state.remove_node(node.name)
    for node in shuffled[: len(shuffled) // 2]:
        state.put_node(node)
    reference = state_of(nodes, policy)
    for host in hosts:
        state.put_reflector(host)
        reference.put_reflector(host)
    assert desired(state, policy) == desired(reference, policy)


@given(s.clusters(), s.policies())
def test_each_zone_gets_the_formula_count_of_eligible_nodes(nodes, policy):
    """Every zone gets rr_count(eligible) RRs, all eligible (not excluded) nodes of that zone."""
    state = state_of(nodes, policy)
    chosen = choose_reflectors(state, policy)
    for zone, index in state.zones.items():
        assert len(chosen[zone]) == policy.rr_count(len(index))
        for name in chosen[zone]:
            node = state.nodes[name]
            assert node.has_bgp_address and state.zone_of(node) == zone
            assert not (policy.exclude and policy.exclude.matches(node.labels))


@given(s.clusters(), s.policies())
def test_preferred_nodes_are_promoted_first(nodes, policy):
    """From scratch, a zone's RRs are preferred nodes whenever enough preferred nodes exist."""
    state = state_of([fresh(n) for n in nodes], policy)
    for zone, names in choose_reflectors(state, policy).items():
        preferred = [n for n in state.zones[zone].names() if state.preferred(state.nodes[n])]
        assert sum(state.preferred(state.nodes[n]) for n in names) == min(len(names),
                                                                          len(preferred))


@given(s.clusters(min_size=1), s.policies(), s.nodes())
def test_adding_a_node_keeps_every_rr_and_its_cluster_id(nodes, policy, newcomer):
    """Sticky: after convergence, a new node never displaces an RR nor changes its ID."""
    assume(newcomer.name not in {n.name for n in nodes})
    state = state_of(nodes, policy)
    converge(state, policy)
    before = desired(state, policy).reflectors
    state.put_node(fresh(newcomer))
    after = desired(state, policy).reflectors
    assert all(after.get(name) == cluster for name, cluster in before.items())


@given(s.clusters(), s.policies(), st.lists(s.reflectors(), max_size=2))
def test_cluster_ids_are_valid_and_distinct_where_needed(nodes, policy, hosts):
    """IDs are IPv4; `simple` shares one, `zoned` one per zone, `multi` one per RR; none is a
    registered host's."""
    state = state_of(nodes, policy)
    for host in hosts:
        state.put_reflector(host)
    mesh = desired(state, policy)
    assume(not mesh.problems)
    for cluster in mesh.reflectors.values():
        ipaddress.IPv4Address(cluster)
        assert cluster not in {h.cluster_id for h in state.reflectors.values()}
    groups = {}
    for name, cluster in mesh.reflectors.items():
        group = {"simple": "", "zoned": state.zone_of(state.nodes[name]), "multi": name}
        groups.setdefault(cluster, set()).add(group[policy.topology])
    assert all(len(members) == 1 for members in groups.values())


@given(s.clusters(), s.policies(topology=st.just("multi")))
def test_cluster_ids_are_read_back_after_a_restart(nodes, policy):
    """A new process, reading the converged records, keeps every RR and ID as they are."""
    state = state_of(nodes, policy)
    converge(state, policy)
    restarted = state_of(state.nodes.values(), policy)
    for peer in state.peers.values():
        restarted.put_peer(peer)
    assert desired(restarted, policy).reflectors == desired(state, policy).reflectors
    assert converge(restarted, policy) == 0


# -- multi -------------------------------------------------------------------------------------

rr_sets = st.lists(st.tuples(s.names, s.zones), min_size=1, max_size=12,
                   unique_by=lambda t: t[0]).map(
    lambda rows: tuple(sorted((name, zone, f"224.0.0.{i + 1}")
                              for i, (name, zone) in enumerate(rows))))


@given(rr_sets, st.integers(1, 4), s.names, s.zones)
def test_multi_gives_k_distinct_rrs_spread_over_zones(reflectors, k, client, zone):
    """k distinct RRs (or all there are), own zone first, across ≥ 2 zones when available."""
    chosen = Assignment(reflectors, k).choose(client, zone)
    assert len({rr[0] for rr in chosen}) == len(chosen) == min(k, len(reflectors))
    zones = {rr[1] for rr in reflectors}
    if zone in zones:
        assert chosen[0][1] == zone
    if k >= 2 and len(zones) >= 2:
        assert len({rr[1] for rr in chosen}) >= 2


@given(rr_sets, st.integers(1, 4), s.names, s.zones)
def test_multi_ranks_rrs_by_the_hash_of_client_and_cluster_id(reflectors, k, client, zone):
    """The choice is rendezvous hashing on blake2b(client, NUL, cluster ID), 8 bytes: the best
    RR of the client's zone, then the best of each other zone, then the best of the rest."""
    def score(rr):
        return hashlib.blake2b(f"{client}\0{rr[2]}".encode(), digest_size=8).digest()
    ranked = sorted(reflectors, key=score)
    picked = [next((rr for rr in ranked if rr[1] == zone), None)]
    for rr in ranked:
        if rr[1] not in {p[1] for p in picked if p} | {zone}:
            picked.append(rr)
    picked = [rr for rr in picked if rr][:k]
    picked += [rr for rr in ranked if rr not in picked][:k - len(picked)]
    assert Assignment(reflectors, k).choose(client, zone) == picked


@given(rr_sets, st.integers(1, 4), st.lists(st.tuples(s.names, s.zones), max_size=30),
       st.data())
def test_losing_an_rr_moves_only_its_clients(reflectors, k, clients, data):
    """Without RR r, a client that did not peer with r keeps exactly its RRs."""
    lost = data.draw(st.sampled_from(reflectors))
    before, after = Assignment(reflectors, k), Assignment(
        tuple(rr for rr in reflectors if rr != lost), k)
    for client, zone in clients:
        old = before.choose(client, zone)
        if lost not in old:
            assert after.choose(client, zone) == old


@given(s.clusters(min_size=1), s.policies(topology=st.just("multi")), s.nodes())
def test_adding_a_client_writes_only_that_client(nodes, policy, newcomer):
    """In a converged `multi` cluster, a new node that changes no RR gets the only write."""
    assume(newcomer.name not in {n.name for n in nodes})
    state = state_of(nodes, policy)
    converge(state, policy)
    labels = {name: client_labels(node) for name, node in state.nodes.items()}
    reflectors = desired(state, policy).reflectors
    state.put_node(fresh(newcomer))
    assume(desired(state, policy).reflectors == reflectors)
    converge(state, policy)
    assert {name: client_labels(state.nodes[name]) for name in labels} == labels


@given(s.clusters(min_size=1), s.policies(topology=st.just("multi")), st.data())
def test_removing_an_rr_changes_only_its_clients(nodes, policy, data):
    """When an RR node is deleted, only the clients that named its cluster ID are relabelled;
    its replacement takes over its ID, so those clients keep their labels too."""
    state = state_of(nodes, policy)
    converge(state, policy)
    reflectors = desired(state, policy).reflectors
    assume(reflectors)
    lost = data.draw(st.sampled_from(sorted(reflectors)))
    before = {name: client_labels(node) for name, node in state.nodes.items() if name != lost}
    state.remove_node(lost)
    converge(state, policy)
    lost_label = client_label(reflectors[lost])
    now_rrs = desired(state, policy).reflectors
    for name, labels in before.items():
        if lost_label not in labels and name not in now_rrs:
            assert client_labels(state.nodes[name]) == labels


# -- peers -------------------------------------------------------------------------------------


@given(s.clusters(), s.policies(), st.lists(s.reflectors(), max_size=3))
def test_bgppeer_count_is_bounded_by_rrs_and_zones(nodes, policy, hosts):
    """Owned BGPPeers ≤ RRs (in-cluster and registered) + zones + 2, whatever the node count."""
    state = state_of(nodes, policy)
    for host in hosts:
        state.put_reflector(host)
    mesh = desired(state, policy)
    assert len(mesh.peers) <= len(mesh.reflectors) + len(state.reflectors) + len(
        state.speakers) + 2


@given(s.clusters(), s.policies(), st.lists(s.reflectors(), max_size=2))
def test_every_written_selector_parses_and_round_trips(nodes, policy, hosts):
    """Each selector of each desired BGPPeer parses, and its canonical text is itself."""
    state = state_of(nodes, policy)
    for host in hosts:
        state.put_reflector(host)
    for spec in desired(state, policy).peers.values():
        for field in ("nodeSelector", "peerSelector"):
            if field in spec:
                assert render(parse(spec[field])) == spec[field]


def test_simple_topology_peers():
    """`simple`: RRs mesh with each other, clients peer with every RR, by label selectors."""
    mesh = desired(state_of([]), POLICY)
    rr = "calico-route-reflector == ''"
    assert mesh.peers == {
        "rrwatch-rr-mesh": {"nodeSelector": rr, "peerSelector": rr},
        "rrwatch-rr-clients": {"nodeSelector": "calico-route-reflector != ''", "peerSelector": rr},
    }


def test_zoned_topology_peers_per_zone_with_a_fallback():
    """`zoned`: a peer per zone with RRs; clients of a zone without RRs peer with all RRs."""
    policy = attrs.evolve(POLICY, topology="zoned", exclude=parse("role == 'db'"))
    nodes = [Node(f"{zone}{i}", 1, {"zone": zone, **({"role": "db"} if zone == "b" else {})},
                  ipv4=ipaddress.IPv4Address(f"10.0.{ord(zone)}.{i + 1}"))
             for zone in "ab" for i in range(3)]
    mesh = desired(state_of(nodes, policy), policy)
    assert mesh.peers["rrwatch-zone-a"] == {
        "nodeSelector": "calico-route-reflector != '' && zone == 'a'",
        "peerSelector": "calico-route-reflector == '' && zone == 'a'",
    }
    assert mesh.peers["rrwatch-fallback-b"] == {
        "nodeSelector": "calico-route-reflector != '' && zone == 'b'",
        "peerSelector": "calico-route-reflector == ''",
    }
    assert set(mesh.reflectors.values()) == {"224.0.0.1"}


def test_registered_hosts_are_peered_by_ip_with_the_configured_as():
    """Each registration becomes a global peerIP BGPPeer; IPv6 in brackets with the port."""
    from rrwatch.core.model import BgpConfig, Reflector

    state = state_of([])
    state.set_bgp(BgpConfig(asn=65001))
    state.put_reflector(Reflector("/calico/bgp/v1/rr_v4/10.0.0.5", 1,
                                  ipaddress.ip_address("10.0.0.5")))
    state.put_reflector(Reflector("/calico/bgp/v1/rr_v6/fd00::5", 1,
                                  ipaddress.ip_address("fd00::5")))
    peers = desired(state, POLICY).peers
    assert peers["rrwatch-host-10-0-0-5"] == {"peerIP": "10.0.0.5", "asNumber": 65001}
    assert peers["rrwatch-host-fd00--5"] == {"peerIP": "[fd00::5]:179", "asNumber": 65001}


def test_written_selectors_select_the_right_nodes():
    """The selectors of the `simple` BGPPeers split RRs from clients exactly."""
    rr, client = {"calico-route-reflector": ""}, {"other": "x"}
    peers = desired(state_of([]), POLICY).peers
    mesh, clients = peers["rrwatch-rr-mesh"], peers["rrwatch-rr-clients"]
    assert parse(mesh["nodeSelector"]).matches(rr)
    assert not parse(mesh["nodeSelector"]).matches(client)
    assert parse(clients["nodeSelector"]).matches(client)
    assert not parse(clients["nodeSelector"]).matches(rr)
    assert parse(clients["peerSelector"]).matches(rr)


DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@given(s.clusters(), s.policies(), st.lists(s.reflectors(), max_size=3),
       st.sampled_from(["zone", "fallback", "", "Zone A", "a.b", "-x-"]))
def test_peer_names_are_valid_and_distinct_per_zone(nodes, policy, hosts, odd_zone):
    """Every owned BGPPeer name is a DNS-1123 name, whatever the zones (even empty, or named
    like another peer) or host addresses; each zone gets its own peer."""
    nodes = [attrs.evolve(n, labels={**n.labels, "zone": odd_zone}) if i % 2 else n
             for i, n in enumerate(nodes)]
    state = state_of(nodes, policy)
    for host in hosts:
        state.put_reflector(host)
    mesh = desired(state, policy)
    for name in mesh.peers:
        assert DNS_1123.fullmatch(name) and len(name) <= 253, name
    if policy.topology == "zoned" and mesh.reflectors:
        assert len(mesh.peers) == 1 + len(state.speakers) + len(state.reflectors)


def test_a_host_address_ending_in_colons_gives_a_valid_name():
    """fd00:: (a valid host address) does not give a name ending in '-'."""
    from rrwatch.core.model import Reflector

    state = state_of([])
    state.put_reflector(Reflector("/calico/bgp/v1/rr_v6/fd00::", 1, ipaddress.ip_address("fd00::")))
    assert "rrwatch-host-fd00--0" in desired(state, POLICY).peers

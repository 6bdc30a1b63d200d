"""Rendering of an RR host's BIRD configuration (pure; tests/bgp runs it in real BIRDs)."""

from __future__ import annotations

import ipaddress

import pytest

from rrwatch import bird
from rrwatch.model import ClusterState, Node, Peer, Reflector, RRLabel

HOST4, HOST6 = "10.0.0.9", "fd00::9"


def state(*, host_cluster: str | None = "224.0.0.9", other_host: bool = True) -> ClusterState:
    """node-1 (an RR of 224.0.0.1), node-2 and node-3 (clients), all peering with the host;
    node-4 peers with nobody; a second RR host 10.0.0.8 shares the host's cluster ID."""
    s = ClusterState("", RRLabel("rr", ""))
    for i in range(1, 5):
        s.put_node(Node(f"node-{i}", 1, {"peers": "yes" if i < 4 else "no"},
                        ipaddress.IPv4Address(f"10.0.0.{i}"), ipaddress.IPv6Address(f"fd00::{i}"),
                        cluster_id="224.0.0.1" if i == 1 else None))
    for ip in (HOST4, HOST6) + (("10.0.0.8",) if other_host else ()):
        address = ipaddress.ip_address(ip)
        key = f"/calico/bgp/v1/rr_v{address.version}/{ip}"
        s.put_reflector(Reflector(key, 1, address, host_cluster))
    s.put_peer(Peer("to-host", 1, True, {"nodeSelector": "peers == 'yes'", "peerIP": HOST4,
                                         "asNumber": 64512}))
    s.put_peer(Peer("to-host6", 1, True, {"peerIP": f"[{HOST6}]:179", "asNumber": 64512}))
    return s


def blocks(text: str) -> dict[str, str]:
    """Protocol name -> its block."""
    out = {}
    for part in text.split("\nprotocol bgp ")[1:]:
        name = part.split()[0]
        out[name] = part[: part.index("\n}") + 2]
    return out


def test_sessions_follow_the_records_pointing_at_the_host():
    found, sessions = bird.sessions(state(), [HOST4, HOST6])
    assert found == {HOST4: "224.0.0.9", HOST6: "224.0.0.9"}
    by_address = {s.address: s for s in sessions}
    # IPv4: the three nodes the BGPPeer selects, and the other host; IPv6: every node (global).
    assert set(by_address) == {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.8",
                               "fd00::1", "fd00::2", "fd00::3", "fd00::4"}
    assert by_address["10.0.0.1"].client  # an RR of another cluster is a client (Calico's rule)
    assert by_address["10.0.0.2"].client
    assert not by_address["10.0.0.8"].client  # same cluster ID: a plain session
    assert by_address["10.0.0.8"].description == "RR host 10.0.0.8"
    assert by_address["fd00::4"].protocol == "peer6_fd00__4"


def test_render_puts_cluster_id_on_client_sessions_only():
    text, _ = bird.render(state(), [HOST4, HOST6])
    b = blocks(text)
    assert "router id 10.0.0.9;" in text
    assert "local 10.0.0.9 as 64512;" in text and "local fd00::9 as 64512;" in text
    assert "rr client;\n  rr cluster id 224.0.0.9;" in b["peer4_10_0_0_2"]
    assert "rr client" not in b["peer4_10_0_0_8"] and "cluster id" not in b["peer4_10_0_0_8"]
    assert "from rrwatch_v6" in b["peer6_fd00__2"]


def test_a_host_without_cluster_id_takes_every_peer_as_client_under_its_router_id():
    b = blocks(bird.render(state(host_cluster=None), [HOST4])[0])
    assert all("rr client;" in block and "cluster id" not in block for block in b.values())


def test_nothing_to_render_until_the_host_is_registered():
    assert bird.render(state(), ["10.0.0.77"]) is None
    only_v4, _ = bird.render(state(), [HOST4, "fd00::77"])
    assert "rrwatch_v6" not in only_v4 and "router id 10.0.0.9;" in only_v4


def test_a_change_leaves_the_other_sessions_byte_identical():
    """BIRD restarts only the protocols whose text changed."""
    s = state()
    before = blocks(bird.render(s, [HOST4, HOST6])[0])
    s.put_node(Node("node-2", 2, {"peers": "yes"}, ipaddress.IPv4Address("10.0.0.2"),
                    ipaddress.IPv6Address("fd00::2"), cluster_id="224.0.0.9"))
    s.put_node(Node("node-5", 2, {"peers": "yes"}, ipaddress.IPv4Address("10.0.0.5"), None))
    after = blocks(bird.render(s, [HOST4, HOST6])[0])
    changed = {name for name in before if before[name] != after.get(name)}
    assert changed == {"peer4_10_0_0_2", "peer6_fd00__2"}  # now in the host's cluster
    assert after.keys() - before.keys() == {"peer4_10_0_0_5"}
    assert "rr client" not in after["peer4_10_0_0_2"]


def test_no_session_when_the_peer_names_another_as():
    s = state(other_host=False)
    s.put_peer(Peer("to-host", 2, True, {"peerIP": HOST4, "asNumber": 65000}))
    _, sessions = bird.sessions(s, [HOST4])
    assert sessions == []  # the nodes would open sessions in AS 65000; BIRD here is in 64512


def test_one_session_per_address_and_names_that_are_not_bird_syntax():
    """Two records with one address would make BIRD refuse two blocks of one name; a name is
    only ever text inside quotes."""
    s = state(other_host=False)
    s.put_node(Node('a"b', 1, {"peers": "yes"}, ipaddress.IPv4Address("10.0.0.2"), None))
    text, sessions = bird.render(s, [HOST4])
    assert [x.address for x in sessions].count("10.0.0.2") == 1
    assert text.count("protocol bgp peer4_10_0_0_2 ") == 1
    assert 'description "node a?b";' in text
    assert bird.protocol_name("::ffff:10.0.0.1") == "peer6___ffff_10_0_0_1"


# What BIRD 2.0.12 sent for `show protocols` with `timeformat protocol iso long` (captured).
SHOW_PROTOCOLS = [
    "2002-Name       Proto      Table      State  Since         Info\n",
    "1002-device1    Device     ---        up     2026-11-22 00:33:41  \n",
    " peer4_10_99_0_1 BGP        ---        up     2026-11-22 00:33:41  Established   \n",
    " peer4_10_99_0_2 BGP        ---        start  2026-11-22 00:33:41  Active        \n",
    "0000 \n",
]


def test_reply_parsing_follows_codes_and_continuations():
    reply = bird.parse_reply(SHOW_PROTOCOLS)
    assert [code for code, _ in reply] == [2002, 1002, 1002, 1002, 0]
    assert reply[2] == (1002, "peer4_10_99_0_1 BGP        ---        up     2026-11-22 00:33:41"
                              "  Established   ")


def test_a_reply_cut_short_is_an_error():
    with pytest.raises(bird.BirdError):
        bird.parse_reply(SHOW_PROTOCOLS[:3])


def test_session_states_whatever_the_time_format():
    protocols = [bird.Protocol(*line.split(None, 4)[:2], line.split()[3], line.split(None, 4)[4])
                 for _, line in bird.parse_reply(SHOW_PROTOCOLS)[1:-1]]
    assert [p.established for p in protocols] == [False, True, False]

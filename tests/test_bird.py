"""Rendering of an RR host's BIRD configuration (pure; tests/bgp runs it in real BIRDs)."""

from __future__ import annotations

import ipaddress
import logging
import shutil

import attrs
import pytest
import trio
import trio.testing

from rrwatch.core import bird_config
from rrwatch.core.model import ClusterState, Node, Peer, Reflector, RRLabel
from rrwatch.host import birdc
from rrwatch.host.keeper import BirdKeeper

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
    found, sessions, _ = bird_config.sessions(state(), [HOST4, HOST6])
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
    text = bird_config.render(state(), [HOST4, HOST6]).text
    b = blocks(text)
    assert "router id 10.0.0.9;" in text
    assert "local 10.0.0.9 as 64512;" in text and "local fd00::9 as 64512;" in text
    assert "rr client;\n  rr cluster id 224.0.0.9;" in b["peer4_10_0_0_2"]
    assert "rr client" not in b["peer4_10_0_0_8"] and "cluster id" not in b["peer4_10_0_0_8"]
    assert "from rrwatch_v6" in b["peer6_fd00__2"]


def test_a_host_without_cluster_id_takes_every_peer_as_client_under_its_router_id():
    b = blocks(bird_config.render(state(host_cluster=None), [HOST4]).text)
    assert all("rr client;" in block and "cluster id" not in block for block in b.values())


def test_nothing_to_render_until_the_host_is_registered():
    assert bird_config.render(state(), ["10.0.0.77"]) is None
    only_v4 = bird_config.render(state(), [HOST4, "fd00::77"]).text
    assert "rrwatch_v6" not in only_v4 and "router id 10.0.0.9;" in only_v4


def test_a_change_leaves_the_other_sessions_byte_identical():
    """BIRD restarts only the protocols whose text changed."""
    s = state()
    before = blocks(bird_config.render(s, [HOST4, HOST6]).text)
    s.put_node(Node("node-2", 2, {"peers": "yes"}, ipaddress.IPv4Address("10.0.0.2"),
                    ipaddress.IPv6Address("fd00::2"), cluster_id="224.0.0.9"))
    s.put_node(Node("node-5", 2, {"peers": "yes"}, ipaddress.IPv4Address("10.0.0.5"), None))
    after = blocks(bird_config.render(s, [HOST4, HOST6]).text)
    changed = {name for name in before if before[name] != after.get(name)}
    assert changed == {"peer4_10_0_0_2", "peer6_fd00__2"}  # now in the host's cluster
    assert after.keys() - before.keys() == {"peer4_10_0_0_5"}
    assert "rr client" not in after["peer4_10_0_0_2"]


def test_no_session_when_the_peer_names_another_as():
    s = state(other_host=False)
    s.put_peer(Peer("to-host", 2, True, {"peerIP": HOST4, "asNumber": 65000}))
    _, sessions, _ = bird_config.sessions(s, [HOST4])
    assert sessions == []  # the nodes would open sessions in AS 65000; BIRD here is in 64512


def test_names_are_never_bird_syntax():
    """A node's name is only ever text inside quotes, with anything but [A-Za-z0-9._-] replaced."""
    s = state(other_host=False)
    s.put_node(Node('a"b\n}', 1, {"peers": "yes"}, ipaddress.IPv4Address("10.0.0.5"), None))
    text = bird_config.render(s, [HOST4]).text
    assert 'description "node a?b??";' in text
    assert bird_config.protocol_name("::ffff:10.0.0.1") == "peer6___ffff_10_0_0_1"


# -- hostile records: each session is checked before rendering -----------------------------------

V4, V6 = ipaddress.IPv4Address, ipaddress.IPv6Address

# A node that peers with the host (as node-1..3 do), with one bad value each.
BAD_NODES = {
    "as-0": Node("bad", 1, {"peers": "yes"}, V4("10.0.0.5"), V6("fd00::5"), asn=0),
    "as-trans": Node("bad", 1, {"peers": "yes"}, V4("10.0.0.5"), V6("fd00::5"), asn=23456),
    "as-too-big": Node("bad", 1, {"peers": "yes"}, V4("10.0.0.5"), V6("fd00::5"), asn=2**32),
    "link-local": Node("bad", 1, {"peers": "yes"}, V4("10.0.0.5"), V6("fe80::1")),
    "unspecified": Node("bad", 1, {"peers": "yes"}, V4("10.0.0.5"), V6("::")),
    "loopback": Node("bad", 1, {"peers": "yes"}, V4("127.0.0.1"), V6("fd00::5")),
    "multicast": Node("bad", 1, {"peers": "yes"}, V4("224.0.0.5"), V6("ff02::5")),
    "zone-index": Node("bad", 1, {"peers": "yes"}, V4("10.0.0.5"),
                       V6('fd00::5%x";\n}\nprotocol device evil {')),
}


def good_sessions() -> list[bird_config.Session]:
    return bird_config.render(state(), [HOST4, HOST6]).sessions


@pytest.mark.parametrize("bad", BAD_NODES.values(), ids=BAD_NODES.keys())
def test_a_bad_node_gets_no_session_and_the_others_still_render(bad):
    """One node with a value BIRD would refuse is left out and reported; every other session
    renders as it would without it."""
    s = state()
    s.put_node(bad)
    rendered = bird_config.render(s, [HOST4, HOST6])
    assert rendered.sessions == good_sessions()
    assert list(rendered.refused) == ["bad"]
    assert "node bad" not in rendered.text and "evil" not in rendered.text


def test_the_reason_names_the_bad_value():
    """The reason a node is refused says which value fails, so the record can be fixed."""
    reasons = {}
    for case, bad in BAD_NODES.items():
        s = state()
        s.put_node(bad)
        reasons[case] = bird_config.render(s, [HOST4]).refused["bad"]
    assert reasons["as-0"] == "AS 0 is outside 1..4294967295"
    assert reasons["as-trans"] == "AS 23456 is AS_TRANS, not a real AS"
    assert reasons["link-local"] == "fe80::1 is link-local"  # refused in IPv4 too: a bad record
    assert reasons["unspecified"] == ":: is the unspecified address"


def test_a_node_under_the_global_as_is_checked_against_it():
    """A node without its own AS (None) takes the global one, which is not a problem of its."""
    s = state()
    s.put_node(Node("plain", 1, {"peers": "yes"}, V4("10.0.0.5"), None, asn=None))
    rendered = bird_config.render(s, [HOST4])
    assert not rendered.refused and "10.0.0.5" in {x.address for x in rendered.sessions}


def test_two_nodes_claiming_one_address_both_get_no_session():
    """Which of two records with one address is right cannot be told, and a session with
    either might reach the other: neither gets one, both are reported, the rest render."""
    s = state(other_host=False)
    s.put_node(Node("copy", 1, {"peers": "yes"}, V4("10.0.0.2"), V6("fd00::22")))
    rendered = bird_config.render(s, [HOST4, HOST6])
    addresses = {x.address for x in rendered.sessions}
    assert "10.0.0.2" not in addresses and "fd00::2" not in addresses
    assert {"10.0.0.1", "10.0.0.3", "fd00::1", "fd00::3", "fd00::4"} <= addresses
    assert rendered.refused == {"copy": "10.0.0.2 is claimed by 'node-2' too",
                                "node-2": "10.0.0.2 is claimed by 'copy' too"}


def in_force(s: ClusterState, ip: str, cluster: str | None = "224.0.0.9") -> None:
    """Put the registration of `ip` in force, whatever the model's judgement of it: the
    renderer must hold whatever registrations reach it."""
    address = ipaddress.ip_address(ip)
    key = f"/calico/bgp/v1/rr_v{address.version}/{ip}"
    s.reflectors[key] = Reflector(key, 1, address, cluster)


@pytest.mark.parametrize("claimed", [HOST4, "10.0.0.8"], ids=["own", "other-host"])
def test_a_node_claiming_a_hosts_address_leaves_the_host_its_sessions(claimed):
    """A registered host always owns its registered address: a node that claims it (this
    host's or another host's) is refused instead of taking every session over."""
    s = state()
    s.put_node(Node("thief", 1, {"peers": "yes"}, V4(claimed), None))
    in_force(s, claimed)  # registered first; see the next test for the model's judgement
    rendered = bird_config.render(s, [HOST4, HOST6])
    assert rendered.sessions == good_sessions()
    assert rendered.refused == {"thief": f"{claimed} is the address of RR host {claimed}"}


@pytest.mark.xfail(reason="open: the model refuses a registration while a node claims its "
                          "address (issue 20 item 3), so a later claim withdraws the host's peer; "
                          "first-claim-wins needs create revisions in the model")
def test_a_node_claiming_a_registered_address_later_leaves_the_host_its_sessions():
    """Through the model: a node put after the host's registration does not take it over."""
    s = state()
    s.put_node(Node("thief", 1, {"peers": "yes"}, V4(HOST4), None))
    rendered = bird_config.render(s, [HOST4, HOST6])
    assert rendered.sessions == good_sessions()


def test_a_node_named_like_a_host_does_not_replace_it():
    """Speakers named host/<ip> are the registered hosts; a node record of that name is
    refused, and the host's sessions stay its own."""
    s = state()
    s.put_node(Node("host/10.0.0.8", 1, {"peers": "yes"}, V4("10.0.0.6"), None, asn=65000))
    rendered = bird_config.render(s, [HOST4, HOST6])
    assert rendered.sessions == good_sessions()
    assert list(rendered.refused) == ["host/10.0.0.8"]


def test_another_host_with_an_address_bird_refuses_is_reported():
    """A registration of an address no neighbour can have costs that session only."""
    s = state()
    in_force(s, "fe80::8")
    rendered = bird_config.render(s, [HOST4, HOST6])
    assert rendered.sessions == good_sessions()
    assert rendered.refused == {"host/fe80::8": "fe80::8 is link-local"}


def everything_at_once() -> ClusterState:
    s = state()
    for i, bad in enumerate(BAD_NODES.values()):
        s.put_node(attrs.evolve(bad, name=f"bad-{i}"))
    s.put_node(Node("copy", 1, {"peers": "yes"}, V4("10.0.0.2"), None))
    s.put_node(Node("thief", 1, {"peers": "yes"}, V4("10.0.0.8"), None))
    in_force(s, "10.0.0.8")
    in_force(s, "fe80::8")
    return s


BIRD_CHECKS = {**BAD_NODES, "all-at-once": None}


@pytest.mark.parametrize("bad", BIRD_CHECKS.values(), ids=BIRD_CHECKS.keys())
async def test_bird_accepts_the_rendering_with_bad_nodes(bad, tmp_path):
    """`bird -p` accepts what rrwatch renders with bad records about, so one record can never
    freeze the host's configuration."""
    if shutil.which("bird") is None:
        pytest.skip("bird (BIRD 2) is not installed")
    s = everything_at_once() if bad is None else state()
    if bad is not None:
        s.put_node(bad)
    rendered = bird_config.render(s, [HOST4, HOST6])
    assert rendered.refused
    path = tmp_path / "bird.conf"
    path.write_text(rendered.text)
    with trio.fail_after(30):
        done = await trio.run_process(["bird", "-p", "-c", str(path)], capture_stdout=True,
                                      capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


# What BIRD 2.0.12 sent for `show protocols` with `timeformat protocol iso long` (captured).
SHOW_PROTOCOLS = [
    "2002-Name       Proto      Table      State  Since         Info\n",
    "1002-device1    Device     ---        up     2026-11-22 00:33:41  \n",
    " peer4_10_99_0_1 BGP        ---        up     2026-11-22 00:33:41  Established   \n",
    " peer4_10_99_0_2 BGP        ---        start  2026-11-22 00:33:41  Active        \n",
    "0000 \n",
]


def test_reply_parsing_follows_codes_and_continuations():
    reply = birdc.parse_reply(SHOW_PROTOCOLS)
    assert [code for code, _ in reply] == [2002, 1002, 1002, 1002, 0]
    assert reply[2] == (1002, "peer4_10_99_0_1 BGP        ---        up     2026-11-22 00:33:41"
                              "  Established   ")


def test_a_reply_cut_short_is_an_error():
    with pytest.raises(birdc.BirdError):
        birdc.parse_reply(SHOW_PROTOCOLS[:3])


def test_session_states_whatever_the_time_format():
    protocols = [birdc.Protocol(*line.split(None, 4)[:2], line.split()[3], line.split(None, 4)[4])
                 for _, line in birdc.parse_reply(SHOW_PROTOCOLS)[1:-1]]
    assert [p.established for p in protocols] == [False, True, False]


# -- the keeper: bad neighbours logged once per change -------------------------------------------


class FakeWatcher:
    """The part of Watcher that BirdKeeper reads: a model, its version, and change waits."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.version = 0
        self._changed = trio.Event()

    def notify(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_change(self, since: int) -> None:
        while self.version <= since:
            await self._changed.wait()


async def test_bad_neighbours_are_logged_once_per_change_and_never_block(tmp_path, caplog,
                                                                        monkeypatch):
    """The keeper names a refused node once (escaped), not on every rendering; names it again
    when its reason changes; says when it is gone; and applies every rendering meanwhile."""
    caplog.set_level(logging.INFO, logger="rrwatch.bird")
    s = state()
    evil = 'evil\n2026-01-01 forged line\x1b[2J'
    s.put_node(Node(evil, 1, {"peers": "yes"}, V4("10.0.0.5"), None, asn=0))
    watcher = FakeWatcher(s)
    keeper = BirdKeeper(watcher, str(tmp_path / "bird.conf"), str(tmp_path / "ctl"),
                             [HOST4, HOST6], debounce=0)
    applied = []

    async def apply(text: str) -> bool:
        applied.append(text)
        return True

    monkeypatch.setattr(keeper, "apply", apply)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keeper.run)
            await trio.testing.wait_all_tasks_blocked()
            assert warnings() == [f"BIRD: no session with {evil!r}: AS 0 is outside 1..4294967295"]
            assert "\n" not in warnings()[0] and "\x1b" not in warnings()[0]
            assert keeper.refused == {evil: "AS 0 is outside 1..4294967295"}

            s.put_node(Node("node-5", 1, {"peers": "yes"}, V4("10.0.0.6"), None))
            watcher.notify()  # an unrelated change: rendered and applied, no new warning
            await trio.testing.wait_all_tasks_blocked()
            assert len(applied) == 2 and len(warnings()) == 1

            s.put_node(Node(evil, 2, {"peers": "yes"}, V4("127.0.0.1"), None))
            watcher.notify()  # a new reason: named again
            await trio.testing.wait_all_tasks_blocked()
            assert warnings()[1:] == [f"BIRD: no session with {evil!r}: 127.0.0.1 is a "
                                      "loopback address"]

            s.remove_node(evil)
            watcher.notify()
            await trio.testing.wait_all_tasks_blocked()
            assert keeper.refused == {} and len(warnings()) == 2
            assert f"BIRD: 1 neighbour(s) no longer refused: {evil!r}" in caplog.messages
            assert all("10.0.0.5" not in text and "127.0.0.1" not in text for text in applied)
            nursery.cancel_scope.cancel()


async def test_many_bad_neighbours_are_named_in_a_bounded_number_of_lines(tmp_path, caplog,
                                                                        monkeypatch):
    """Thousands of bad records at once give NAMED lines and one line with the rest counted."""
    s = state()
    for i in range(1000):
        s.put_node(Node(f"bad-{i:04}", 1, {"peers": "yes"}, V4(f"10.1.{i // 250}.{i % 250 + 1}"),
                        None, asn=23456))
    keeper = BirdKeeper(FakeWatcher(s), str(tmp_path / "bird.conf"), str(tmp_path / "ctl"),
                             [HOST4], debounce=0)

    async def apply(text: str) -> bool:
        return True

    monkeypatch.setattr(keeper, "apply", apply)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keeper.run)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == keeper.NAMED + 1 and len(keeper.refused) == 1000
    assert lines[-1] == "BIRD: no session with 980 more neighbours whose records fail a check " \
                        "(1000 in all)"

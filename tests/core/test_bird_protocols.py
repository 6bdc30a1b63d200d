"""BIRD's BGP sessions read from `show protocols all`, as BIRD 1.6 and BIRD 2 write it.

The two replies in data/ were captured from real speakers with `birdc -v`, which shows the
socket's own format but leaves out the closing `0000` line (added back): a BIRD 1.6.8 node with
one session up and one that cannot connect, and a BIRD 2.0.12 RR with its client.
"""

from __future__ import annotations

import datetime
import pathlib

from hypothesis import given
from hypothesis import strategies as st

from rrwatch.core.bird_protocols import BgpSession, bgp_sessions, since_time
from rrwatch.host.birdc import parse_reply

DATA = pathlib.Path(__file__).parent / "data"


def reply(name: str) -> list[tuple[int, str]]:
    lines = (DATA / name).read_text().splitlines(keepends=True)
    return parse_reply(lines[1:])  # the first line is the greeting, read before the command


def test_bird_1_6_sessions_by_neighbour_with_state_routes_and_error():
    assert bgp_sessions(reply("bird1.6-show-protocols-all.txt")) == [
        BgpSession("Node_10_99_0_2", "10.99.0.2", "Established", "14:24:50", 1, 1),
        BgpSession("Node_10_99_0_3", "10.99.0.3", "Connect", "14:24:48", 0, 0,
                   "Socket: No route to host"),
    ]


def test_bird_2_routes_are_summed_over_channels_and_other_protocols_left_out():
    [session] = bgp_sessions(reply("bird2-show-protocols-all.txt"))
    assert session == BgpSession("rr_a", "10.99.0.1", "Established", "14:24:50.036", 1, 1)
    assert session.established


def rows(name: str, since: str, info: str, *details: str, state: str = "up"
         ) -> list[tuple[int, str]]:
    return [(2002, "Name       Proto      Table      State  Since         Info"),
            (1002, f"{name} BGP ---  {state}  {since}  {info}"),
            *((1006, f"  {line}") for line in details), (0, "")]


def test_the_neighbour_comes_from_the_details_not_the_protocol_name():
    """calico-node's `_port_N` suffix, an IPv6 neighbour written long, a link-local one with
    its interface: the address is what BIRD says, canonical."""
    sessions = bgp_sessions([
        *rows("Node_10_0_0_9_port_1790", "12:00:00", "Established",
              "BGP state:          Established", "Neighbor address: 10.0.0.9",
              "Routes:         3 imported, 2 exported, 1 preferred"),
        *rows("Mesh_fd00__1", "12:00:01", "Active", "BGP state: Active",
              "Neighbor address: fd00:0:0:0:0:0:0:1"),
        *rows("Global_fe80__1", "12:00:02", "Idle", "BGP state: Idle",
              "Neighbor address: fe80::1%eth0"),
    ])
    assert [(s.protocol, s.neighbour, s.state) for s in sessions] == [
        ("Node_10_0_0_9_port_1790", "10.0.0.9", "Established"),
        ("Mesh_fd00__1", "fd00::1", "Active"), ("Global_fe80__1", "fe80::1", "Idle")]
    assert (sessions[0].imported, sessions[0].exported) == (3, 2)


def test_a_protocol_that_is_down_has_the_protocol_state_and_a_date_since():
    [session] = bgp_sessions(rows("Node_10_0_0_9", "2026-12-01", "", "Neighbor address: 10.0.0.9",
                                  state="down"))
    assert (session.state, session.since) == ("down", "2026-12-01")


def test_sessions_without_a_readable_neighbour_are_left_out():
    assert bgp_sessions(rows("odd", "12:00:00", "Established", "BGP state: Established",
                             "Neighbor address: not-an-address")) == []


@given(st.lists(st.tuples(st.sampled_from([1002, 1006, 2002, 0]), st.text(max_size=80)),
                max_size=40))
def test_any_reply_gives_sessions_or_none_never_an_exception(lines):
    for session in bgp_sessions(lines):
        assert session.neighbour and session.imported >= 0 and session.exported >= 0


NOW = datetime.datetime(2026, 12, 4, 14, 30, 0, tzinfo=datetime.UTC)


def test_since_is_a_time_today_yesterday_or_a_date():
    assert since_time("14:24:48", NOW) == NOW.replace(minute=24, second=48)
    assert since_time("14:24:48.036", NOW) == NOW.replace(minute=24, second=48,
                                                          microsecond=36000)
    assert since_time("23:00:00", NOW) == NOW.replace(day=3, hour=23, minute=0)
    assert since_time("2026-11-30", NOW) == datetime.datetime(2026, 11, 30, tzinfo=NOW.tzinfo)
    assert since_time("2026-11-30 08:00:01", NOW) == datetime.datetime(
        2026, 11, 30, 8, 0, 1, tzinfo=NOW.tzinfo)
    assert since_time("", NOW) == since_time("soon", NOW) == NOW

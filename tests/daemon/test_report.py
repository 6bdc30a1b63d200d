"""The reporter's reading of BIRD: a session's `since` holds while its state does (so an
unchanged session is never written again), moves when BIRD saw it go down and up between two
reads, and the report splits by address family for an RR host's two registrations."""

from __future__ import annotations

import datetime

from rrwatch.core.bird_protocols import BgpSession
from rrwatch.core.reports import parse_report
from rrwatch.daemon.report import Reader, split

LOCAL = datetime.timezone(datetime.timedelta(hours=1))


class Clock:
    def __init__(self) -> None:
        self.at = datetime.datetime(2026, 12, 4, 14, 30, 0, tzinfo=LOCAL)

    def __call__(self) -> datetime.datetime:
        return self.at


def session(state: str, since: str, neighbour: str = "10.0.0.2") -> BgpSession:
    return BgpSession(f"Node_{neighbour}", neighbour, state, since, 1, 2)


def test_since_holds_while_the_state_does_whatever_bird_writes_for_it():
    clock = Clock()
    reader = Reader(["/run/bird.ctl"], now=clock)
    first = reader.report([session("Established", "14:24:48")], {})
    assert first.sessions["10.0.0.2"].since == datetime.datetime(2026, 12, 4, 13, 24, 48,
                                                                 tzinfo=datetime.UTC)
    clock.at += datetime.timedelta(days=2)  # BIRD now writes only the date
    later = reader.report([session("Established", "2026-12-04")], {})
    assert later == first


def test_a_new_state_or_a_flap_between_reads_moves_since():
    clock = Clock()
    reader = Reader(["/run/bird.ctl"], now=clock)
    reader.report([session("Established", "14:24:48")], {})
    down = reader.report([session("Active", "14:29:00")], {})
    assert down.sessions["10.0.0.2"].since.minute == 29
    reader.report([session("Established", "14:29:30")], {})
    flapped = reader.report([session("Established", "14:29:55")], {})
    assert flapped.sessions["10.0.0.2"].since.second == 55


def test_ok_while_any_bird_answers():
    reader = Reader(["/run/bird.ctl", "/run/bird6.ctl"], now=Clock())
    assert reader.report([], {"/run/bird6.ctl": "No such file or directory"}).ok
    assert not reader.report([], {"/run/bird.ctl": "x", "/run/bird6.ctl": "y"}).ok


def test_an_rr_host_reports_each_family_under_its_registered_address():
    reader = Reader(["/run/bird/bird.ctl"], now=Clock())
    report = reader.report([session("Established", "14:00:00", "10.0.0.2"),
                            session("Active", "14:00:00", "fd00::2")], {})
    stored = split(report, {"host/10.0.0.100": 4, "host/fd00::100": 6, "node": None})
    assert list(parse_report("k", stored["host/10.0.0.100"]).sessions) == ["10.0.0.2"]
    assert list(parse_report("k", stored["host/fd00::100"]).sessions) == ["fd00::2"]
    assert parse_report("k", stored["node"]) == report

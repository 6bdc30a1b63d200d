"""An RR host's BIRD: `bird -p` takes what rrwatch renders, birdc replies are read whatever
their format, and the keeper names each refused neighbour once (tests/bgp runs real BIRDs)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from rrwatch.core import bird_config
from rrwatch.core.model import ClusterState, Node
from rrwatch.host import birdc
from rrwatch.host.keeper import BirdKeeper
from tests.support import (
    BAD_NODES,
    HOST4,
    HOST6,
    V4,
    everything_at_once,
    rr_host_state,
)

BIRD_CHECKS = {**BAD_NODES, "all-at-once": None}


@pytest.mark.parametrize("bad", BIRD_CHECKS.values(), ids=BIRD_CHECKS.keys())
async def test_bird_accepts_the_rendering_with_bad_nodes(bird, bad, tmp_path):
    """`bird -p` accepts what rrwatch renders with bad records about, so one record can never
    freeze the host's configuration."""
    s = everything_at_once() if bad is None else rr_host_state()
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
        self._at: dict[int, float] = {}

    def notify(self) -> None:
        self.version += 1
        self._at[self.version] = trio.current_time()
        self._changed.set()
        self._changed = trio.Event()

    async def wait_change(self, since: int) -> None:
        while self.version <= since:
            await self._changed.wait()

    def changed_since(self, version: int) -> float | None:
        return self._at.get(version + 1)


async def test_bad_neighbours_are_logged_once_per_change_and_never_block(tmp_path, caplog,
                                                                        monkeypatch):
    """The keeper names a refused node once (escaped), not on every rendering; names it again
    when its reason changes; says when it is gone; and applies every rendering meanwhile."""
    caplog.set_level(logging.INFO, logger="rrwatch.bird")
    s = rr_host_state()
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
    s = rr_host_state()
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

"""Names and values from etcd that hold control characters, on a real TLS etcd with the real
daemon and CLI: the daemon's log, `plan`/`verify`/`status`/`graph` output and the SVG show them
as escapes (issue 20, item 9)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import trio

from rrwatch import logs
from rrwatch.cli import main as cli
from rrwatch.core import calico
from rrwatch.errors import ConfigError, ExitStatus
from rrwatch.etcd import Etcd, put
from rrwatch.testing import simulate
from tests.support import seed_topology

# A name as an attacker writes it: a forged log (or output) line, then "clear the screen".
EVIL = "evil\n2024-01-01 00:00:00,000 INFO    rrwatch.daemon: leading as me\x1b[2J\x1b[H"
SHOWN = logs.printable(EVIL)  # evil\n2024-…me\x1b[2J\x1b[H, on one line
LEADER_KEY = "/rrwatch/v1/leader"
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # all but \t and \n


def assert_safe(text: str) -> None:
    """No control character but line ends, and no line that the hostile name forged."""
    assert UNSAFE.search(text) is None, text
    assert not any(line.startswith("2024-01-01") for line in text.splitlines()), text


async def hold_leader_key(etcd: Etcd, value: bytes, *, task_status=trio.TASK_STATUS_IGNORED
                          ) -> None:
    """Hold the leader key with `value` on a lease kept alive, as a running rrwatch does."""
    lease = await etcd.grant(10)
    await etcd.txn([], [put(LEADER_KEY, value, lease)])
    task_status.started()
    while True:
        await trio.sleep(3)
        await etcd.keep_alive(lease)


async def test_daemon_logs_hostile_keys_on_one_line(etcd, start_daemon):
    """A node key and the leader key's value holding a newline and ESC reach the daemon's text
    log escaped: no forged line, no terminal control."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(hold_leader_key, etcd, EVIL.encode())
            await simulate.put_all(etcd, {calico.NODES + EVIL: b"not JSON"})
            daemon = start_daemon()
            await daemon.wait_for_log(f"skipping {calico.NODES}{SHOWN} at revision")
            await daemon.wait_for_log(f"standing by: {SHOWN} leads")
            nursery.cancel_scope.cancel()
    assert_safe(daemon.log())


async def test_cli_output_escapes_hostile_names(etcd, rrwatch):
    """A node name and the leader key's value holding a newline and ESC are escaped in `plan`,
    `verify`, `status` and `graph` output; `status --output json` carries them exactly."""
    with trio.fail_after(60):
        await seed_topology(etcd, per_zone=2)
        await simulate.put_all(etcd, {calico.NODES + EVIL: simulate.node_value(EVIL, "a", 99),
                                      LEADER_KEY: EVIL.encode()})
    for args in (("plan",), ("verify",), ("status",), ("graph",)):
        result = rrwatch(*args)
        assert "Traceback" not in result.stderr, result.stderr
        assert SHOWN in result.stdout, (args, result.stdout)
        assert_safe(result.stdout + result.stderr)
    result = rrwatch("status", "--output", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["leader"] == EVIL


async def test_svg_of_hostile_names_is_well_formed(graphviz, etcd, rrwatch, tmp_path):
    """`graph --format svg` of a cluster with node names holding control characters writes an
    SVG that parses as XML, each name drawn as its escapes."""
    names = [EVIL, "soh\x01", "del\x7f", "nel\x85", "sep\u2028", "tab\t"]
    with trio.fail_after(60):
        await seed_topology(etcd, per_zone=2)
        await simulate.put_all(etcd, {calico.NODES + name: simulate.node_value(name, "a", 90 + i)
                                      for i, name in enumerate(names)})
    out = tmp_path / "mesh.svg"
    result = rrwatch("graph", "--format", "svg", "-o", str(out))
    assert result.returncode == 0, result.stderr
    svg = ET.parse(out).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    titles = {g.findtext(f"{ns}title").replace("\xa0", " ")  # Graphviz: runs of spaces as NBSP
              for g in svg.iter(f"{ns}g") if g.get("class") == "node"}
    assert {logs.printable(name) for name in names} <= titles


def test_config_problems_print_one_line_each(monkeypatch, capsys):
    """Whatever a configuration problem holds, `rrwatch` prints it on one line, and `check` one
    FAIL line per problem."""
    problems = ["a\nrrwatch: forged\x1b[2J", "second\u2028problem"]

    def load(*args, **kwargs):
        raise ConfigError(problems)

    monkeypatch.setattr(cli.config_mod, "load", load)
    assert cli.main(["plan"]) == ExitStatus.CONFIG
    out, err = capsys.readouterr()
    assert (out, err) == ("", "rrwatch: configuration: a\\nrrwatch: forged\\x1b[2J;"
                              " second\\u2028problem\n")
    assert cli.main(["check"]) == ExitStatus.CONFIG
    out, err = capsys.readouterr()
    assert out.splitlines() == ["FAIL a\\nrrwatch: forged\\x1b[2J", "FAIL second\\u2028problem"]

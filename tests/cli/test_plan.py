"""`rrwatch plan` judges each step of the plan, not only its end: a held step, and why."""

from __future__ import annotations

import json
from ipaddress import IPv4Address

from rrwatch.cli import commands
from rrwatch.config.settings import Settings
from rrwatch.core import calico, edits
from rrwatch.core.model import BgpConfig, Node, Peer
from rrwatch.core.plan import DeletePeer, Limits, Plan, SetNode
from rrwatch.core.policy import Policy
from rrwatch.core.reachability import Verdict
from rrwatch.errors import ExitStatus
from rrwatch.testing import simulate
from tests.support import RR_LABEL, ZONE_LABEL, state_of


def _session(a: str, b: str) -> dict[str, object]:
    return {"node": a, "peerSelector": f"name == '{b}'"}


def test_a_step_that_hides_a_route_is_shown_held_with_the_pairs_it_would_lose(capsys):
    """A make phase that promotes t with b's cluster ID: its session with b is no client session
    any more, so b stops reflecting b2's route to t and t's to b2. `plan` says the phase is held
    and names both; the break steps after it are not judged, since the daemon never gets there,
    but a detour is shown."""
    nodes = []
    for name, n, cluster in (("o", 1, None), ("x", 10, "224.0.0.1"), ("y", 30, "224.0.0.3"),
                             ("b", 20, "224.0.0.2"), ("b2", 5, "224.0.0.2"), ("t", 2, None)):
        labels = {"name": name} | ({RR_LABEL.key: ""} if cluster else {})
        nodes.append(Node(name, 1, labels, ipv4=IPv4Address(f"10.0.0.{n}"), cluster_id=cluster))
    state = state_of(nodes)
    state.set_bgp(BgpConfig(mesh_enabled=False))
    for a, b in (("o", "x"), ("x", "y"), ("y", "b"), ("b", "b2"), ("t", "b")):
        state.put_peer(Peer(f"{a}-{b}", 1, True, _session(a, b)))
    state.put_peer(Peer("idle", 1, True, _session("nobody", "nothing")))  # no session
    todo = Plan(make=(SetNode("t", 1, "224.0.0.2", why="promote"),),
                brk=(DeletePeer("x-y", 1),))
    settings = Settings(Policy(rr_label=RR_LABEL), Limits(), ZONE_LABEL)
    assert commands._steps(state, todo, settings) is True
    assert capsys.readouterr().out.splitlines() == [
        "held: make phase (1 writes) would make routes unreachable that reach now, so the"
        " daemon does not take it",
        "  IPv4: 2 (origin -> receiver) would stop reaching: b2 -> t, t -> b2",
    ]
    # A break op that loses nothing on its own goes first, as the daemon's detour.
    detour = Plan(make=todo.make, brk=(DeletePeer("x-y", 1), DeletePeer("idle", 1)))
    assert commands._steps(state, detour, settings) is True
    assert capsys.readouterr().out.splitlines()[-1] == (
        "meanwhile, as a detour, the daemon takes delete BGPPeer idle first: it loses no route"
        " on its own")
    # Without it, the make phase is empty and the break step is judged.
    assert commands._steps(state, Plan(brk=todo.brk), settings) is True
    assert capsys.readouterr().out.splitlines()[0] == (
        "held: break step 1 (1 writes) would make routes unreachable that reach now, so the"
        " daemon does not take it (only a first part of it that loses nothing, if one does)")
    assert commands._steps(state, Plan(brk=(DeletePeer("o-x", 1),)), settings) is True
    assert commands._steps(state, Plan(brk=(DeletePeer("idle", 1),)), settings) is False
    assert capsys.readouterr().out.splitlines()[-1] == (
        "break step 1 (1 writes): every route that reaches now still reaches")


def _node(name: str, index: int, *, v6_only: bool, **labels: str) -> bytes:
    obj = json.loads(simulate.node_value(name, "a", index, labels=labels))
    del obj["spec"]["bgp"]["ipv4Address" if v6_only else "ipv6Address"]
    return edits.dumps(obj)


async def test_plan_on_etcd_shows_each_phase_and_fails_on_a_held_break(etcd, rrwatch):
    """IPv4-only RRs, and two IPv6-only nodes that reach each other only through a BGPPeer
    rrwatch owns and its mesh no longer wants: the make phase keeps every route, the break
    step that deletes that peer is held (the two pairs it would cut are named), and `plan`
    exits 1."""
    items = {calico.BGP_CONFIG: simulate.mesh_off(), calico.PEERS + "rrwatch-legacy": (
        edits.new_peer("rrwatch-legacy", {"nodeSelector": "has(v6only)",
                                          "peerSelector": "has(v6only)"}))}
    for i in range(3):
        items[calico.NODES + f"rr-{i}"] = _node(f"rr-{i}", i, v6_only=False, role="rr")
    for i in range(2):
        items[calico.NODES + f"v6-{i}"] = _node(f"v6-{i}", 10 + i, v6_only=True, v6only="")
    await simulate.put_all(etcd, items)
    env = {"RRWATCH_PREFER": "role == 'rr'", "ROUTE_REFLECTOR_MAX": "3"}
    result = rrwatch("plan", env=env)
    assert result.returncode == ExitStatus.FAILED, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    made = next(line for line in lines if line.startswith("make phase ("))
    assert made.endswith("writes): every route that reaches now still reaches")
    held = lines.index("held: break step 1 (1 writes) would make routes unreachable that reach"
                       " now, so the daemon does not take it (only a first part of it that"
                       " loses nothing, if one does)")
    assert lines[held + 1] == ("  IPv6: 2 (origin -> receiver) would stop reaching:"
                               " v6-0 -> v6-1, v6-1 -> v6-0")


def test_a_fatal_fault_is_printed_as_such_even_when_every_route_reaches(capsys):
    """A BGPPeer whose selector does not parse breaks no route that reaches now, and still
    fails `verify`: the report says what is wrong rather than that routes do not reach."""
    fault = "BGPPeer x: no label in has( at 0; confd selects nothing with it"
    commands._print(Verdict((), {}, 2, (fault,)), "revision 5: ")
    assert capsys.readouterr().out.splitlines() == [
        "revision 5: every node's routes reach every node that runs BGP, but:", f"  fatal: {fault}"]

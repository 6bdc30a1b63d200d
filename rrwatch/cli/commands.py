"""One-shot commands: `plan`, `verify`, `status` and `graph` read one snapshot of etcd;
`register` and `unregister` write one key each.

Their text output holds names and values from etcd, so every line goes out through `_say`,
which shows control characters as escapes: a name can neither add a line nor drive the
terminal. `status --output json` is plain JSON, which escapes them itself.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from typing import Any, TextIO

import attrs
import trio

from rrwatch.cli import graphviz
from rrwatch.config import Config
from rrwatch.config.settings import Settings, describe
from rrwatch.core import breaks, dot, edits, stepping
from rrwatch.core.breaks import Evidence, Hold, sightings
from rrwatch.core.model import ClusterState
from rrwatch.core.plan import Plan, Planner, outcome
from rrwatch.core.reachability import Verdict, verify
from rrwatch.core.reports import dumps
from rrwatch.core.sessions import HOST_PREFIX, fabric
from rrwatch.core.text import printable
from rrwatch.daemon.live import Live
from rrwatch.daemon.records import Snapshot, load
from rrwatch.errors import ExitStatus
from rrwatch.etcd import Etcd, EtcdError, delete, mod_is, put
from rrwatch.host import birdc


def plan(config: Config, *, detailed_exitcode: bool = False) -> int:
    """Print what the daemon would write now, judge it step by step as the daemon does, and
    check the mesh that would result.

    Exit FAILED when the resulting mesh would leave routes unreachable with every RR up, or
    when a step is held (it would make routes unreachable that reach now: the daemon would
    stop there); else PENDING with `detailed_exitcode` when there are changes; else OK.
    """
    read = read_etcd(config)
    if read is None:
        return ExitStatus.UNAVAILABLE
    snapshot, settings = read
    state = snapshot.state
    _say(f"policy: {describe(settings)}")
    mesh, todo = Planner(settings.policy).plan(state)
    for problem in mesh.problems:
        _say(f"problem: {problem}")
    for name in todo.blocked:
        _say(f"blocked: BGPPeer {name} exists without rrwatch's ownership label")
    if not todo:
        _say(f"no changes: etcd at revision {snapshot.revision} has the desired mesh")
    for phase, ops in (("make", todo.make), ("break, after the settle time", todo.brk)):
        if ops:
            _say(f"{phase}:")
            for op in ops:
                _say(f"  {op}")
    held = _steps(state, todo, settings)
    after = copy.deepcopy(state)
    outcome(after, todo.make + todo.brk)
    verdict = verify(after, failures=1)
    _print(verdict, "after this plan: ")
    if _broken(verdict) or held:
        return ExitStatus.FAILED
    return ExitStatus.PENDING if detailed_exitcode and todo else ExitStatus.OK


def _steps(state: ClusterState, todo: Plan, settings: Settings) -> bool:
    """Print whether the state after the make phase, and after each break step, still carries
    every route that reaches now; whether a step is held, and the detour taken meanwhile."""
    held = False
    for name, ops, verdict in stepping.phases(state, todo.make, todo.brk, settings.limits):
        if name == "detour":
            what = (f"{ops[0]} first: it loses no route on its own" if len(ops) == 1 else
                    f"{ops[0]} and {len(ops) - 1} more first: together they lose no route")
            _say(f"meanwhile, as a detour, the daemon takes {what}")
        elif verdict.ok:
            _say(f"{name} ({len(ops)} writes): {verdict}")
        else:
            held = True
            _say(f"held: {name} ({len(ops)} writes) would make routes unreachable that reach"
                 " now, so the daemon does not take it" + (
                     " (only a first part of it that loses nothing, if one does)"
                     if name.startswith("break") else ""))
            for line in map(str, verdict.losses):
                _say(f"  {line}")
    return held


def verify_mesh(config: Config, *, failures: int = 0) -> int:
    """Simulate route reflection over the sessions the records in etcd configure."""
    read = read_etcd(config)
    if read is None:
        return ExitStatus.UNAVAILABLE
    snapshot, _ = read
    verdict = verify(snapshot.state, failures=failures)
    _print(verdict, f"revision {snapshot.revision}: ")
    return ExitStatus.OK if verdict.ok else ExitStatus.FAILED


def status(config: Config, *, output: str = "text") -> int:
    """Zones, RRs, clients and RR hosts as etcd has them; on an RR host, its BIRD sessions."""
    read = read_etcd(config, leader=True)
    if read is None:
        return ExitStatus.UNAVAILABLE
    report = summary(*read, config)
    if output == "json":
        print(json.dumps(report, indent=2))  # JSON escapes control characters
        return ExitStatus.OK
    _say(f"etcd revision {report['revision']}; leader: {report['leader'] or 'none'}")
    _say(f"AS {report['as_number']}; node-to-node mesh "
         f"{'on' if report['node_to_node_mesh'] else 'off'}; BGP sessions configured: "
         f"{report['sessions']['ipv4']} IPv4, {report['sessions']['ipv6']} IPv6")
    _say(f"policy: {report['policy']}")
    for zone in report["zones"]:
        rrs = ", ".join(f"{rr['name']} ({rr['cluster_id']})" for rr in zone["reflectors"])
        _say(f"zone {zone['zone'] or '(none)'}: {zone['speakers']} speakers,"
             f" {zone['clients']} clients; RRs: {rrs or 'none'}")
    for host in report["hosts"]:
        _say(f"RR host {host['ip']} (cluster ID {host['cluster_id'] or 'its router ID'})")
    for r in report["reports"]:
        if r["report"] is None:
            _say(f"sessions of RR {r['speaker']}: not reported (no `rrwatch report` there)")
        elif not r["report"]["ok"]:
            _say(f"sessions of RR {r['speaker']}: its BIRD does not answer")
        else:
            sessions = r["report"]["sessions"]
            up = sum(s["state"] == "Established" for s in sessions.values())
            _say(f"sessions of RR {r['speaker']}: {up} of {len(sessions)} Established")
    for hold in report["held_breaks"]:
        _say(f"break held: {Hold(**hold)}")
    if "bird" in report:
        b = report["bird"]
        if b.get("error"):
            _say(f"BIRD at {b['socket']}: {b['error']}")
        else:
            up = sum(s["established"] for s in b["sessions"])
            _say(f"BIRD at {b['socket']}: {up} of {len(b['sessions'])} BGP sessions established")
            for s in b["sessions"]:
                _say(f"  {s['protocol']:<28} {s['state']:<6} {s['info']}")
    return ExitStatus.OK


def summary(snapshot: Snapshot, settings: Settings, config: Config) -> dict[str, Any]:
    """What `status` shows, as plain data."""
    state = snapshot.state
    zones: dict[str, dict[str, Any]] = {}
    for name, node in sorted(state.nodes.items()):
        if not node.has_bgp_address:
            continue
        zone = zones.setdefault(state.zone_of(node), {"speakers": 0, "clients": 0,
                                                      "reflectors": []})
        zone["speakers"] += 1
        if node.cluster_id is not None:
            zone["reflectors"].append({"name": name, "cluster_id": node.cluster_id})
        else:
            zone["clients"] += 1
    report: dict[str, Any] = {
        "revision": snapshot.revision,
        "leader": snapshot.leader,
        "as_number": state.bgp.asn,
        "node_to_node_mesh": state.bgp.mesh_enabled,
        "policy": describe(settings),
        "zones": [{"zone": zone, **counts} for zone, counts in sorted(zones.items())],
        # BGP sessions the records in etcd configure, by family (what verify simulates)
        "sessions": {f"ipv{family}": sum(map(len, fabric(state, family).sessions.values())) // 2
                     for family in (4, 6)},
        "hosts": [{"ip": str(r.ip), "cluster_id": r.cluster_id or ""}
                  for r in sorted(state.reflectors.values(), key=lambda r: r.key)],
        "reports": _reports(state),
        "held_breaks": [attrs.asdict(hold)
                        for hold in _held(state, settings, config.timing.verify)],
    }
    if config.bird_config or os.path.exists(config.bird_socket):  # an RR host
        report["bird"] = {"socket": config.bird_socket}
        try:
            report["bird"]["sessions"] = [
                {"protocol": p.name, "state": p.state, "info": p.info,
                 "established": p.established}
                for p in birdc.protocols(config.bird_socket) if p.proto == "BGP"]
        except birdc.BirdError as e:
            report["bird"]["error"] = str(e)
    return report


def _held(state: ClusterState, settings: Settings, mode: str) -> tuple[Hold, ...]:
    """The breaks the leader's gate holds in `mode`, as the reports stand (every session
    Established counts as up for the dwell: only the leader has watched them)."""
    if mode == "off" or not state.reports:
        return ()
    brk = Planner(settings.policy).plan(copy.deepcopy(state))[1].brk
    if not brk:
        return ()
    evidence = Evidence(sightings(state, {}, -math.inf), {}, 0.0, 0.0)
    return breaks.step(state, settings.limits.step(brk), evidence, mode)[1].holds


def _reports(state: ClusterState) -> list[dict[str, Any]]:
    """The session report of each RR (a node with a cluster ID, or a registered RR host), as
    stored (None: none), and of every other speaker that reports."""
    rrs = [name for name, node in sorted(state.nodes.items()) if node.cluster_id is not None]
    rrs += sorted(HOST_PREFIX + str(r.ip) for r in state.reflectors.values())
    speakers = rrs + sorted(state.reports.keys() - set(rrs))
    return [{"speaker": speaker, "rr": speaker in rrs,
             "report": (json.loads(dumps(state.reports[speaker]))
                        if speaker in state.reports else None)}
            for speaker in speakers]


def graph(config: Config, *, fmt: str = "dot", family: int = 4, max_clients: int = 50,
          out: str | None = None) -> int:
    """Draw the mesh the records in etcd configure: DOT, or SVG by Graphviz."""
    read = read_etcd(config)
    if read is None:
        return ExitStatus.UNAVAILABLE
    snapshot, _ = read
    text = dot.dot(snapshot.state, family=family, max_clients=max_clients,
                   title=f"IPv{family} BGP sessions at etcd revision {snapshot.revision}")
    data = text.encode()
    if fmt == "svg":
        try:
            data = graphviz.svg(text)
        except graphviz.GraphvizMissing:
            _say("rrwatch: Graphviz's `dot` is not installed (Debian: apt install graphviz);"
                 " `--format dot` needs nothing", file=sys.stderr)
            return ExitStatus.UNAVAILABLE
        except graphviz.GraphvizError as e:
            _say(f"rrwatch: {e}", file=sys.stderr)
            return e.status
    if out is None:
        sys.stdout.buffer.write(data)
        return ExitStatus.OK
    try:
        with open(out, "wb") as f:
            f.write(data)
    except OSError as e:
        _say(f"rrwatch: cannot write {out!r}: {e.strerror or e}", file=sys.stderr)
        return ExitStatus.CONFIG
    return ExitStatus.OK


def registration(config: Config, ips: list[str], *, cluster_id: str = "",
                 remove: bool = False) -> int:
    """`register`/`unregister`: a registration without a lease, as seed 004's hosts make.

    One held by a lease belongs to a running rrwatch (RRWATCH_REGISTER_IP) and is left alone.
    """
    async def change() -> list[str]:
        etcd = Etcd.of(config)
        refused = []
        try:
            for ip in ips:
                key, value = edits.registration(ip, cluster_id)
                current = await etcd.get(key)
                if current is not None and current.lease:
                    refused.append(f"{key} is held by the lease of a running rrwatch"
                                   f" ({current.lease:x}): stop it, or unset its"
                                   " RRWATCH_REGISTER_IP")
                    continue
                revision = 0 if current is None else current.mod_revision
                if remove and current is None:
                    _say(f"{key}: not registered")
                    continue
                if config.dry_run:
                    _say(f"would {'unregister' if remove else 'register'} {key}")
                    continue
                ops = [delete(key)] if remove else [put(key, value)]
                result = await etcd.txn([mod_is(key, revision)], ops)
                if not result.succeeded:
                    refused.append(f"{key} changed while this ran: try again")
                    continue
                _say(f"{'unregistered' if remove else 'registered'} {key}"
                     + ("" if remove else f" = {value.decode()}"))
        finally:
            await etcd.close()
        return refused

    try:
        refused = trio.run(change)
    except EtcdError as e:
        _say(f"rrwatch: cannot write etcd: {e}", file=sys.stderr)
        return ExitStatus.UNAVAILABLE
    for line in refused:
        _say(f"rrwatch: {line}", file=sys.stderr)
    return ExitStatus.FAILED if refused else ExitStatus.OK


def _say(line: str, *, file: TextIO | None = None) -> None:
    """Print one line (to stdout by default) with its control characters escaped."""
    print(printable(line), file=file)


def _broken(verdict: Verdict) -> bool:
    """Some routes do not reach even with every RR up."""
    return any(failed is None for _, failed in verdict.unreachable)


def _print(verdict: Verdict, prefix: str) -> None:
    if verdict.ok:
        for problem in verdict.problems:
            _say(f"problem: {problem}")
        _say(f"{prefix}every node's routes reach every other node"
             f" ({verdict.scenarios} cases simulated)")
    else:
        _say(f"{prefix}some routes do not reach:" if verdict.unreachable else
             f"{prefix}every node's routes reach every node that runs BGP, but:")
        for line in verdict.lines():
            _say(f"  {line}")


def read_etcd(config: Config, *, leader: bool = False) -> tuple[Snapshot, Settings] | None:
    """One snapshot of etcd, and the policy in force in it (the policy object's, if any)."""
    live = Live(config)

    async def read() -> Snapshot:
        etcd = Etcd.of(config)
        try:
            snapshot = await load(etcd, live.records)
            if leader:
                kv = await etcd.get(config.leader_key)
                if kv is not None:
                    snapshot = attrs.evolve(snapshot, leader=kv.value.decode("utf-8", "replace"))
            return snapshot
        finally:
            await etcd.close()

    try:
        snapshot = trio.run(read)
    except EtcdError as e:
        _say(f"rrwatch: cannot read etcd: {e}", file=sys.stderr)
        return None
    for key, reason in sorted(snapshot.bad.items()):
        _say(f"skipped {key}: {reason}", file=sys.stderr)
    return snapshot, live.settings

"""One-shot commands that read one snapshot of etcd: `rrwatch plan`, `verify` and `status`."""

from __future__ import annotations

import copy
import json
import os
import sys
from typing import Any

import attrs
import trio

from rrwatch import bird
from rrwatch.config import Config
from rrwatch.daemon import new_state
from rrwatch.etcd import Etcd, EtcdError
from rrwatch.plan import Planner, outcome
from rrwatch.verify import Verdict, verify
from rrwatch.watch import Snapshot, load

EX_OK = 0
EX_FAILED = 1  # verify: some routes do not reach; plan: its result would not propagate
EX_PENDING = 2  # plan --detailed-exitcode: changes are pending
EX_UNAVAILABLE = 69  # sysexits.h: etcd cannot be read


def plan(config: Config, *, detailed_exitcode: bool = False) -> int:
    """Print what the daemon would write now, and check the mesh that would result."""
    snapshot = _read(config)
    if snapshot is None:
        return EX_UNAVAILABLE
    state = snapshot.state
    mesh, todo = Planner(config.policy).plan(state)
    for problem in mesh.problems:
        print(f"problem: {problem}")
    for name in todo.blocked:
        print(f"blocked: BGPPeer {name} exists without rrwatch's ownership label")
    if not todo:
        print(f"no changes: etcd at revision {snapshot.revision} has the desired mesh")
    for phase, ops in (("make", todo.make), ("break, after the settle time", todo.brk)):
        if ops:
            print(f"{phase}:")
            for op in ops:
                print(f"  {op}")
    after = copy.deepcopy(state)
    outcome(after, todo.make + todo.brk)
    verdict = verify(after, failures=1)
    _print(verdict, "after this plan: ")
    if _broken(verdict):
        return EX_FAILED
    return EX_PENDING if detailed_exitcode and todo else EX_OK


def verify_mesh(config: Config, *, failures: int = 0) -> int:
    """Simulate route reflection over the sessions the records in etcd configure."""
    snapshot = _read(config)
    if snapshot is None:
        return EX_UNAVAILABLE
    verdict = verify(snapshot.state, failures=failures)
    _print(verdict, f"revision {snapshot.revision}: ")
    return EX_OK if verdict.ok else EX_FAILED


def status(config: Config, *, output: str = "text") -> int:
    """Zones, RRs, clients and RR hosts as etcd has them; on an RR host, its BIRD sessions."""
    snapshot = _read(config, leader=True)
    if snapshot is None:
        return EX_UNAVAILABLE
    report = summary(snapshot, config)
    if output == "json":
        print(json.dumps(report, indent=2))
        return EX_OK
    print(f"etcd revision {report['revision']}; leader: {report['leader'] or 'none'}")
    print(f"AS {report['as_number']}; node-to-node mesh "
          f"{'on' if report['node_to_node_mesh'] else 'off'}")
    for zone in report["zones"]:
        rrs = ", ".join(f"{rr['name']} ({rr['cluster_id']})" for rr in zone["reflectors"])
        print(f"zone {zone['zone'] or '(none)'}: {zone['speakers']} speakers,"
              f" {zone['clients']} clients; RRs: {rrs or 'none'}")
    for host in report["hosts"]:
        print(f"RR host {host['ip']} (cluster ID {host['cluster_id'] or 'its router ID'})")
    if "bird" in report:
        b = report["bird"]
        if b.get("error"):
            print(f"BIRD at {b['socket']}: {b['error']}")
        else:
            up = sum(s["established"] for s in b["sessions"])
            print(f"BIRD at {b['socket']}: {up} of {len(b['sessions'])} BGP sessions established")
            for s in b["sessions"]:
                print(f"  {s['protocol']:<28} {s['state']:<6} {s['info']}")
    return EX_OK


def summary(snapshot: Snapshot, config: Config) -> dict[str, Any]:
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
        "zones": [{"zone": zone, **counts} for zone, counts in sorted(zones.items())],
        "hosts": [{"ip": str(r.ip), "cluster_id": r.cluster_id or ""}
                  for r in sorted(state.reflectors.values(), key=lambda r: r.key)],
    }
    if config.bird_config or os.path.exists(config.bird_socket):  # an RR host
        report["bird"] = {"socket": config.bird_socket}
        try:
            report["bird"]["sessions"] = [
                {"protocol": p.name, "state": p.state, "info": p.info,
                 "established": p.established}
                for p in bird.protocols(config.bird_socket) if p.proto == "BGP"]
        except bird.BirdError as e:
            report["bird"]["error"] = str(e)
    return report


def _broken(verdict: Verdict) -> bool:
    """Some routes do not reach even with every RR up."""
    return any(failed is None for _, failed in verdict.unreachable)


def _print(verdict: Verdict, prefix: str) -> None:
    if verdict.ok:
        for problem in verdict.problems:
            print(f"problem: {problem}")
        print(f"{prefix}every node's routes reach every other node"
              f" ({verdict.scenarios} cases simulated)")
    else:
        print(f"{prefix}some routes do not reach:")
        for line in verdict.lines():
            print(f"  {line}")


def _read(config: Config, *, leader: bool = False) -> Snapshot | None:
    async def read() -> Snapshot:
        etcd = Etcd(config.etcd_endpoints, config.tls, timeout=config.etcd_timeout)
        try:
            snapshot = await load(etcd, lambda: new_state(config))
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
        print(f"rrwatch: cannot read etcd: {e}", file=sys.stderr)
        return None
    for key, reason in sorted(snapshot.bad.items()):
        print(f"skipped {key}: {reason}", file=sys.stderr)
    return snapshot

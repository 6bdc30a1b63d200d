"""One-shot commands that read one snapshot of etcd: `rrwatch plan` and `rrwatch verify`."""

from __future__ import annotations

import copy
import sys

import trio

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


def _read(config: Config) -> Snapshot | None:
    async def read() -> Snapshot:
        etcd = Etcd(config.etcd_endpoints, config.tls, timeout=config.etcd_timeout)
        try:
            return await load(etcd, lambda: new_state(config))
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

"""`rrwatch mesh off` and `rrwatch mesh on`: Calico's node-to-node mesh, in the default
BGPConfiguration. Off only when every client has Established sessions to enough RRs, as the
session reports say; otherwise it refuses and names the clients that lack them. The daemon never
turns the mesh by itself: this is the last step of a migration, and an operator's.
"""

from __future__ import annotations

import sys

import trio

from rrwatch.cli.commands import read_etcd
from rrwatch.config import Config
from rrwatch.core import edits
from rrwatch.core.breaks import mesh_off_problems
from rrwatch.core.calico import BGP_CONFIG
from rrwatch.core.text import printable
from rrwatch.errors import ExitStatus
from rrwatch.etcd import Etcd, EtcdError, mod_is, put


def mesh(config: Config, enabled: bool, *, rrs: int = 2) -> int:
    """Turn the mesh on or off with a guarded write; the exit status."""
    snapshot = read_etcd(config)
    if snapshot is None:
        return ExitStatus.UNAVAILABLE
    state = snapshot[0].state
    if not state.bgp_readable:
        _say(f"rrwatch: {BGP_CONFIG} cannot be read; fix it first", error=True)
        return ExitStatus.FAILED
    if state.bgp.mesh_enabled == enabled:
        _say(f"the node-to-node mesh is {'on' if enabled else 'off'} already")
        return ExitStatus.OK
    if not enabled and (problems := mesh_off_problems(state, rrs)):
        clients = len({problem.split(" ", 1)[0] for problem in problems})  # one per family
        lack = "client lacks" if clients == 1 else "clients lack"
        _say(f"rrwatch: not turning the node-to-node mesh off: {clients} {lack}"
             f" Established sessions to {rrs} RRs (or to all of theirs):", error=True)
        for problem in problems:
            _say(f"  {problem}", error=True)
        return ExitStatus.FAILED
    if config.dry_run:
        _say(f"would turn the node-to-node mesh {'on' if enabled else 'off'} (dry run)")
        return ExitStatus.OK

    async def write() -> int | None:
        etcd = Etcd.of(config)
        try:
            kv = await etcd.get(BGP_CONFIG)
            revision = 0 if kv is None else kv.mod_revision
            if revision != state.bgp.revision:
                return None
            value = edits.set_mesh(None if kv is None else kv.value, enabled)
            result = await etcd.txn([mod_is(BGP_CONFIG, revision)], [put(BGP_CONFIG, value)])
            return result.revision if result.succeeded else None
        finally:
            await etcd.close()

    try:
        written = trio.run(write)
    except EtcdError as e:
        _say(f"rrwatch: cannot write {BGP_CONFIG}: {e}", error=True)
        return ExitStatus.UNAVAILABLE
    if written is None:
        _say(f"rrwatch: {BGP_CONFIG} changed meanwhile; nothing written: run it again",
             error=True)
        return ExitStatus.FAILED
    _say(f"the node-to-node mesh is {'on' if enabled else 'off'} (revision {written})")
    return ExitStatus.OK


def _say(line: str, *, error: bool = False) -> None:
    print(printable(line), file=sys.stderr if error else sys.stdout)

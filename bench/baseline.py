"""The seed operator's way, for comparison (B3): every node event lists all nodes and BGPPeers,
builds the model from scratch, plans and writes.

It shares rrwatch's etcd client, parser, planner and write codecs, so the only difference
measured is the event-driven model. Configured by the same environment as `rrwatch run`; one
instance only (no leader election). Prints `ready`, then `<revision> <writes>` per event.
"""

from __future__ import annotations

import os

import trio

from rrwatch import config
from rrwatch.core import calico
from rrwatch.core.plan import Planner
from rrwatch.daemon.live import Live
from rrwatch.daemon.records import load
from rrwatch.daemon.requests import write_request
from rrwatch.etcd import Etcd, EtcdError, get, mod_is


async def reconcile(etcd: Etcd, live: Live) -> int:
    """List everything, plan from it, and write what the plan says; the writes that landed."""
    snapshot = await load(etcd, live.records)
    policy = live.settings.policy
    _, plan = Planner(policy).plan(snapshot.state)
    landed = 0
    for op in plan.make + plan.brk:
        current = await etcd.get(op.key)
        write = write_request(op, current, policy.rr_label)
        if write is not None:
            result = await etcd.txn([mod_is(op.key, op.revision or 0)], [write], [get(op.key)])
            landed += result.succeeded
    return landed


async def main() -> None:
    cfg = config.load(os.environ, {}, default_file="")
    live = Live(cfg)
    etcd = Etcd(cfg.etcd_endpoints, cfg.tls, timeout=cfg.etcd_timeout, watch_timeout=3600)
    revision = await etcd.probe()
    print("ready", flush=True)
    async with etcd.watch(calico.NODES, revision + 1) as stream:
        async for message in stream:
            if isinstance(message, EtcdError):
                raise message
            for event in message.events:
                print(event.revision, await reconcile(etcd, live), flush=True)


if __name__ == "__main__":
    trio.run(main)

"""`rrwatch demo`: a local TLS etcd, a simulated cluster, and the daemon converging as it changes.

Everything runs on this machine and is gone afterwards: the etcd process and its certificates
live in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable

import trio

from rrwatch import config
from rrwatch.core import calico, edits
from rrwatch.daemon.run import Daemon
from rrwatch.etcd import Etcd, put
from rrwatch.testing import local_etcd, pki, simulate
from rrwatch.tls import TlsFiles

ZONES = ("a", "b", "c")
PER_ZONE = 50
RATIO = "0.05"  # larger than the seed's 0.005, so a 50-node zone shows scaling


def main(*, verbose: bool = False) -> int:
    _quiet_logging(verbose)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rrwatch-demo-") as workdir:
        print("Starting a local etcd with mutual TLS (certificates made just now)...")
        certs = pki.make_pki(workdir)
        [server] = local_etcd.start_cluster(workdir, certs, 1)
        try:
            trio.run(_scenario, server.endpoint, certs.client)
        finally:
            server.stop()
    print(f"\nDemo finished in {time.monotonic() - started:.1f} s; nothing left running.")
    return 0


def _quiet_logging(verbose: bool) -> None:
    """The daemon's writes, one per line; everything else only with -v."""
    if verbose:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("    %(message)s"))
    writes = logging.getLogger("rrwatch.reconcile")
    writes.addHandler(handler)
    writes.propagate = False
    logging.getLogger().setLevel(logging.WARNING)
    writes.setLevel(logging.INFO)


async def _scenario(endpoint: str, client: TlsFiles) -> None:
    settings = config.load({
        "ETCD_ENDPOINTS": endpoint,
        "ETCD_CA_CERT_FILE": client.ca,
        "ETCD_CERT_FILE": client.cert,
        "ETCD_KEY_FILE": client.key,
        "ROUTE_REFLECTOR_ZONE_LABEL": simulate.ZONE_LABEL,
        "ROUTE_REFLECTOR_RATIO": RATIO,
        "RRWATCH_SETTLE": "1",
    }, default_file="")  # the demo's own settings, never /etc/rrwatch's
    etcd = Etcd(settings.etcd_endpoints, settings.tls)
    cluster = {}
    for zone in ZONES:
        cluster.update(simulate.nodes(zone, range(PER_ZONE)))
    await simulate.put_all(etcd, cluster)
    print(f"Seeded {len(cluster)} Calico nodes in zones {', '.join(ZONES)}; "
          f"policy: ratio {RATIO}, min 3, max 25, topology simple.\n")

    daemon = Daemon(settings)
    async with trio.open_nursery() as nursery:
        started = time.monotonic()
        await nursery.start(daemon.run)
        print("The daemon starts, takes a snapshot and converges:")
        await _settled(daemon, {})
        print(f"  converged in {time.monotonic() - started:.2f} s\n")

        extra = simulate.nodes("a", range(100, 130))
        print(f"30 nodes join zone a ({PER_ZONE + 30} nodes: ratio asks for 4 RRs):")
        await _step(daemon, etcd, lambda: simulate.put_all(etcd, extra), extra)

        state = daemon.watcher.state
        victim = min(n for n in state.marked if state.zone_of(state.nodes[n]) == "b")
        key = calico.NODES + victim
        print(f"RR {victim} loses its BGP address (a replacement comes first, then the demotion):")
        await _step(daemon, etcd, lambda: _drop_address(etcd, key), {key: b""})

        print("The 30 nodes leave zone a again (back to 3 RRs):")
        await _step(daemon, etcd, lambda: simulate.delete_all(etcd, extra), extra)

        _table(daemon)
        nursery.cancel_scope.cancel()
    await etcd.close()


async def _drop_address(etcd: Etcd, key: str) -> int:
    current = await etcd.get(key)
    if current is None:
        raise RuntimeError(f"{key} is gone: the demo wrote it and nothing else deletes it")
    obj = json.loads(current.value)
    obj["spec"]["bgp"] = {k: v for k, v in obj["spec"]["bgp"].items() if "Address" not in k}
    return (await etcd.txn([], [put(key, edits.dumps(obj))])).revision


async def _step(
    daemon: Daemon, etcd: Etcd, change: Callable[[], Awaitable[int]], keys: Iterable[str]
) -> None:
    started = time.monotonic()
    revision = await change()
    await _settled(daemon, dict.fromkeys(keys, revision))
    print(f"  converged in {time.monotonic() - started:.2f} s\n")


async def _settled(daemon: Daemon, writes: dict[str, int]) -> None:
    """Wait until the daemon has seen `writes` and found nothing left to do."""
    await daemon.watcher.wait_seen(writes)
    await daemon.reconciler.wait_converged(daemon.watcher.version)


def _table(daemon: Daemon) -> None:
    state = daemon.watcher.state
    nodes = Counter(state.zone_of(n) for n in state.nodes.values())
    print(f"{'zone':<6}{'nodes':>7}{'RRs':>6}  cluster IDs   route reflectors")
    for zone in sorted(nodes):
        rrs = sorted(n for n in state.marked if state.zone_of(state.nodes[n]) == zone)
        # An RR whose cluster ID has yet to land (marked by its label alone) shows none.
        ids = sorted({c for n in rrs if (c := state.nodes[n].cluster_id) is not None})
        print(f"{zone:<6}{nodes[zone]:>7}{len(rrs):>6}  {', '.join(ids):<13} {', '.join(rrs)}")
    peers = sorted(p.name for p in state.peers.values() if p.owned)
    print(f"BGPPeers owned by rrwatch: {', '.join(peers)}")

"""Cold convergence: `rrwatch run` start → the last write of the mesh, on a local TLS etcd.

    .venv/bin/python bench/converge.py [--zones 3] [--nodes 40] [--runs 5]

Prints, per run, the time from process start to the daemon's first snapshot ("in sync") and to
convergence (every expected RR promoted and both BGPPeers written), then the medians.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import trio

from rrwatch import calico, local_etcd, pki, simulate
from rrwatch.etcd import Etcd
from rrwatch.tls import TlsFiles


async def _run(endpoint: str, tls: TlsFiles, zones: int, per_zone: int, logdir: str):
    etcd = Etcd([endpoint], tls)
    names = "abcdefghijklmnopqrstuvwxyz"[:zones]
    # Start from a clean keyspace each run.
    await simulate.delete_all(etcd, [kv.key for kv in (await etcd.snapshot(["/calico/"]))[1]])
    for zone in names:
        await simulate.put_all(etcd, simulate.nodes(zone, range(per_zone)))
    want = zones * min(per_zone, max(3, min(25, math.ceil(per_zone * 0.005))))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ROUTE_REFLECTOR_"))}
    env.update(ETCD_ENDPOINTS=endpoint, ETCD_CA_CERT_FILE=tls.ca, ETCD_CERT_FILE=tls.cert,
               ETCD_KEY_FILE=tls.key, ROUTE_REFLECTOR_ZONE_LABEL=simulate.ZONE_LABEL)
    log_path = os.path.join(logdir, "daemon.log")
    with open(log_path, "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "rrwatch", "run"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    synced = None
    try:
        while True:
            if synced is None and "in sync with" in open(log_path).read():
                synced = time.monotonic() - started
            _, kvs = await etcd.snapshot([calico.NODES, calico.PEERS])
            rrs = sum(b"routeReflectorClusterID" in kv.value for kv in kvs)
            peers = sum(kv.key.startswith(calico.PEERS) for kv in kvs)
            if rrs == want and peers == 2:
                return synced, time.monotonic() - started
            await trio.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait()
        await etcd.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zones", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=40, help="nodes per zone")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        certs = pki.make_pki(workdir)
        [server] = local_etcd.start_cluster(workdir, certs, 1)
        try:
            synced, converged = [], []
            for run in range(args.runs):
                s, c = trio.run(_run, server.endpoint, certs.client, args.zones, args.nodes,
                                workdir)
                synced.append(s)
                converged.append(c)
                print(f"run {run + 1}: in sync {s * 1000:.0f} ms, converged {c * 1000:.0f} ms "
                      f"after process start")
        finally:
            server.stop()
    sync_ms = statistics.median(synced) * 1000
    converge_ms = statistics.median(converged) * 1000
    print(f"{args.zones} zones x {args.nodes} nodes, median of {args.runs}: "
          f"in sync {sync_ms:.0f} ms, converged {converge_ms:.0f} ms "
          f"(after sync: {converge_ms - sync_ms:.0f} ms)")


if __name__ == "__main__":
    main()

"""Draw docs/img/<topology>.svg: the mesh rrwatch builds in each topology, by `rrwatch graph`.

For each topology: a fresh local etcd with mutual TLS, 3 zones of 6 simulated Calico nodes and
the node-to-node mesh off; `rrwatch run` until `rrwatch plan --detailed-exitcode` finds nothing
left to write; then `rrwatch graph --format svg`. Needs an etcd binary (as the tests do) and
Graphviz. Run from the top of the source: PYTHONPATH=. python docs/pictures.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import trio

from rrwatch.core import calico, edits
from rrwatch.etcd import Etcd
from rrwatch.testing import local_etcd, pki, simulate

TOPOLOGIES = ("simple", "zoned", "multi")
ZONES = ("a", "b", "c")
PER_ZONE = 6
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "img")
MESH_OFF = edits.dumps({
    "kind": "BGPConfiguration", "apiVersion": "projectcalico.org/v3",
    "metadata": {"name": "default", "uid": "5d2e", "creationTimestamp": "2024-05-01T12:00:00Z"},
    "spec": {"nodeToNodeMeshEnabled": False, "asNumber": 64512},
})


async def seed(endpoint: str, tls: pki.TlsFiles) -> None:
    items = {calico.BGP_CONFIG: MESH_OFF}
    for zone in ZONES:
        items.update(simulate.nodes(zone, range(PER_ZONE)))
    etcd = Etcd([endpoint], tls)
    try:
        await simulate.put_all(etcd, items)
    finally:
        await etcd.close()


def environment(endpoint: str, tls: pki.TlsFiles, topology: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("ETCD_", "RRWATCH_", "ROUTE_REFLECTOR_"))}
    return {
        **clean,
        "ETCD_ENDPOINTS": endpoint,
        "ETCD_CA_CERT_FILE": tls.ca,
        "ETCD_CERT_FILE": tls.cert,
        "ETCD_KEY_FILE": tls.key,
        "ROUTE_REFLECTOR_ZONE_LABEL": simulate.ZONE_LABEL,
        "ROUTE_REFLECTOR_TOPOLOGY": topology,
        "ROUTE_REFLECTOR_MIN": "2",  # two RRs per zone keep the pictures readable
        "RRWATCH_SETTLE": "0.5",
    }


def rrwatch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rrwatch", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def draw(topology: str, workdir: str) -> str:
    certs = pki.make_pki(os.path.join(workdir, "pki"))
    [server] = local_etcd.start_cluster(os.path.join(workdir, "etcd"), certs, 1)
    daemon = None
    try:
        trio.run(seed, server.endpoint, certs.client)
        env = environment(server.endpoint, certs.client, topology)
        with open(os.path.join(workdir, "daemon.log"), "wb") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "rrwatch", "run"], env=env,
                                      stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while (plan := rrwatch("plan", "--detailed-exitcode", env=env)).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(workdir, "daemon.log")) as f:
                    raise RuntimeError(f"{topology}: no convergence\n{plan.stdout}"
                                       f"{plan.stderr}\n{f.read()}")
            time.sleep(0.5)
        out = os.path.join(OUT, f"{topology}.svg")
        graph = rrwatch("graph", "--format", "svg", "-o", out, env=env)
        if graph.returncode != 0:
            raise RuntimeError(f"{topology}: rrwatch graph: {graph.stderr}")
        return out
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=20)
        server.stop()


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    for topology in TOPOLOGIES:
        with tempfile.TemporaryDirectory(prefix=f"rrwatch-pictures-{topology}-") as workdir:
            print(draw(topology, workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

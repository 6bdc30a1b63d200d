"""rrwatch's benchmarks, measured side by side in one run on a real TLS etcd on loopback.

    make bench          1,000 / 10,000 / 50,000 nodes, 60 s of quiet (about 20 minutes)
    make bench-quick    1,000 / 10,000 nodes, fewer events, 10 s of quiet (a few minutes)

For each size the cluster (3 zones, realistic node JSON, batched transactions) is loaded
afresh, and rrwatch runs the `multi` topology, where a new node needs one write (its client
labels) and a label change elsewhere needs none.

B1 cold convergence: daemon start -> last write, beside etcd's floor measured in the same run.
B2 event latency: node put -> resulting write visible (or, for a change that needs no write,
   -> the plan that found nothing to do), and a burst of 1,000 node adds.
B3 bytes read and CPU per event, rrwatch against bench/baseline.py (a full re-listing).
B4 daemon RSS per node. B5 writes in a quiet spell; BGPPeers per topology.
B6 BGP sessions changed by one node add, one node removal, one RR loss.

docs/performance.md says what each figure means and records a run.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import attrs
import trio

from bench.daemon import Baseline, Rrwatch
from rrwatch import config
from rrwatch.core import calico, edits
from rrwatch.core import sessions as verify
from rrwatch.core.mesh import desired
from rrwatch.daemon.live import Live
from rrwatch.daemon.records import load
from rrwatch.etcd import Etcd, EtcdError, delete, prefix_end, put
from rrwatch.testing import local_etcd, pki, simulate

ZONES = ("a", "b", "c")
DEBOUNCE = 0.1  # rrwatch's default
SETTLE = 2.0  # shorter than the default 10 s, so that B6's RR loss completes quickly
TOPOLOGIES = ("simple", "zoned", "multi")
SEED_PEERS_PER_NODE = 3  # the seed operator's multi topology (its README's limitations)


@attrs.frozen
class Profile:
    sizes: tuple[int, ...]
    events: int  # of each kind, for B2
    burst: int
    per_event: int  # B3 events for rrwatch
    baseline_events: int
    idle: float  # B5 seconds


FULL = Profile((1000, 10000, 50000), events=200, burst=1000, per_event=100, baseline_events=20,
               idle=60)
QUICK = Profile((1000, 10000), events=50, burst=1000, per_event=50, baseline_events=10, idle=10)
B3_SIZE = 10000


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p% of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Bench:
    def __init__(self, workdir: str, profile: Profile) -> None:
        self.workdir = workdir
        self.profile = profile
        self.certs = pki.make_pki(workdir)
        [self.server] = local_etcd.start_cluster(workdir, self.certs, 1)
        self.etcd = Etcd([self.server.endpoint], self.certs.client, watch_timeout=3600)
        tls = self.certs.client
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("ETCD_", "ROUTE_REFLECTOR_", "RRWATCH_"))}
        self.env.update(
            ETCD_ENDPOINTS=self.server.endpoint, ETCD_CA_CERT_FILE=tls.ca,
            ETCD_CERT_FILE=tls.cert, ETCD_KEY_FILE=tls.key,
            ROUTE_REFLECTOR_ZONE_LABEL=simulate.ZONE_LABEL, ROUTE_REFLECTOR_TOPOLOGY="multi",
            RRWATCH_DEBOUNCE=str(DEBOUNCE), RRWATCH_SETTLE=str(SETTLE))
        self.config = config.load(self.env, {}, default_file="")
        self._runs = 0
        self.clients: list[str] = []  # node keys of some non-RRs, for label changes
        self.put_rtt: list[float] = []  # the bench's own puts, sent -> acknowledged
        self._visible: dict[str, list] = {}  # key -> [puts to skip, done, arrival times]

    # -- etcd -------------------------------------------------------------------------------

    async def wipe(self) -> None:
        """An empty keyspace, history compacted."""
        ops = [_delete_prefix(p) for p in (b"/calico/", b"/rrwatch/", b"/bench/")]
        result = await self.etcd.txn([], ops)
        self.server.compact(result.revision)

    async def load_cluster(self, size: int) -> tuple[int, float]:
        """`size` nodes over the zones, written in batched transactions, and the node-to-node
        mesh off; (revision, seconds)."""
        await self.wipe()
        started = time.perf_counter()
        revision = await simulate.put_all(self.etcd, {calico.BGP_CONFIG: simulate.mesh_off()})
        for i, zone in enumerate(ZONES):
            count = size // len(ZONES) + (i < size % len(ZONES))
            revision = await simulate.put_all(self.etcd, simulate.nodes(zone, range(count)))
        return revision, time.perf_counter() - started

    async def floor_read(self) -> float:
        """etcd's floor, first half: every watched key read once, in pages."""
        started = time.perf_counter()
        await self.etcd.snapshot(calico.WATCHED_PREFIXES)
        return time.perf_counter() - started

    async def floor_write(self, since: int) -> tuple[float, int]:
        """etcd's floor, second half: the records rrwatch wrote (every key changed after
        `since`, with its value now) written again, to scratch keys, in 128-op transactions."""
        _, kvs = await self.etcd.snapshot(["/calico/"])
        records = {"/bench/floor" + kv.key: kv.value for kv in kvs if kv.mod_revision > since}
        started = time.perf_counter()
        await simulate.put_all(self.etcd, records)
        elapsed = time.perf_counter() - started
        await self.etcd.txn([], [_delete_prefix(b"/bench/")])
        return elapsed, len(records)

    # -- the bench's own watch: when a write becomes visible ---------------------------------

    async def watch_nodes(self, *, task_status: trio.TaskStatus[None]) -> None:
        """The bench's watch, from now: opened only for the events measured, so that it never
        has a first start's tens of thousands of writes to wade through first."""
        revision = await self.etcd.probe()
        task_status.started()
        while True:
            try:
                async with self.etcd.watch(calico.NODES, revision + 1) as stream:
                    async for message in stream:
                        if isinstance(message, EtcdError):
                            raise message
                        now = time.time()
                        for event in message.events:
                            revision = event.revision
                            wanted = self._visible.get(event.key)
                            if wanted is None or event.value is None:
                                continue
                            if wanted[0]:
                                wanted[0] -= 1
                            else:
                                wanted[2].append(now)
                                wanted[1].set()
                                del self._visible[event.key]
            except EtcdError as e:
                print(f"bench watch: {e}; reopening", file=sys.stderr)

    def expect_write(self, key: str, skip: int = 1) -> tuple[trio.Event, list[float]]:
        """An event set when `key` is put the time after next (the next put being the bench's
        own), and the time the bench saw that put."""
        done, when = trio.Event(), []
        self._visible[key] = [skip, done, when]
        return done, when

    # -- the daemon --------------------------------------------------------------------------

    def start_rrwatch(self, topology: str = "multi") -> Rrwatch:
        self._runs += 1
        return Rrwatch({**self.env, "ROUTE_REFLECTOR_TOPOLOGY": topology},
                       os.path.join(self.workdir, f"rrwatch-{self._runs}.log"),
                       local_etcd.free_port())

    # -- the benchmarks ---------------------------------------------------------------------

    async def empty_rss(self) -> int:
        await self.wipe()
        daemon = self.start_rrwatch()
        try:
            await daemon.wait_in_sync()
            await daemon.settled(0)
            await trio.sleep(1)
            return daemon.rss()
        finally:
            daemon.stop()

    async def cold(self, size: int, topology: str) -> tuple[dict, Rrwatch]:
        """B1: a freshly loaded cluster, the floor's read, rrwatch from start to its last
        write, then the floor's write of what rrwatch wrote. The daemon is left running."""
        out: dict = {"topology": topology}
        revision, out["load_s"] = await self.load_cluster(size)
        out["floor_read_s"] = await self.floor_read()
        daemon = self.start_rrwatch(topology)
        try:
            done = await daemon.settled(revision)
        except BaseException:
            daemon.stop()
            raise
        last = max((t for t, r in daemon.writes), default=done)
        out["cold_s"] = last - daemon.started
        out["cold_sync_s"] = daemon.in_sync - daemon.started
        out["cold_writes"] = int(daemon.metric("rrwatch_writes_total"))
        out["cold_txns"] = len(daemon.writes)
        out["floor_write_s"], out["floor_records"] = await self.floor_write(revision)
        out["floor_s"] = out["floor_read_s"] + out["floor_write_s"]
        return out, daemon

    async def size(self, size: int, empty_rss: int) -> dict:
        out: dict = {"nodes": size}
        # `zoned` writes a few records: its first start is mostly reading the cluster.
        zoned, daemon = await self.cold(size, "zoned")
        daemon.stop()
        # `multi` writes every node; everything else runs on it.
        multi, daemon = await self.cold(size, "multi")
        out["cold"] = [zoned, multi]
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.watch_nodes)
                await self.on_multi(out, daemon, size, empty_rss)
                nursery.cancel_scope.cancel()
        finally:
            daemon.stop()
        if size == B3_SIZE:
            baseline = Baseline(self.env, os.path.join(self.workdir, "baseline.log"))
            try:
                await baseline.wait_ready()
                out["baseline_per_event"] = await self.per_event(
                    baseline, self.profile.baseline_events)
            finally:
                baseline.stop()
        return out

    async def on_multi(self, out: dict, daemon: Rrwatch, size: int, empty_rss: int) -> None:
        """B2 to B6, on the converged `multi` cluster."""
        # The bench's own full collections, over what the loading and the floor left, would
        # otherwise pause its watch in the middle of a measurement.
        gc.collect()
        gc.freeze()
        self.clients = (await self.find_clients())[:1000]
        # B2
        self.put_rtt = []
        out["add_latency"] = await self.adds(daemon, self.profile.events)
        out["change_latency"] = await self.changes(daemon, self.profile.events)
        out["put_rtt"] = self.put_rtt
        out["burst"] = await self.burst()
        # Adding nodes can add RRs, and so move clients: let that finish.
        await daemon.settled(await self.etcd.probe())
        # B4, with the nodes the events added
        out["rss_nodes"] = nodes = size + self.profile.burst
        out["rss"] = daemon.rss()
        out["rss_per_node"] = out["rss"] / nodes
        out["rss_marginal_per_node"] = (out["rss"] - empty_rss) / nodes
        # B5
        out["idle"] = await self.idle(daemon)
        if size == B3_SIZE:
            out["rrwatch_per_event"] = await self.per_event(daemon, self.profile.per_event)
            out["peers"] = await self.peers_per_topology()
            out["churn"] = await self.churn(daemon)

    async def adds(self, daemon: Rrwatch, count: int) -> list[float]:
        """New nodes, one at a time: put acknowledged -> their client labels seen by a watch.

        Each is removed again before the next, so that the count of RRs, which follows the count
        of nodes, never changes: a new RR re-plans every client, which is not what this measures
        (the burst and B6 do that)."""
        latencies = []
        for i in range(count):
            zone = ZONES[i % len(ZONES)]
            name = simulate.node_name(zone, 100000 + i)
            key = calico.NODES + name
            value = simulate.node_value(name, zone, 100000 + i)
            done, when = self.expect_write(key)
            sent = time.time()
            await self.etcd.txn([], [put(key, value)])
            acked = time.time()
            self.put_rtt.append(acked - sent)
            await done.wait()
            latencies.append(when[0] - acked)
            await daemon.settled((await self.etcd.txn([], [delete(key)])).revision)
        return latencies

    async def changes(self, daemon: Rrwatch, count: int) -> list[float]:
        """A label no policy reads changes on a client, one at a time: put acknowledged -> the
        plan that found nothing to write."""
        latencies = []
        for i in range(count):
            _, started, revision = await self.touch(i)
            latencies.append(await daemon.settled(revision) - started)
        return latencies

    async def touch(self, i: int) -> tuple[str, float, int]:
        """Change the `rack` label of a client node; (key, when acknowledged, revision)."""
        key = self.clients[i % len(self.clients)]
        kv = await self.etcd.get(key)
        obj = json.loads(kv.value)
        obj["metadata"]["labels"]["rack"] = f"bench-{time.monotonic_ns()}"
        value = edits.dumps(obj)
        sent = time.time()
        result = await self.etcd.txn([], [put(key, value)])
        acked = time.time()
        self.put_rtt.append(acked - sent)
        return key, acked, result.revision

    async def find_clients(self) -> list[str]:
        """Node keys that are not route reflectors."""
        _, kvs = await self.etcd.snapshot([calico.NODES])
        return [kv.key for kv in kvs if b"routeReflectorClusterID" not in kv.value]

    async def burst(self) -> dict:
        """1,000 node adds at once, in 128-op transactions (a scale-up, or a bulk import):
        adds per second from the first put to the last one's labels seen."""
        items = {}
        for i in range(self.profile.burst):
            zone, index = ZONES[i % 3], 200000 + i
            name = simulate.node_name(zone, index)
            items[calico.NODES + name] = simulate.node_value(name, zone, index)
        waits = [self.expect_write(key) for key in items]
        started = time.time()
        await simulate.put_all(self.etcd, items)
        put_s = time.time() - started
        for done, _ in waits:
            await done.wait()
        total_s = max(when[0] for _, when in waits) - started
        return {"adds": len(items), "put_s": put_s, "total_s": total_s,
                "per_s": len(items) / total_s}

    async def idle(self, daemon: Rrwatch) -> dict:
        revision = await self.etcd.probe()
        writes = daemon.metric("rrwatch_writes_total")
        cpu, read = daemon.cpu(), daemon.bytes_read()
        await trio.sleep(self.profile.idle)
        return {"seconds": self.profile.idle,
                "etcd_revisions": await self.etcd.probe() - revision,
                "rrwatch_writes": daemon.metric("rrwatch_writes_total") - writes,
                "cpu_s": daemon.cpu() - cpu, "bytes_read": daemon.bytes_read() - read}

    async def per_event(self, proc: Rrwatch | Baseline, count: int) -> dict:
        """CPU seconds and bytes read per node event (a label change needing no write),
        events one at a time, each handled before the next."""
        cpu, read = proc.cpu(), proc.bytes_read()
        started = time.perf_counter()
        for i in range(count):
            _, _, revision = await self.touch(i)
            if isinstance(proc, Rrwatch):
                await proc.settled(revision)
            else:
                await proc.handled_after(revision)
        return {"events": count, "cpu_s": (proc.cpu() - cpu) / count,
                "bytes": (proc.bytes_read() - read) / count,
                "wall_s": (time.perf_counter() - started) / count}

    async def peers_per_topology(self) -> dict[str, int]:
        """Owned BGPPeers each topology wants for the cluster as it is now."""
        snapshot = await load(self.etcd, Live(self.config).records)
        policy = Live(self.config).settings.policy
        return {topology: len(desired(snapshot.state, attrs.evolve(policy, topology=topology))
                              .peers)
                for topology in TOPOLOGIES}

    async def sessions(self) -> tuple[set[frozenset[str]], frozenset[str]]:
        """The IPv4 BGP sessions the records in etcd bring up, and the route reflectors."""
        snapshot = await load(self.etcd, Live(self.config).records)
        fabric = verify.fabric(snapshot.state, 4)
        pairs = {frozenset((a, b)) for a, ns in fabric.sessions.items() for b in ns}
        return pairs, fabric.reflectors

    async def churn(self, daemon: Rrwatch) -> dict:
        """Sessions added and removed by one change each, once rrwatch has settled, and how
        many of those involve neither the node changed nor a node promoted for it."""
        out = {}
        before, rrs = await self.sessions()

        async def step(label: str, op: dict, who: str) -> None:
            nonlocal before, rrs
            writes = daemon.metric("rrwatch_writes_total")
            result = await self.etcd.txn([], [op])
            await daemon.settled(result.revision)
            after, rrs_after = await self.sessions()
            involved = {who} | (rrs_after - rrs)
            out[label] = {"added": len(after - before), "removed": len(before - after),
                          "writes": int(daemon.metric("rrwatch_writes_total") - writes),
                          "others": len([s for s in before ^ after if not s & involved]),
                          "promoted": len(rrs_after - rrs)}
            before, rrs = after, rrs_after

        name = simulate.node_name("b", 300000)
        await step("node add", put(calico.NODES + name, simulate.node_value(name, "b", 300000)),
                   name)
        gone = self.clients[-1]
        await step("node removal", delete(gone), gone[len(calico.NODES):])
        rr = sorted(rrs)[0]
        await step("RR loss", delete(calico.NODES + rr), rr)
        return out


def _delete_prefix(prefix: bytes) -> dict:
    return {"request_delete_range": {"key": base64.b64encode(prefix).decode(),
                                     "range_end": base64.b64encode(prefix_end(prefix)).decode()}}


# -- the report ------------------------------------------------------------------------------


def machine() -> str:
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")), platform.machine())
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024
    etcd = subprocess.run([local_etcd.etcd_binary(), "--version"], capture_output=True,
                          text=True).stdout.splitlines()[0]
    return (f"{model}, {os.cpu_count()} CPUs, {mem:.0f} GiB; Linux {platform.release()}; "
            f"Python {platform.python_version()}; {etcd}, one member, TLS on loopback")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def table(title: str, header: list[str], rows: list[list[object]]) -> str:
    lines = [f"\n### {title}\n", "| " + " | ".join(header) + " |",
             "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(results: list[dict], empty_rss: int, profile: Profile) -> str:
    out = []
    out.append(table("B1 cold convergence (target: rrwatch <= 1.5 x floor)",
                     ["nodes", "topology", "load s", "floor read s", "floor write s (records)",
                      "floor s", "rrwatch: in sync s", "rrwatch: last write s (writes / txns)",
                      "rrwatch / floor"],
                     [[r["nodes"], c["topology"], f"{c['load_s']:.2f}",
                       f"{c['floor_read_s']:.2f}",
                       f"{c['floor_write_s']:.2f} ({c['floor_records']})", f"{c['floor_s']:.2f}",
                       f"{c['cold_sync_s']:.2f}",
                       f"{c['cold_s']:.2f} ({c['cold_writes']} / {c['cold_txns']})",
                       f"{c['cold_s'] / c['floor_s']:.2f}"] for r in results for c in r["cold"]]))
    rows = []
    for r in results:
        add, change = r["add_latency"], r["change_latency"]
        rows.append([r["nodes"], ms(percentile(add, 50)), ms(percentile(add, 99)),
                     ms(percentile(add, 99) - DEBOUNCE), ms(percentile(change, 50)),
                     ms(percentile(change, 99)), ms(percentile(change, 99) - DEBOUNCE),
                     f"{r['burst']['per_s']:.0f} ({r['burst']['total_s']:.2f} s;"
                     f" put in {r['burst']['put_s']:.2f} s)",
                     f"{ms(percentile(r['put_rtt'], 50))} / {ms(percentile(r['put_rtt'], 99))}"])
    out.append(table(f"B2 event latency from the put's acknowledgement, ms ({profile.events} "
                     f"events of each kind, debounce "
                     f"{DEBOUNCE * 1000:.0f} ms; target: p99 beyond debounce <= 10 ms at 10,000,"
                     " growth 1,000 -> 50,000 <= 2x)",
                     ["nodes", "add p50", "add p99", "add p99 - debounce", "no-write p50",
                      "no-write p99", "no-write p99 - debounce",
                      f"burst of {profile.burst} adds: adds/s", "the bench's own put p50 / p99"],
                     rows))
    first, last = results[0], results[-1]
    for kind in ("add_latency", "change_latency"):
        growth = ((percentile(last[kind], 99) - DEBOUNCE)
                  / (percentile(first[kind], 99) - DEBOUNCE))
        out.append(f"\n{kind}: p99 beyond debounce grows {growth:.2f}x from {first['nodes']}"
                   f" to {last['nodes']} nodes")
    b3 = next((r for r in results if "baseline_per_event" in r), None)
    if b3:
        mine, base = b3["rrwatch_per_event"], b3["baseline_per_event"]
        out.append(table(f"B3 per node event at {b3['nodes']} nodes, against full re-listing "
                         "(target: >= 100x fewer bytes)",
                         ["", "events", "bytes read / event", "CPU ms / event",
                          "wall ms / event"],
                         [["rrwatch", mine["events"], f"{mine['bytes']:.0f}",
                           ms(mine["cpu_s"]), ms(mine["wall_s"])],
                          ["baseline", base["events"], f"{base['bytes']:.0f}",
                           ms(base["cpu_s"]), ms(base["wall_s"])],
                          ["baseline / rrwatch", "", f"{base['bytes'] / mine['bytes']:.0f}x",
                           f"{base['cpu_s'] / max(mine['cpu_s'], 1e-9):.0f}x",
                           f"{base['wall_s'] / mine['wall_s']:.1f}x"]]))
    out.append(table(f"B4 daemon memory (target: <= 2 KiB per node; RSS with an empty cluster "
                     f"{empty_rss / 2**20:.1f} MiB)",
                     ["nodes", "RSS MiB", "RSS / node KiB", "(RSS - empty) / node KiB"],
                     [[r["rss_nodes"], f"{r['rss'] / 2**20:.1f}", f"{r['rss_per_node'] / 1024:.2f}",
                       f"{r['rss_marginal_per_node'] / 1024:.2f}"] for r in results]))
    out.append(table("B5 steady state (target: zero writes)",
                     ["nodes", "quiet s", "etcd revisions", "rrwatch writes", "CPU s",
                      "bytes read"],
                     [[r["nodes"], r["idle"]["seconds"], r["idle"]["etcd_revisions"],
                       f"{r['idle']['rrwatch_writes']:.0f}", f"{r['idle']['cpu_s']:.2f}",
                       r["idle"]["bytes_read"]] for r in results]))
    if b3:
        peers = b3["peers"]
        out.append(table(f"B5 owned BGPPeers per topology at {b3['nodes']} nodes",
                         ["topology", "BGPPeers"],
                         [[t, n] for t, n in peers.items()]
                         + [["seed operator, multi (3 per node)",
                             SEED_PEERS_PER_NODE * b3["nodes"]]]))
        out.append(table(f"B6 churn in multi at {b3['nodes']} nodes (target: a node add changes "
                         "only that node's sessions)",
                         ["change", "sessions added", "sessions removed", "rrwatch writes",
                          "nodes promoted", "changed sessions involving neither the node nor "
                          "one promoted"],
                         [[label, c["added"], c["removed"], c["writes"], c["promoted"],
                           c["others"]] for label, c in b3["churn"].items()]))
    return "\n".join(out)


async def run(profile: Profile, workdir: str, json_path: str | None
              ) -> tuple[list[dict], int]:
    bench = Bench(workdir, profile)
    try:
        empty_rss = await bench.empty_rss()
        results = []
        for size in profile.sizes:
            print(f"-- {size} nodes", file=sys.stderr, flush=True)
            results.append(await bench.size(size, empty_rss))
            if json_path:  # what is done so far, should a later size fail
                with open(json_path, "w") as f:
                    json.dump({"machine": machine(), "empty_rss": empty_rss, "results": results},
                              f, indent=1)
        return results, empty_rss
    finally:
        bench.server.stop()
        await bench.etcd.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the few-minute variant")
    parser.add_argument("--sizes", help="comma-separated node counts (default: by profile)")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    profile = QUICK if args.quick else FULL
    if args.sizes:
        profile = attrs.evolve(profile, sizes=tuple(int(s) for s in args.sizes.split(",")))
    print(f"machine: {machine()}", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rrwatch-bench-") as workdir:
        results, empty_rss = trio.run(run, profile, workdir, args.json)
    print(report(results, empty_rss, profile))
    print(f"\nbench took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()

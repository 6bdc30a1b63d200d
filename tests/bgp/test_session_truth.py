"""Session truth on real BGP: the scenarios of make-before-break, on calico-node's speakers.

Every Calico node runs BIRD 1.6 (`bird` and `bird6`), reconfigured from etcd whenever the
records change, as confd does (`Confd`); every node that may become an RR runs `rrwatch report`;
a sampler reads every node's routes once a second and counts the (receiver, origin, family)
routes missing (`Sampler`). Once the lab has converged, no scenario may miss one:

- a. the RRs move to dedicated machines whose firewall drops BGP (nftables): nothing old goes
  while it is closed, the hold shows in status and metrics, and the move completes once it opens;
  run once more with RRWATCH_VERIFY_SESSIONS=off, whose misses are printed, not asserted;
- b. the topology changes from `simple` to `multi`;
- c. an RR node fails (its BIRD killed, its machine gone) and is replaced;
- d. `rrwatch mesh off` refuses while one client's sessions with its RRs are blocked, naming
  it, and turns the mesh off without a miss once they are up.

Figures print with `pytest -s`.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterable

import attrs
import pytest
import trio

from rrwatch.core import calico, edits
from rrwatch.core.reports import parse_report
from rrwatch.etcd import Etcd, delete
from rrwatch.testing import simulate
from tests import support
from tests.bgp import calico_bird
from tests.bgp.lab import ROUTES, Lab, until_complete

POLICY = "/rrwatch/v1/policy"
ZONES = ("a", "b", "c")
SETTLE = 3.0  # the dwell: how long a new session must be up before an old one goes
ENV = {"ROUTE_REFLECTOR_TOPOLOGY": "simple", "ROUTE_REFLECTOR_ZONE_LABEL": simulate.ZONE_LABEL,
       "RRWATCH_SETTLE": str(SETTLE), "RRWATCH_MAX_DEMOTIONS": "3"}
PER_ZONE = 4


def bgp_config(mesh: bool) -> bytes:
    return edits.dumps({
        "kind": "BGPConfiguration", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "default", "uid": "5e0c", "creationTimestamp": "2024-05-01T12:00:00Z"},
        "spec": {"nodeToNodeMeshEnabled": mesh, "asNumber": 64512}})


async def build(lab: Lab, etcd: Etcd, policy: dict, *, mesh: bool = False,
                labels: dict[str, dict[str, str]] | None = None,
                extra: Iterable[tuple[str, int]] = ()) -> list[str]:
    """Node speakers and their Calico records: PER_ZONE nodes in each zone, and the (zone,
    index) pairs of `extra`; `labels` by node name. The names."""
    items = {calico.BGP_CONFIG: bgp_config(mesh), POLICY: json.dumps(policy).encode()}
    names = []
    for zone, index in [(z, i) for z in ZONES for i in range(PER_ZONE)] + list(extra):
        speaker = lab.add(f"node-{zone}-{index}")
        names.append(speaker.name)
        items[calico.NODES + speaker.name] = simulate.node_value(
            speaker.name, zone, index, ipv4=f"{speaker.ipv4}/16", ipv6=f"{speaker.ipv6}/64",
            labels=(labels or {}).get(speaker.name))
    await simulate.put_all(etcd, items)
    return names


def start_reporters(lab: Lab, start_daemon, names: Iterable[str]) -> dict[str, object]:
    """`rrwatch report` for each named node, on its `bird.ctl` and `bird6.ctl`."""
    reporters = {}
    for name in names:
        speaker = lab.speakers[name]
        reporters[name] = start_daemon(
            {"RRWATCH_LEASE_TTL": "5"}, "--node", name, "--socket", speaker.sockets[0],
            "--socket", speaker.sockets[1], "--report-interval", "0.5", command="report")
    return reporters


@attrs.define
class Confd:
    """calico-node's confd for every node speaker: renders each node's BIRD configuration from
    etcd whenever etcd changes, and starts or reconfigures its BIRDs. A node whose record is
    gone, or whose BIRD was killed, is left alone."""

    lab: Lab
    etcd: Etcd
    revision: int = 0
    renders: int = 0

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await self.sync()
        task_status.started()
        while True:
            await trio.sleep(0.2)
            await self.sync()

    async def sync(self) -> None:
        revision, data = await support.read_cluster(self.etcd)
        if revision == self.revision:
            return
        self.revision = revision
        records = calico_bird.read(data)
        await trio.to_thread.run_sync(self._apply, records)

    def _apply(self, records: calico_bird.Records) -> None:
        for name in records.nodes:
            speaker = self.lab.speakers.get(name)
            if speaker is None or speaker.dead:
                continue
            configs = calico_bird.configs16(records, name, speaker.prefixes)
            if speaker.running:
                speaker.configure_calico(configs)
            else:
                speaker.start_calico(configs)
        self.renders += 1


@attrs.define
class Sampler:
    """Once a second, every node's routes: the (receiver, origin, family) routes missing among
    `nodes`. `drop` takes a node out (its machine is gone) before it goes."""

    lab: Lab
    nodes: list[str]
    samples: list[set[tuple[str, str, int]]] = attrs.Factory(list)

    def drop(self, name: str) -> None:
        self.nodes = [n for n in self.nodes if n != name]

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            started = trio.current_time()
            self.samples.append(await trio.to_thread.run_sync(self.sample))
            await trio.sleep_until(started + 1)

    def sample(self) -> set[tuple[str, str, int]]:
        nodes = list(self.nodes)
        missing = set()
        for receiver in nodes:
            have = self.lab.speakers[receiver].routes()
            for origin in nodes:
                for family, prefix in zip((4, 6), self.lab.speakers[origin].prefixes, strict=True):
                    if origin != receiver and prefix not in have:
                        missing.add((receiver, origin, family))
        return missing

    def misses(self, changed: Iterable[str] = ()) -> list[tuple[str, str, int]]:
        """Every route missing in a sample, between nodes not in `changed` (those whose own
        role changed: their BIRD restarts each of their sessions, as calico-node's does)."""
        out = set(changed)
        return [m for sample in self.samples for m in sorted(sample)
                if m[0] not in out and m[1] not in out]

    def summary(self, changed: Iterable[str] = ()) -> str:
        changed = sorted(set(changed) & set(self.nodes))
        steady = len(self.nodes) - len(changed)
        line = (f"{len(self.misses(changed))} misses between the {steady} nodes whose role held"
                f" ({2 * steady * (steady - 1)} routes) in {len(self.samples)} one-second"
                " samples")
        if changed:
            line += (f"; the {len(changed)} whose role changed ({', '.join(changed)}) blinked:"
                     f" {len(self.misses()) - len(self.misses(changed))} misses of their own"
                     " routes, each way")
        return line


async def cluster_ids(etcd: Etcd) -> dict[str, str | None]:
    """Each node's cluster ID (None for a client)."""
    nodes = support.nodes_of((await support.read_cluster(etcd))[1])
    return {name: (node["spec"].get("bgp") or {}).get("routeReflectorClusterID")
            for name, node in nodes.items()}


def role_changed(before: dict[str, str | None], after: dict[str, str | None]) -> set[str]:
    """The nodes whose cluster ID came, went or changed: their BIRD restarts every session."""
    return {name for name in before.keys() & after.keys() if before[name] != after[name]}


async def rrs(etcd: Etcd) -> set[str]:
    return support.rr_names((await support.read_cluster(etcd))[1])


async def until(condition, timeout: float = 2 * ROUTES) -> float:
    """Poll `condition` (sync or async) until it is true; the time it became so."""
    with trio.fail_after(timeout):
        while True:
            result = condition()
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return time.monotonic()
            await trio.sleep(0.1)


def all_established(lab: Lab, names: Iterable[str]) -> bool:
    """Every BGP session of every named speaker is Established (and there are some)."""
    states = [state for n in names for state in lab.speakers[n].sessions().values()]
    return bool(states) and all(state == "Established" for state in states)


@pytest.mark.parametrize("verify_sessions", ["auto", "off"])
async def test_a_rrs_move_to_dedicated_machines_behind_a_firewall(
        verify_sessions, lab, etcd, start_daemon, rrwatch):
    dedicated = [(zone, index) for zone in ZONES for index in (8, 9)]
    labels = {f"node-{z}-{i}": {"dedicated-rr": "true"} for z, i in dedicated}
    first = {"exclude": "has(dedicated-rr)", "min": 2, "max": 2}
    names = await build(lab, etcd, first, labels=labels, extra=dedicated)
    nodes = [n for n in names if n not in labels]
    for name in labels:  # their firewall drops BGP from the start
        lab.speakers[name].firewall(drop=frozenset())
    env = {**ENV, "RRWATCH_VERIFY_SESSIONS": verify_sessions}
    start_reporters(lab, start_daemon, names)
    daemon = start_daemon(env)
    async with trio.open_nursery() as nursery:
        confd = Confd(lab, etcd)
        await nursery.start(confd.run)
        await support.settled(etcd, env)
        await until_complete(lab, nodes, nodes)
        old = await rrs(etcd)
        ids = await cluster_ids(etcd)
        sampler = Sampler(lab, nodes)
        await nursery.start(sampler.run)

        moved = time.monotonic()
        second = {**first, "exclude": "!has(dedicated-rr)"}
        await simulate.put_all(etcd, {POLICY: json.dumps(second).encode()})
        promoted = await until(lambda: _rrs_are(etcd, old | set(labels)))
        if verify_sessions == "auto":
            # Held: logged, in metrics and in status, and nothing old goes while it is closed.
            await until(lambda: daemon.metrics().get("rrwatch_breaks_held", 0) > 0)
            await trio.sleep(3 * SETTLE)  # three dwells: a timer would have demoted by now
            assert await rrs(etcd) == old | set(labels)
            status = rrwatch("status", "--output", "json")
            assert status.returncode == 0, status.stderr
            held = json.loads(status.stdout)["held_breaks"]
            assert {h["rr"] for h in held} <= set(labels) and held
            assert "holding a break: " in daemon.log()
        else:
            await trio.sleep(3 * SETTLE)  # the same time behind the firewall
        held_for = daemon.metrics().get("rrwatch_breaks_held_seconds", 0.0)

        opened = time.monotonic()
        for name in labels:
            lab.speakers[name].firewall(drop=None)
        up = await until(lambda: all_established(lab, labels))
        demoted = await until(lambda: _any_gone(etcd, old))
        done = await until(lambda: _rrs_are(etcd, set(labels)))
        await support.settled(etcd, env)
        await until_complete(lab, nodes, nodes)
        await trio.sleep(2)  # a withdrawal on its way would show in the next samples
        changed = role_changed(ids, await cluster_ids(etcd))
        nursery.cancel_scope.cancel()
    assert changed == old | set(labels)  # the demoted and the promoted, no other node
    metrics = daemon.metrics()
    print(f"\n[scenario a, verify {verify_sessions}] {sampler.summary(changed)};"
          f" promoted {promoted - moved:.1f} s after the policy; breaks held"
          f" {held_for:.1f} s (metric, at the opening); firewall open -> move complete"
          f" {done - opened:.1f} s; all new sessions Established -> first demotion"
          f" {demoted - up:.1f} s (dwell {SETTLE:.0f} s); unverified breaks"
          f" {metrics.get('rrwatch_breaks_unverified_total', 0):.0f}; steps refused by the"
          f" route check {metrics['rrwatch_steps_refused_total']:.0f}")
    if verify_sessions == "auto":
        assert not sampler.misses(changed)
        assert demoted > up  # no old RR went before the new sessions were up
        assert metrics["rrwatch_breaks_unverified_total"] == 0  # every break was verified


async def _rrs_are(etcd: Etcd, want: set[str]) -> bool:
    return await rrs(etcd) == want


async def _any_gone(etcd: Etcd, old: set[str]) -> bool:
    return not old <= await rrs(etcd)


@pytest.mark.parametrize("topologies", [("simple", "multi"), ("multi", "simple")],
                         ids=["simple-to-multi", "multi-to-simple"])
async def test_b_topology_changes(topologies, lab, etcd, start_daemon):
    policy = {"min": 2, "max": 2, "client_rrs": 2, "topology": topologies[0]}
    nodes = await build(lab, etcd, policy)
    start_reporters(lab, start_daemon, nodes)
    start_daemon(ENV)
    async with trio.open_nursery() as nursery:
        await nursery.start(Confd(lab, etcd).run)
        before = (await support.settled(etcd, ENV))[1]
        await until_complete(lab, nodes, nodes)
        ids = await cluster_ids(etcd)
        sampler = Sampler(lab, nodes)
        await nursery.start(sampler.run)
        started = time.monotonic()
        await simulate.put_all(etcd, {POLICY: json.dumps(
            {**policy, "topology": topologies[1]}).encode()})
        after = (await support.settled(etcd, ENV))[1]
        settled = time.monotonic()
        await until_complete(lab, nodes, nodes)
        await trio.sleep(2)
        changed = role_changed(ids, await cluster_ids(etcd))
        nursery.cancel_scope.cancel()
    peers = {k for k in after if k.startswith(calico.PEERS)}
    assert peers != {k for k in before if k.startswith(calico.PEERS)}  # the layout did change
    print(f"\n[scenario b, {' -> '.join(topologies)}] {sampler.summary(changed)}; settled"
          f" {settled - started:.1f} s after the change")
    assert not sampler.misses(changed)


async def test_c_an_rr_node_fails_and_is_replaced(lab, etcd, start_daemon):
    """The RRs are machines of their own (a pool, as `exclude` allows); one fails, Calico
    removes its node, and a new machine takes its place."""
    pool = {f"node-{z}-{i}": {"rr-pool": "yes"} for z in ZONES for i in (0, 1)}
    policy = {"min": 2, "max": 2, "exclude": "!has(rr-pool)"}
    nodes = await build(lab, etcd, policy, labels=pool)
    reporters = start_reporters(lab, start_daemon, pool)
    start_daemon(ENV)
    async with trio.open_nursery() as nursery:
        await nursery.start(Confd(lab, etcd).run)
        await support.settled(etcd, ENV)
        await until_complete(lab, nodes, nodes)
        assert await rrs(etcd) == set(pool)
        ids = await cluster_ids(etcd)
        sampler = Sampler(lab, nodes)
        await nursery.start(sampler.run)

        victim = "node-a-0"
        sampler.drop(victim)  # its own routes go with it
        failed = time.monotonic()
        lab.speakers[victim].dead = True
        lab.speakers[victim].kill()
        reporters[victim].signal(signal.SIGKILL)  # the machine is gone, its reporter with it
        alive = [n for n in nodes if n != victim]
        await until(lambda: not _up_with(lab, alive, lab.speakers[victim]))
        noticed = time.monotonic()
        await etcd.txn([], [delete(calico.NODES + victim)])  # Calico removes the node

        # A new machine joins the pool; rrwatch promotes it, and its sessions come up.
        spare = lab.add("node-a-9")
        await simulate.put_all(etcd, {calico.NODES + spare.name: simulate.node_value(
            spare.name, "a", 9, ipv4=f"{spare.ipv4}/16", ipv6=f"{spare.ipv6}/64",
            labels={"rr-pool": "yes"})})
        start_reporters(lab, start_daemon, [spare.name])
        await until(lambda: _rrs_are(etcd, set(pool) - {victim} | {spare.name}))
        await support.settled(etcd, ENV)
        await until(lambda: all_established(lab, [spare.name]))
        replaced = time.monotonic()
        await until_complete(lab, alive, alive + [spare.name])
        await trio.sleep(2)
        changed = role_changed(ids, await cluster_ids(etcd))
        nursery.cancel_scope.cancel()
    assert not changed  # no surviving node changed its role
    print(f"\n[scenario c, {victim} fails] {sampler.summary()}; every peer noticed"
          f" {noticed - failed:.1f} s after the kill; replaced, its sessions up,"
          f" {replaced - failed:.1f} s after it")
    assert not sampler.misses()


def _up_with(lab: Lab, names: Iterable[str], victim) -> bool:
    """Any of `names` still has a session with `victim` Established."""
    ids = {victim.ipv4.replace(".", "_"), victim.ipv6.replace(":", "_")}
    return any(state == "Established" and name.split("_", 1)[1] in ids
               for n in names for name, state in lab.speakers[n].sessions().items())


async def _reported(etcd: Etcd, rrs: Iterable[str], skip: Iterable[str] = ()) -> bool:
    """Every RR's report holds its sessions Established, except those with `skip`, which are
    not."""
    for rr in rrs:
        key = "/rrwatch/v1/sessions/" + rr
        kv = await etcd.get(key)
        report = parse_report(key, kv.value) if kv else None
        if report is None or not report.ok or not report.sessions:
            return False
        if any(session.established == (address in skip)
               for address, session in report.sessions.items()):
            return False
    return True




async def test_d_mesh_off_waits_for_every_clients_rr_sessions(lab, etcd, start_daemon, rrwatch):
    # RRs only from indexes 0 and 1, so that the blocked client's firewall is known beforehand.
    labels = {f"node-{z}-{i}": {"rr-pool": "yes"} for z in ZONES for i in (0, 1)}
    policy = {"min": 2, "max": 2, "exclude": "!has(rr-pool)"}
    nodes = await build(lab, etcd, policy, mesh=True, labels=labels)
    blocked = lab.speakers["node-a-2"]
    blocked.firewall(drop=frozenset(a for n in labels for a in (lab.speakers[n].ipv4,
                                                                lab.speakers[n].ipv6)))
    start_reporters(lab, start_daemon, labels)
    start_daemon(ENV)
    async with trio.open_nursery() as nursery:
        await nursery.start(Confd(lab, etcd).run)
        await support.settled(etcd, ENV)
        assert await rrs(etcd) == set(labels)
        clients = [n for n in nodes if n not in labels]
        await until_complete(lab, clients, clients)  # through the mesh
        # The RRs report every session up but node-a-2's.
        await until(lambda: _reported(etcd, labels, skip=(blocked.ipv4, blocked.ipv6)))
        refused = rrwatch("mesh", "off")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        lacking = {line.split()[0] for line in refused.stderr.splitlines()
                   if line.startswith("  ")}  # one line per client and family
        assert lacking == {"node-a-2"}, refused.stderr
        assert "1 client lacks Established sessions" in refused.stderr
        assert b'"nodeToNodeMeshEnabled":true' in (await etcd.get(calico.BGP_CONFIG)).value

        opened = time.monotonic()
        blocked.firewall(drop=None)
        await until(lambda: _reported(etcd, labels))
        await until_complete(lab, nodes, nodes)  # converged: the mesh, and every RR session
        sampler = Sampler(lab, nodes)
        await nursery.start(sampler.run)
        turned_off = rrwatch("mesh", "off")
        assert turned_off.returncode == 0, turned_off.stdout + turned_off.stderr
        turned = time.monotonic()
        assert b'"nodeToNodeMeshEnabled":false' in (await etcd.get(calico.BGP_CONFIG)).value
        await until(lambda: not any(p.startswith("Mesh_") for n in nodes
                                    for p in lab.speakers[n].sessions()))
        await until_complete(lab, nodes, nodes)
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    print(f"\n[scenario d, mesh off] refused while node-a-2's RR sessions were blocked;"
          f" {sampler.summary()}; mesh off {turned - opened:.1f} s after the firewall opened")
    assert not sampler.misses()

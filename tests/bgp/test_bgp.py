"""Real BGP: one BIRD 2 per Calico node and per RR host, on one bridge, with the records that
rrwatch writes. Every node must hear every node's prefix; rrwatch verify must say the same.

Node speakers are configured as Calico would configure them (calico_bird.py); RR hosts run
rrwatch itself, which renders, checks and loads their BIRD. Figures print with `pytest -s`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import trio

from rrwatch.core import bird_config, calico, edits
from rrwatch.core.decoding import BadRecord
from rrwatch.core.model import ClusterState
from rrwatch.core.reachability import verify
from rrwatch.core.reports import parse_report
from rrwatch.core.sessions import HOST_PREFIX, fabric
from rrwatch.etcd import Etcd
from rrwatch.host import keeper
from rrwatch.testing import simulate
from tests import support
from tests.bgp import calico_bird
from tests.bgp.lab import ROUTES, Lab, Speaker, missing_pairs, until_complete
from tests.support import RR_LABEL

ZONES = ("a", "b", "c")
PER_ZONE = 4
BGP_CONFIG = edits.dumps({
    "kind": "BGPConfiguration", "apiVersion": "projectcalico.org/v3",
    "metadata": {"name": "default", "uid": "5e0c", "creationTimestamp": "2024-05-01T12:00:00Z"},
    "spec": {"nodeToNodeMeshEnabled": False, "asNumber": 64512}})
HOST_IDS = ("224.0.1.1", "")  # one RR host with a cluster ID, one without (its router ID)


def node_record(speaker: Speaker, zone: str, index: int) -> tuple[str, bytes]:
    value = simulate.node_value(speaker.name, zone, index, ipv4=f"{speaker.ipv4}/16",
                                ipv6=f"{speaker.ipv6}/64")
    return calico.NODES + speaker.name, value


def settings(topology: str) -> dict[str, str]:
    return {"ROUTE_REFLECTOR_TOPOLOGY": topology, "ROUTE_REFLECTOR_MIN": "2",
            "ROUTE_REFLECTOR_ZONE_LABEL": simulate.ZONE_LABEL}


async def add_nodes(lab: Lab, etcd: Etcd) -> list[str]:
    """A speaker and a Calico node record (mesh off) for each of 3 zones × 4 nodes; the names."""
    nodes, items = [], {calico.BGP_CONFIG: BGP_CONFIG}
    for zone in ZONES:
        for i in range(PER_ZONE):
            speaker = lab.add(f"node-{zone}-{i}")
            nodes.append(speaker.name)
            items.update([node_record(speaker, zone, i)])
    await simulate.put_all(etcd, items)
    return nodes


async def etcd_data(etcd: Etcd) -> dict[str, bytes]:
    return (await support.read_cluster(etcd))[1]


def configure_nodes(lab: Lab, data: dict[str, bytes], names: list[str], *,
                    add_paths: bool = False) -> None:
    """Give each named node speaker calico-node's BIRD 1.6 configurations as confd would render
    them now (with Calico's `add paths on` if `add_paths`: see calico_bird's docstring); start
    its `bird` and `bird6` if new."""
    records = calico_bird.read(data)
    for name in names:
        speaker = lab.speakers[name]
        configs = calico_bird.configs16(records, name, speaker.prefixes, add_paths=add_paths)
        if not speaker.running:
            speaker.start_calico(configs)
        else:
            speaker.configure_calico(configs)


def established(lab: Lab, names: list[str]) -> int:
    """BGP sessions up, each counted once."""
    return sum(list(lab.speakers[n].sessions().values()).count("Established") for n in names) // 2


def session_count(state) -> int:
    """The BGP sessions the records bring up, by verify's reckoning, in both families."""
    return sum(len(s) for f in (4, 6) for s in fabric(state, f).sessions.values()) // 2


async def wait_established(lab: Lab, names: list[str], want: int) -> None:
    with trio.move_on_after(ROUTES):
        while established(lab, names) < want:
            await trio.sleep(0.05)
    assert established(lab, names) == want


@pytest.mark.parametrize("hosts", [0, 2], ids=["in-cluster", "with-hosts"])
@pytest.mark.parametrize("topology", ["simple", "zoned", "multi"])
async def test_every_node_hears_every_prefix(topology, hosts, lab, etcd, start_daemon, rrwatch,
                                             tmp_path):
    """Full routes; a node joins; an RR speaker dies: every prefix everywhere, all along, and
    verify's verdict (sessions and reachability) matches what the speakers have."""
    env = settings(topology)
    nodes = await add_nodes(lab, etcd)

    host_speakers = [lab.add(f"rrhost-{i}") for i in range(hosts)]
    host_envs = [{**env, "RRWATCH_REGISTER_IP": f"{speaker.ipv4},{speaker.ipv6}",
                  "RRWATCH_REGISTER_CLUSTER_ID": cluster_id,
                  "RRWATCH_BIRD_CONFIG": speaker.config_path,
                  "RRWATCH_BIRD_SOCKET": speaker.socket_path, "RRWATCH_LEASE_TTL": "3"}
                 for speaker, cluster_id in zip(host_speakers, HOST_IDS, strict=False)]
    daemons = [start_daemon(host_env) for host_env in host_envs]
    if not hosts:
        daemons.append(start_daemon(env))
    await wait_registered(etcd, 2 * hosts)
    await support.settled(etcd, env)
    for speaker in host_speakers:  # rrwatch wrote its BIRD configuration; BIRD starts on it
        await wait_rendered(speaker, nodes)
        speaker.start()

    # Full routes.
    speakers = nodes + [s.name for s in host_speakers]
    configure_nodes(lab, await etcd_data(etcd), nodes)
    full = await until_complete(lab, nodes, speakers)
    state = await support.snapshot_state(etcd, env)
    sessions = session_count(state)
    await wait_established(lab, speakers, sessions)
    verdict = verify(state, failures=1)
    assert verdict.ok  # the speakers have every route, and so does the simulation
    assert rrwatch("verify").returncode == 0

    # A node joins: it hears everyone, everyone hears it; RR hosts' rrwatch adds its session.
    joiner = lab.add("node-a-9")
    await simulate.put_all(etcd, dict([node_record(joiner, "a", 9)]))
    nodes.append(joiner.name)
    speakers.append(joiner.name)
    await support.settled(etcd, env)
    configure_nodes(lab, await etcd_data(etcd), nodes)
    joined = await until_complete(lab, nodes, speakers)
    for speaker in host_speakers:  # rrwatch gave the RR hosts a session with it by itself
        assert bird_config.protocol_name(joiner.ipv4) in speaker.sessions()
    scrapes = [daemon.exposition() for daemon in daemons[:hosts]]  # RR host mode's: the kit's
    for text in scrapes:                                             # metrics, the reload timed
        assert support.kit_metrics() <= support.scraped_families(text)
        assert "rrwatch_bird_change_to_reload_seconds_count" in text
    assert all(daemon.metrics()["rrwatch_bird_change_to_reload_seconds_count"] >= 1
               for daemon in daemons[:hosts])

    # An RR speaker dies: the others keep every route (k >= 2).
    state = await support.snapshot_state(etcd, env)
    if hosts:
        victim = host_speakers[0]
        failed = HOST_PREFIX + victim.ipv4
    else:
        victim = lab.speakers[sorted(n for n in nodes if state.nodes[n].cluster_id)[0]]
        failed = victim.name
    assert verify(state, failures=1).ok, "verify predicts a loss the speakers are to show"
    killed = time.monotonic()
    victim.kill()
    alive = [n for n in speakers if n != victim.name]
    await until_noticed(lab, victim, alive)
    noticed = time.monotonic() - killed
    survivors = [n for n in nodes if n != victim.name]
    await until_complete(lab, survivors, alive)
    recovered = time.monotonic() - killed
    await trio.sleep(1)  # no withdrawal was still on its way
    assert not missing_pairs(lab, survivors, alive, 4) | missing_pairs(lab, survivors, alive, 6)

    if hosts:
        # The surviving RR host's rrwatch: its sessions in metrics and status are BIRD's.
        survivor = host_speakers[1]
        bird_view = {name: state == "Established" for name, state in survivor.sessions().items()}
        metrics = {s.labels["protocol"]: bool(s.value) for s in daemons[1].samples()
                   if s.name == "rrwatch_bird_session_established"}
        assert metrics == bird_view
        status = rrwatch("status", "--output", "json", env=host_envs[1])
        assert status.returncode == 0, status.stderr
        assert {s["protocol"]: s["established"] for s in json.loads(status.stdout)["bird"][
            "sessions"]} == bird_view
        # ... and so are its session reports, one per registered address and its family.
        await until_reported(etcd, survivor, bird_view)
    print(f"\n[bgp {topology}, {hosts} RR hosts] speakers {len(speakers) - 1} (+1 joined),"
          f" sessions {sessions} established, full routes {full:.2f} s, join {joined:.2f} s,"
          f" {failed} killed: every peer noticed after {noticed:.2f} s, every route there"
          f" {recovered:.2f} s after the kill")
    # Where promtool is missing, the lab test still runs; tests/scenarios/test_scrape.py names
    # the skip (and .ci/run requires promtool).
    if shutil.which("promtool") or os.environ.get("RRWATCH_REQUIRE_PROMTOOL"):
        for text in scrapes:
            assert support.promtool_check_metrics(text) == ""


async def until_reported(etcd: Etcd, host: Speaker, bird_view: dict[str, bool]) -> None:
    """Until the RR host's reports (under host/<ipv4> and host/<ipv6>) hold BIRD's sessions,
    each under the address of its own family."""
    with trio.fail_after(support.CONVERGE):
        while True:
            reported: dict[str, bool] = {}
            for ip, family in ((host.ipv4, "."), (host.ipv6, ":")):
                key = "/rrwatch/v1/sessions/" + HOST_PREFIX + ip
                kv = await etcd.get(key)
                report = parse_report(key, kv.value) if kv else None
                if report is None or not report.ok:
                    break
                assert all(family in address for address in report.sessions), report
                reported |= {s.protocol: s.established for s in report.sessions.values()}
            else:
                if reported == bird_view:
                    return
            await trio.sleep(0.2)


async def wait_registered(etcd: Etcd, count: int) -> None:
    with trio.fail_after(support.CONVERGE):
        while True:
            revision, kvs = await etcd.snapshot(["/calico/bgp/v1/rr_v"])
            if len(kvs) == count:
                return
            await trio.sleep(0.05)


async def wait_rendered(speaker: Speaker, nodes: list[str]) -> None:
    """Until rrwatch has written a configuration with a session to every node."""
    with trio.fail_after(support.CONVERGE):
        while (keeper.read_file(speaker.config_path) or "").count("description \"node ") \
                < 2 * len(nodes):
            await trio.sleep(0.05)


async def until_noticed(lab: Lab, victim: Speaker, alive: list[str]) -> None:
    """Until no speaker has a session with `victim` up any more."""
    names = {prefix + address.replace(".", "_").replace(":", "_")
             for prefix in ("peer_", "peer4_", "peer6_", "Mesh_", "Node_", "Global_")
             for address in (victim.ipv4, victim.ipv6)}
    with trio.fail_after(ROUTES):
        while any(state == "Established" for n in alive
                  for name, state in lab.speakers[n].sessions().items() if name in names):
            await trio.sleep(0.02)


# -- layouts made by hand: verify must predict exactly what the speakers miss --------------------

CID = "224.0.0.1"
LEFT, RIGHT = ["node1", "node2"], ["node3", "node4"]


def hand_node(speaker: Speaker, labels: dict[str, str], cluster: str = "") -> tuple[str, bytes]:
    key, value = node_record(speaker, "a", speaker.n)
    obj = json.loads(value)
    obj["metadata"]["labels"].update(labels)
    if cluster:
        obj["spec"]["bgp"]["routeReflectorClusterID"] = cluster
    return key, edits.dumps(obj)


def hand_peer(name: str, spec: dict) -> tuple[str, bytes]:
    return calico.PEERS + name, edits.dumps({
        "kind": "BGPPeer", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name, "uid": name, "creationTimestamp": "2024-05-01T12:00:00Z"},
        "spec": spec})


async def agree(lab: Lab, state, nodes: list[str], speakers: list[str],
                failed: str | None = None) -> set[tuple[str, str]]:
    """Wait until the speakers miss exactly the routes verify says they miss (in the scenario
    without `failed`), and still do a second later; those routes."""
    verdict = verify(state, failures=1 if failed else 0)
    want = {family: set(verdict.unreachable.get((family, failed), ())) for family in (4, 6)}
    have: dict[int, set] = {}
    with trio.move_on_after(ROUTES):
        while True:
            have = {family: missing_pairs(lab, nodes, speakers, family) for family in (4, 6)}
            if have == want:
                break
            await trio.sleep(0.1)
    assert have == want
    await trio.sleep(1)  # nothing more arrives: the routes are missing, not late
    assert {family: missing_pairs(lab, nodes, speakers, family) for family in (4, 6)} == want
    return want[4]


@pytest.mark.parametrize("rrs", ["in-cluster", "hosts"])
async def test_rrs_sharing_a_cluster_id_with_split_clients_is_predicted(rrs, lab, etcd):
    """Calico issue 2735, built by hand: two RRs share a cluster ID, and node1-2 peer with one,
    node3-4 with the other. Neither half hears the other, in BIRD as in verify."""
    rr1, rr2 = lab.add("rr1"), lab.add("rr2")
    clients = [lab.add(name) for name in LEFT + RIGHT]
    items = dict([(calico.BGP_CONFIG, BGP_CONFIG)])
    items.update(hand_node(c, {"name": c.name}) for c in clients)
    if rrs == "in-cluster":
        items.update(hand_node(rr, {"name": rr.name}, CID) for rr in (rr1, rr2))
        items.update([hand_peer("rr-pair", {"node": "rr1", "peerSelector": "name == 'rr2'"})])
        target = {rr: {"peerSelector": f"name == '{rr}'"} for rr in ("rr1", "rr2")}
    else:
        for rr in (rr1, rr2):
            items[calico.RR_V4 + rr.ipv4] = json.dumps({"ip": rr.ipv4, "cluster_id": CID}).encode()
        target = {rr.name: {"peerIP": rr.ipv4, "asNumber": 64512} for rr in (rr1, rr2)}
    for c in clients:
        items.update([hand_peer(f"{c.name}-rr", {"node": c.name,
                                                **target["rr1" if c.name in LEFT else "rr2"]})])
    await simulate.put_all(etcd, items)
    state = await support.snapshot_state(etcd, {})
    data = await etcd_data(etcd)
    names = [c.name for c in clients]
    if rrs == "in-cluster":
        names += ["rr1", "rr2"]
    else:
        for rr in (rr1, rr2):
            rr.start(bird_config.render(state, [rr.ipv4]).text)  # rrwatch's own rendering
    configure_nodes(lab, data, names, add_paths=True)
    speakers = [c.name for c in clients] + ["rr1", "rr2"]
    await wait_established(lab, speakers, session_count(state))
    assert await agree(lab, state, names, names) >= {(a, b) for a in LEFT for b in RIGHT}


@pytest.mark.parametrize("reverse", ["Auto", "Manual"])
async def test_a_peer_ip_to_a_node_is_answered_by_confds_reverse_side(reverse, lab, etcd):
    """Clients peer with an in-cluster RR by peerIP, and nothing names them on the RR's side:
    confd makes the node at that IP peer back (the reverse side), unless the BGPPeer says
    `reversePeering: Manual`. BIRD and verify agree both ways."""
    rr = lab.add("rr1")
    clients = [lab.add(name) for name in LEFT]
    items = dict([(calico.BGP_CONFIG, BGP_CONFIG), hand_node(rr, {"name": rr.name}, CID)])
    items.update(hand_node(c, {"name": c.name}) for c in clients)
    items.update(hand_peer(f"{c.name}-rr", {"node": c.name, "peerIP": rr.ipv4, "asNumber": 64512,
                                            "reversePeering": reverse}) for c in clients)
    await simulate.put_all(etcd, items)
    state = await support.snapshot_state(etcd, {})
    names = [c.name for c in clients] + [rr.name]
    configure_nodes(lab, await etcd_data(etcd), names, add_paths=True)
    if reverse == "Auto":
        await wait_established(lab, names, session_count(state))
        assert session_count(state) == len(clients)  # IPv4: the peerIP is rr1's IPv4 address
    missed = await agree(lab, state, names, names)
    assert (missed == set()) == (reverse == "Auto")


@pytest.mark.parametrize("by", ["selector", "peerIP"])
async def test_a_same_id_rr_peered_by_peer_ip_is_a_client_as_verify_predicts(by, lab, etcd):
    """Three RRs share a cluster ID; x peers with rr1 by selector, rr1 with rr2 by selector or
    by peerIP. confd makes a peerIP peering an `rr client` one even to a same-ID RR, so rr1
    reflects x's route to rr2 only then. BIRD and verify agree both ways."""
    speakers = [lab.add(name) for name in ("x", "rr1", "rr2")]
    rr2 = speakers[2]
    items = dict([(calico.BGP_CONFIG, BGP_CONFIG)])
    items.update(hand_node(sp, {"name": sp.name}, CID) for sp in speakers)
    to_rr2 = ({"peerSelector": "name == 'rr2'"} if by == "selector"
              else {"peerIP": rr2.ipv4, "asNumber": 64512})
    items.update([hand_peer("x-rr1", {"node": "x", "peerSelector": "name == 'rr1'"}),
                  hand_peer("rr1-rr2", {"node": "rr1", **to_rr2})])
    await simulate.put_all(etcd, items)
    state = await support.snapshot_state(etcd, {})
    names = [sp.name for sp in speakers]
    configure_nodes(lab, await etcd_data(etcd), names, add_paths=True)
    await wait_established(lab, names, session_count(state))
    missed = await agree(lab, state, names, names)
    assert missed == ({("x", "rr2"), ("rr2", "x")} if by == "selector" else set())


@pytest.mark.parametrize("selector", ["name starts with 'rr'", "name startswith 'rr'",
                                      "has (rrx)", ""])
async def test_clients_peer_with_an_rr_through_calicos_selector_spellings(selector, lab, etcd):
    """The clients' BGPPeer selects the RR by `startswith` (one word or two); or by `has (x)`,
    which Calico's parser refuses (a blank before the parenthesis), so confd selects nothing
    with it; or by an empty peerSelector, which configures nothing. BIRD and verify agree."""
    rr = lab.add("rr1")
    clients = [lab.add(name) for name in LEFT]
    items = dict([(calico.BGP_CONFIG, BGP_CONFIG),
                  hand_node(rr, {"name": rr.name, "rrx": ""}, CID)])
    items.update(hand_node(c, {"name": c.name, "client": ""}) for c in clients)
    items.update([hand_peer("to-rr", {"nodeSelector": "has(client)", "peerSelector": selector})])
    await simulate.put_all(etcd, items)
    state = await support.snapshot_state(etcd, {})
    names = [c.name for c in clients] + [rr.name]
    configure_nodes(lab, await etcd_data(etcd), names, add_paths=True)
    await wait_established(lab, names, session_count(state))
    works = "start" in selector
    assert session_count(state) == (len(clients) * 2 if works else 0)  # both families
    assert bool(verify(state).fatal) == (selector == "has (rrx)")
    missed = await agree(lab, state, names, names)
    assert (missed == set()) == works


@pytest.mark.parametrize("ids", ["shared", "distinct"])
async def test_issue_2735_by_peer_ip_complete_only_with_distinct_ids(ids, lab, etcd):
    """Calico issue 2735's layout as its reporters built it: each client peers with one RR by
    peerIP (confd's reverse side brings the session up), and the RRs peer with each other. With
    one shared cluster ID, neither half hears the other; with distinct IDs, all is heard."""
    rrs = [lab.add("rr1"), lab.add("rr2")]
    clients = [lab.add(name) for name in LEFT + RIGHT]
    cids = [CID, CID] if ids == "shared" else ["224.0.0.1", "224.0.0.2"]
    items = dict([(calico.BGP_CONFIG, BGP_CONFIG)])
    items.update(hand_node(rr, {"name": rr.name}, cid) for rr, cid in zip(rrs, cids,
                                                                          strict=True))
    items.update(hand_node(c, {"name": c.name}) for c in clients)
    items.update([hand_peer("rr-pair", {"node": "rr1", "peerSelector": "name == 'rr2'"})])
    items.update(hand_peer(f"{c.name}-rr", {"node": c.name, "asNumber": 64512, "peerIP": (
        rrs[0] if c.name in LEFT else rrs[1]).ipv4}) for c in clients)
    await simulate.put_all(etcd, items)
    state = await support.snapshot_state(etcd, {})
    names = [sp.name for sp in rrs + clients]
    configure_nodes(lab, await etcd_data(etcd), names, add_paths=True)
    await wait_established(lab, names, session_count(state))
    missed = await agree(lab, state, names, names)
    split = {(a, b) for a in LEFT for b in RIGHT} | {(b, a) for a in LEFT for b in RIGHT}
    assert (missed >= split) if ids == "shared" else missed == set()


@pytest.mark.parametrize("add_paths", [True, False], ids=["add-paths", "best-path-only"])
async def test_add_paths_carries_a_route_that_best_path_selection_would_hide(add_paths, lab,
                                                                             etcd):
    """o is a client of x and of b2; x reaches b through y; b2 shares b's cluster ID. b's best
    path to o is b2's reflection (as short as y's, from the lower address), which b may not
    reflect to its client t: it carries b's own cluster ID. With Calico's `add paths on`, b
    passes on y's path too, and t hears o, as verify says. Without it (not Calico's
    configuration: the control), t misses o's route: ADD-PATH is what changes the outcome."""
    ids = {"x": "224.0.0.1", "b2": "224.0.0.2", "b": "224.0.0.2", "y": "224.0.0.3"}
    speakers = [lab.add(name) for name in ("o", "t", "x", "b2", "b", "y")]  # b2 below y
    items = dict([(calico.BGP_CONFIG, BGP_CONFIG)])
    items.update(hand_node(sp, {"name": sp.name}, ids.get(sp.name, "")) for sp in speakers)
    items.update(hand_peer(f"{a}-{b}", {"node": a, "peerSelector": f"name == '{b}'"}) for a, b in (
        ("o", "x"), ("x", "y"), ("y", "b"), ("b", "b2"), ("t", "b"), ("o", "b2")))
    await simulate.put_all(etcd, items)
    state = await support.snapshot_state(etcd, {})
    names = [sp.name for sp in speakers]
    configure_nodes(lab, await etcd_data(etcd), names, add_paths=add_paths)
    await wait_established(lab, names, session_count(state))
    assert verify(state).ok
    if add_paths:
        assert await agree(lab, state, names, names) == set()
        return
    hidden = {("o", "t")}  # the one pair best-path selection loses
    with trio.move_on_after(ROUTES):
        while missing_pairs(lab, names, names, 4) != hidden:
            await trio.sleep(0.1)
    await trio.sleep(1)  # and it stays hidden
    assert missing_pairs(lab, names, names, 4) == hidden


@pytest.mark.parametrize("scope", ["node", "global"])
def test_a_peer_ip_without_as_number_is_refused_by_bird_where_verify_says(scope, bird16):
    """confd writes `neighbor <ip> as 0` for a peerIP BGPPeer without asNumber. BIRD 1.6's
    parse check (`bird -p`, which confd runs before installing a configuration) refuses the
    configuration of exactly the nodes verify names in its fatal finding."""
    items = simulate.nodes("a", range(4))
    items[calico.BGP_CONFIG] = BGP_CONFIG
    spec = {"peerIP": "10.99.0.9"} | ({"node": "node-a-00001"} if scope == "node" else {})
    items.update([hand_peer("tor", spec)])
    state = ClusterState(simulate.ZONE_LABEL, RR_LABEL, None, None)
    for revision, (key, value) in enumerate(sorted(items.items()), 1):
        calico.apply(state, key, value, revision)
    fatal = verify(state).fatal
    assert len(fatal) == 1 and "confd writes `as 0`" in fatal[0]
    down = {name for name in state.nodes if name in fatal[0]}
    assert down == ({"node-a-00001"} if scope == "node" else set(state.nodes))
    records = calico_bird.read(items)
    refused = {name: why for name in state.nodes
               if (why := _bird_refuses(bird16, records, name))}
    assert refused.keys() == down
    assert all("Remote AS number must be set" in why for why in refused.values())


def _bird_refuses(bird16: str, records, name: str) -> str:
    """What BIRD 1.6's parse check (`bird -p`, run by confd before it installs a configuration)
    says of node `name`'s bird.cfg as confd writes it; empty if it takes it."""
    config = calico_bird.configs16(records, name, ("10.1.0.0/24", "fd01::/64"))[0]
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as f:
        f.write(config)
        f.flush()
        check = subprocess.run([bird16, "-p", "-c", f.name], capture_output=True, text=True)
    return check.stderr if check.returncode else ""


def test_an_rr_cluster_id_bird_refuses_is_the_fatal_finding_verify_names(bird16):
    """An RR whose cluster ID is not a dotted quad, with a client: BIRD 1.6 refuses the RR's
    configuration, and no other node's; verify names that node, and only it, as fatal."""
    items = simulate.nodes("a", range(3))
    items[calico.BGP_CONFIG] = BGP_CONFIG
    rr = calico.NODES + "node-a-00000"
    items[rr] = items[rr].replace(b'"bgp":{', b'"bgp":{"routeReflectorClusterID":"224.0.0",')
    items.update([hand_peer("to-rr", {"nodeSelector": "all()",
                                      "peerSelector": "kubernetes.io/hostname == 'node-a-00000'"})])
    state = ClusterState(simulate.ZONE_LABEL, RR_LABEL, None, None)
    for revision, (key, value) in enumerate(sorted(items.items()), 1):
        with contextlib.suppress(BadRecord):
            calico.apply(state, key, value, revision)
    assert [f.split(":")[0] for f in verify(state).fatal] == ["node node-a-00000"]
    records = calico_bird.read(items)
    refused = {name for name in records.nodes if _bird_refuses(bird16, records, name)}
    assert refused == {"node-a-00000"}


async def test_losing_the_only_rr_of_some_clients_is_predicted(lab, etcd, start_daemon):
    """`multi` with one RR per client: killing an RR cuts off exactly the routes verify
    predicts for that failure."""
    env = {**settings("multi"), "RRWATCH_CLIENT_RRS": "1"}
    nodes = await add_nodes(lab, etcd)
    start_daemon(env)
    await support.settled(etcd, env)
    configure_nodes(lab, await etcd_data(etcd), nodes)
    await until_complete(lab, nodes, nodes)
    state = await support.snapshot_state(etcd, env)
    verdict = verify(state, failures=1)
    # The RR whose loss verify says costs the most routes.
    failed = max((f for _, f in verdict.unreachable if f), key=lambda f: len(
        verdict.unreachable[(4, f)]))
    victim = lab.speakers[failed]
    victim.kill()
    alive = [n for n in nodes if n != failed]
    await until_noticed(lab, victim, alive)
    lost = await agree(lab, state, alive, alive, failed)
    assert lost  # the case is a real loss, not an empty agreement
    print(f"\n[bgp multi k=1] {failed} killed: {len(lost)} IPv4 routes lost, as verify predicts")


# -- rrwatch keeps the RR host's BIRD ------------------------------------------------------------


async def test_a_configuration_bird_rejects_is_never_applied(lab, etcd, start_daemon, tmp_path):
    """The operator's include breaks: the next rendering fails `bird -p`, so the file stays as
    it was and BIRD keeps its sessions; once the include is fixed, the next change applies."""
    host = lab.add("rrhost")
    host.start("protocol device {}\n")  # BIRD as installed, before rrwatch takes over its file
    include = tmp_path / "local.conf"
    include.write_text("# the operator's own settings\n")
    nodes = [lab.add(f"node-a-{i}") for i in range(3)]
    await simulate.put_all(etcd, dict([(calico.BGP_CONFIG, BGP_CONFIG),
                                       node_record(nodes[0], "a", 0),
                                       node_record(nodes[1], "a", 1)]))
    env = {**settings("simple"), "RRWATCH_REGISTER_IP": f"{host.ipv4},{host.ipv6}",
           "RRWATCH_BIRD_CONFIG": host.config_path, "RRWATCH_BIRD_SOCKET": host.socket_path,
           "RRWATCH_BIRD_INCLUDE": str(include)}
    daemon = start_daemon(env)
    await wait_registered(etcd, 2)
    await support.settled(etcd, env)
    await wait_rendered(host, [n.name for n in nodes[:2]])
    configure_nodes(lab, await etcd_data(etcd), [n.name for n in nodes[:2]])
    with trio.fail_after(ROUTES):
        while up(host) < 4:
            await trio.sleep(0.05)
    await until_metric(daemon, "rrwatch_bird_config_current", 1)
    good = keeper.read_file(host.config_path)

    include.write_text("this is not BIRD syntax;\n")
    await simulate.put_all(etcd, dict([node_record(nodes[2], "a", 2)]))
    await until_metric(daemon, "rrwatch_bird_configs_rejected_total", 1)
    assert daemon.metrics()["rrwatch_bird_config_current"] == 0
    assert keeper.read_file(host.config_path) == good
    assert "rejected the new configuration" in daemon.log()
    assert up(host) == 4  # still running the last good configuration
    assert bird_config.protocol_name(nodes[2].ipv4) not in host.sessions()
    assert not [f for f in (tmp_path / "lab" / "rrhost").iterdir() if f.name.startswith(".")]

    include.write_text("# fixed\n")
    joiner = lab.add("node-a-3")
    await simulate.put_all(etcd, dict([node_record(joiner, "a", 3)]))
    await until_metric(daemon, "rrwatch_bird_config_current", 1)
    assert {bird_config.protocol_name(n.ipv4) for n in (nodes[2], joiner)} <= host.sessions().keys()
    assert daemon.metrics()["rrwatch_bird_configs_rejected_total"] == 1


def up(speaker: Speaker) -> int:
    return list(speaker.sessions().values()).count("Established")


async def until_metric(daemon, name: str, value: float) -> None:
    with trio.fail_after(support.CONVERGE):
        while daemon.metrics().get(name) != value:
            await trio.sleep(0.05)


def bad_node(name: str, index: int, *, ipv4: str, ipv6: str, asn: int | None = None
             ) -> tuple[str, bytes]:
    """A node record with values BIRD refuses as a neighbour's, and no speaker behind it."""
    obj = json.loads(simulate.node_value(name, "a", index, ipv4=ipv4, ipv6=ipv6))
    if asn is not None:
        obj["spec"]["bgp"] = {"asNumber": asn, **obj["spec"]["bgp"]}
    return calico.NODES + name, edits.dumps(obj)


async def test_a_bad_node_never_freezes_the_rr_hosts_bird(lab, etcd, start_daemon):
    """Nodes with AS 0, a link-local and an unspecified IPv6 address appear in etcd: the host
    gives them no session and names them, its sessions with the other nodes stay Established,
    and a node that joins afterwards still gets its session."""
    host = lab.add("rrhost")
    host.start("protocol device {}\n")
    nodes = [lab.add(f"node-a-{i}") for i in range(2)]
    await simulate.put_all(etcd, dict([(calico.BGP_CONFIG, BGP_CONFIG),
                                       *(node_record(n, "a", i) for i, n in enumerate(nodes))]))
    env = {**settings("simple"), "RRWATCH_REGISTER_IP": f"{host.ipv4},{host.ipv6}",
           "RRWATCH_BIRD_CONFIG": host.config_path, "RRWATCH_BIRD_SOCKET": host.socket_path}
    daemon = start_daemon(env)
    await wait_registered(etcd, 2)
    await support.settled(etcd, env)
    await wait_rendered(host, [n.name for n in nodes])
    configure_nodes(lab, await etcd_data(etcd), [n.name for n in nodes])
    with trio.fail_after(ROUTES):
        while up(host) < 4:
            await trio.sleep(0.05)

    await simulate.put_all(etcd, dict([
        bad_node("bad-as", 200, ipv4="10.99.0.200/16", ipv6="fd99::200/64", asn=0),
        bad_node("bad-link-local", 201, ipv4="10.99.0.201/16", ipv6="fe80::1/64"),
        bad_node("bad-any", 202, ipv4="10.99.0.202/16", ipv6="::/0"),
    ]))
    joiner = lab.add("node-a-2")  # every rendering with it has the bad nodes too
    await simulate.put_all(etcd, dict([node_record(joiner, "a", 2)]))
    await support.settled(etcd, env)
    configure_nodes(lab, await etcd_data(etcd), [joiner.name])
    with trio.fail_after(ROUTES):
        while host.sessions().get(bird_config.protocol_name(joiner.ipv4)) != "Established":
            await trio.sleep(0.05)
    await until_metric(daemon, "rrwatch_bird_config_current", 1)
    await until_metric(daemon, "rrwatch_bird_bad_neighbours", 3)

    sessions = host.sessions()
    for n in [*nodes, joiner]:
        assert sessions[bird_config.protocol_name(n.ipv4)] == "Established"
    metrics = daemon.metrics()
    assert metrics.get("rrwatch_bird_configs_rejected_total") == 0
    named = {s.labels["name"]: s.labels["reason"] for s in daemon.samples()
             if s.name == "rrwatch_bird_bad_neighbour_info"}
    assert named == {"bad-any": ":: is the unspecified address",
                     "bad-as": "AS 0 is outside 1..4294967295",
                     "bad-link-local": "fe80::1 is link-local"}
    text = keeper.read_file(host.config_path)
    assert all(f"10.99.0.{i}" not in text for i in (200, 201, 202))
    log = daemon.log()
    assert "no session with 'bad-as': AS 0 is outside 1..4294967295" in log
    assert log.count("no session with 'bad-link-local'") == 1  # once, not every rendering

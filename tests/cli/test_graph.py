"""The mesh as a picture (`rrwatch graph`): DOT from the model, and SVG from Graphviz."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from collections import Counter
from ipaddress import IPv4Address, IPv6Address

import attrs
import pytest

from rrwatch.cli.graphviz import GraphvizError, GraphvizMissing, svg
from rrwatch.core.dot import HOSTS, dot
from rrwatch.core.model import BgpConfig, ClusterState, Node, Peer, Reflector
from rrwatch.core.policy import TOPOLOGIES, Policy
from rrwatch.core.sessions import Fabric, fabric
from rrwatch.core.text import printable
from rrwatch.errors import ExitStatus
from tests.support import RR_LABEL, ZONE_LABEL, converge, state_of

ZONES = ("a", "b", "c")
SVG = "{http://www.w3.org/2000/svg}"


def converged(topology: str, per_zone: int = 8, *, policy: Policy | None = None,
              mesh: bool = False, hosts: tuple[str, ...] = ()) -> ClusterState:
    """3 zones of `per_zone` nodes and the given RR hosts, converged under `topology`."""
    policy = policy or Policy(rr_label=RR_LABEL, ratio=0.2, min_rrs=2, max_rrs=3,
                              topology=topology, client_rrs=2)
    nodes = [Node(f"node-{zone}-{i:04d}", 1, {ZONE_LABEL: zone},
                  ipv4=IPv4Address(0x0A000001 + (z << 16) + i))
             for z, zone in enumerate(ZONES) for i in range(per_zone)]
    state = state_of(nodes, policy)
    state.set_bgp(BgpConfig(mesh_enabled=mesh))
    for ip in hosts:
        state.put_reflector(Reflector(f"/calico/bgp/v1/rr_v4/{ip}", 1, IPv4Address(ip)))
    converge(state, policy)
    return state


def session_pairs(fab: Fabric) -> set[frozenset[str]]:
    return {frozenset((a, b)) for a, near in fab.sessions.items() for b in near}


# -- reading the DOT back ------------------------------------------------------------------------

QUOTED = r'"((?:[^"\\]|\\.)*)"'
SUBGRAPH = re.compile(r"^\s*subgraph (cluster_\d+) \{$")
BOX_LABEL = re.compile(rf"^\s*label={QUOTED};$")
NODE = re.compile(rf"^\s*{QUOTED} \[(.*)\];$")
EDGE = re.compile(rf"^\s*{QUOTED} -- {QUOTED} \[(.*)\];$")


def unquote(text: str) -> str:
    """A DOT ID or label back to its text: `\\n` is a line break, `\\x` is x."""
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], text)


def attr(attrs_text: str, key: str) -> str | None:
    found = re.search(rf"(?:^|, ){key}=({QUOTED}|[^,]+)", attrs_text)
    if found is None:
        return None
    return unquote(found[2]) if found[2] is not None else found[1]


@attrs.frozen
class Parsed:
    boxes: dict[str, list[str]]  # box label -> the node IDs declared in it
    nodes: dict[str, str]  # node ID -> its attributes
    declared: list[str]  # node IDs in declaration order, repeats kept
    edges: list[tuple[str, str, str]]  # (end, end, attributes)


def parse(text: str) -> Parsed:
    """The boxes, nodes and edges of a graph as `dot()` writes them; every line accounted for."""
    lines = text.splitlines()
    assert lines[0] == "graph rrwatch {" and lines[-1] == "}"
    boxes, nodes, declared, edges = {}, {}, [], []
    box = None
    for line in lines[1:-1]:
        if m := SUBGRAPH.match(line):
            box = []
        elif box is not None and (m := BOX_LABEL.match(line)):
            boxes[unquote(m[1])] = box
        elif line.strip() == "}":
            box = None
        elif m := EDGE.match(line):
            edges.append((unquote(m[1]), unquote(m[2]), m[3]))
        elif m := NODE.match(line):
            assert box is not None, f"node outside a box: {line}"
            name = unquote(m[1])
            box.append(name)
            declared.append(name)
            nodes[name] = m[2]
        else:
            assert re.match(r"^  (graph|node|edge) \[.*\];$", line), f"unexpected: {line}"
    return Parsed(boxes, nodes, declared, edges)


# -- Graphviz ------------------------------------------------------------------------------------


def rendered(text: str, engine: str | None = None) -> dict[str, list[ET.Element]]:
    """The SVG's groups by class: node, edge, cluster."""
    root = ET.fromstring(svg(text, engine=engine))
    groups: dict[str, list[ET.Element]] = {}
    for g in root.iter(f"{SVG}g"):
        groups.setdefault(g.get("class", ""), []).append(g)
    return groups


def title(group: ET.Element) -> str:
    return group.findtext(f"{SVG}title") or ""


def texts(group: ET.Element) -> list[str]:
    return [t.text or "" for t in group.iter(f"{SVG}text")]


# -- every speaker and every session -------------------------------------------------------------


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_one_node_per_speaker_and_one_edge_per_session(topology):
    """Each speaker is declared once, in its zone's box; each session is one edge; RRs show
    their cluster ID, and only sessions between RRs are bold."""
    state = converged(topology)
    fab = fabric(state, 4)
    assert len(fab.reflectors) >= len(ZONES) and len(fab.speakers) == 8 * len(ZONES)
    parsed = parse(dot(state))

    assert sorted(parsed.declared) == sorted(fab.speakers)
    assert sorted(parsed.boxes) == list(ZONES)
    for zone, members in parsed.boxes.items():
        assert set(members) == {n for n in fab.speakers if state.zone_of(state.nodes[n]) == zone}
    for name, node_attrs in parsed.nodes.items():
        speaker = fab.speakers[name]
        wanted = f"{name}\n{speaker.cluster_id}" if speaker.reflector else name
        assert attr(node_attrs, "label") == wanted
        assert (attr(node_attrs, "shape") == "hexagon") == speaker.reflector

    ends = [frozenset((a, b)) for a, b, _ in parsed.edges]
    assert len(ends) == len(set(ends)) and set(ends) == session_pairs(fab)
    for a, b, edge_attrs in parsed.edges:
        rr_rr = a in fab.reflectors and b in fab.reflectors
        assert (attr(edge_attrs, "style") == "bold") == rr_rr
    if topology == "multi":  # every RR its own cluster ID
        assert len({fab.speakers[n].cluster_id for n in fab.reflectors}) == len(fab.reflectors)


def test_mesh_leftovers_are_dashed_and_hosts_are_boxes():
    """With the node-to-node mesh on, client-client sessions are dashed; a registered RR host
    is a box in the "RR hosts" box, bold towards RRs and plain towards clients."""
    state = converged("zoned", 4, mesh=True, hosts=("10.200.0.1",))
    fab = fabric(state, 4)
    host = "host/10.200.0.1"
    parsed = parse(dot(state))
    assert list(parsed.boxes) == [*ZONES, HOSTS] and parsed.boxes[HOSTS] == [host]
    assert attr(parsed.nodes[host], "shape") == "box"
    assert set(fab.sessions[host]) == set(fab.speakers) - {host}
    styles = Counter()
    for a, b, edge_attrs in parsed.edges:
        reflectors = (a in fab.reflectors) + (b in fab.reflectors)
        style = attr(edge_attrs, "style")
        assert style == {0: "dashed", 1: None, 2: "bold"}[reflectors]
        styles[style] += 1
    assert styles["dashed"] and styles[None] and styles["bold"]
    assert {frozenset((a, b)) for a, b, _ in parsed.edges} == session_pairs(fab)


def test_same_state_same_text():
    """The text depends on the records only, not on the order they were read in."""
    state = converged("multi", mesh=True, hosts=("10.200.0.1", "10.200.0.2"))
    again = state_of(reversed(list(state.nodes.values())))
    again.set_bgp(state.bgp)
    for peer in reversed(list(state.peers.values())):
        again.put_peer(peer)
    for reflector in reversed(list(state.reflectors.values())):
        again.put_reflector(reflector)
    assert dot(again) == dot(state)


def test_title_and_unzoned_nodes():
    """A given title heads the graph; nodes without a zone label are drawn in "no zone"."""
    state = state_of([Node("n1", 1, ipv4=IPv4Address("10.0.0.1")),
                      Node("n2", 1, ipv4=IPv4Address("10.0.0.2"))])
    text = dot(state, title='prod "eu"')
    assert 'label="prod \\"eu\\"\\n' in text
    assert parse(text).boxes == {"no zone": ["n1", "n2"]}


@pytest.mark.parametrize("engine", [None, "fdp"])
@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_renders_one_node_per_speaker_and_one_edge_per_session(graphviz, topology, engine):
    """Graphviz draws the speakers as nodes titled by name, one edge per session, a box per
    zone, with the default layout and with fdp."""
    state = converged(topology)
    fab = fabric(state, 4)
    groups = rendered(dot(state), engine)
    assert sorted(title(g) for g in groups["node"]) == sorted(fab.speakers)
    assert len(groups["edge"]) == len(session_pairs(fab))
    assert sorted(texts(g)[0] for g in groups["cluster"]) == list(ZONES)


# -- names that need quoting ---------------------------------------------------------------------

AWKWARD = ['quo"te', "back\\slash", "trailing\\", 'both\\"', "node", "a.b-c", "x -- y", "b{r}"]


def clients_of_one_rr(names: list[str], zone: str, rr: str = "rr") -> ClusterState:
    """`names` as clients of one RR named `rr`, all in `zone`."""
    nodes = [Node(name, 1, {ZONE_LABEL: zone}, ipv4=IPv4Address(0x0A000001 + i))
             for i, name in enumerate(names)]
    nodes.append(Node(rr, 1, {ZONE_LABEL: zone, RR_LABEL.key: RR_LABEL.value},
                      ipv4=IPv4Address("10.0.1.1"), cluster_id="224.0.0.1"))
    state = state_of(nodes)
    state.set_bgp(BgpConfig(mesh_enabled=False))
    state.put_peer(Peer("clients", 1, False, {"peerSelector": f"has({RR_LABEL.key})"}))
    return state


def awkward_state() -> ClusterState:
    """The awkward names as clients of one RR, in a zone with an awkward name too."""
    return clients_of_one_rr(AWKWARD, 'z"1\\')


def test_awkward_names_are_quoted():
    """Quotes and backslashes in names and zones are escaped so that they read back exactly."""
    state = awkward_state()
    parsed = parse(dot(state))
    assert sorted(parsed.declared) == sorted([*AWKWARD, "rr"])
    assert list(parsed.boxes) == ['z"1\\']
    assert {frozenset(e[:2]) for e in parsed.edges} == {frozenset((n, "rr")) for n in AWKWARD}


def test_awkward_names_render(graphviz):
    """Graphviz parses the escaped names: every node drawn once and labelled with its name."""
    groups = rendered(dot(awkward_state()))
    nodes = groups["node"]
    assert sorted(texts(g)[0] for g in nodes) == sorted([*AWKWARD, "rr"])
    assert len({title(g) for g in nodes}) == len(AWKWARD) + 1
    # Graphviz keeps DOT's `\\` in IDs as two characters, so only names without one round-trip.
    assert {n for n in AWKWARD if "\\" not in n} <= {title(g) for g in nodes}
    assert len(groups["edge"]) == len(AWKWARD)
    assert texts(groups["cluster"][0]) == ['z"1\\']


def test_ipv6_host_names_render(graphviz):
    """IPv6 speakers and hosts (colons, which DOT would read as ports unquoted) render."""
    nodes = [Node(f"n{i}", 1, {ZONE_LABEL: "a"}, ipv6=IPv6Address(f"fd00::{i}"))
             for i in range(1, 4)]
    state = state_of(nodes)
    state.set_bgp(BgpConfig(mesh_enabled=True))
    state.put_reflector(Reflector("/calico/bgp/v1/rr_v6/fd00:200::1", 1,
                                  IPv6Address("fd00:200::1"), "224.0.0.9"))
    state.put_peer(Peer("host", 1, False, {"peerIP": "[fd00:200::1]:179", "asNumber": 64512}))
    assert parse(dot(state, family=4)).declared == []
    groups = rendered(dot(state, family=6))
    assert sorted(title(g) for g in groups["node"]) == ["host/fd00:200::1", "n1", "n2", "n3"]
    assert len(groups["edge"]) == 3 + 3  # the mesh, and each node with the host


# -- names with control characters ----------------------------------------------------------------

# Graphviz passes control characters through to the SVG, where XML forbids most of them.
CONTROL = ["c\x01", "esc\x1b[2J", "new\nline", "del\x7f", "nel\x85", "sep\u2028",
           "non\uffff", "tab\t", "c\\x01"]  # the last: a backslash, not \x01
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def control_state() -> ClusterState:
    """The names as clients of one RR, in a zone whose name holds a NUL, an ESC and a lone
    surrogate (a label value's JSON may hold one; a key cannot)."""
    return clients_of_one_rr(CONTROL, "z\x00\x1b\ud800", rr="rr\x1b")


def test_control_characters_are_escaped_in_dot():
    """The DOT text holds no control character but its line ends, and encodes as UTF-8; each
    name is one distinct node."""
    text = dot(control_state(), max_clients=None)
    assert not any(UNSAFE.search(line) for line in text.split("\n"))
    text.encode("utf-8")
    assert len(parse(text).declared) == len(set(parse(text).declared)) == len(CONTROL) + 1


def test_control_characters_render_as_well_formed_svg(graphviz):
    """Graphviz's SVG of names holding control characters parses as XML: each node drawn once,
    labelled with its name as escapes, and the RR's label keeps its line break."""
    groups = rendered(dot(control_state(), max_clients=None))
    nodes = groups["node"]
    assert len({title(g) for g in nodes}) == len(nodes) == len(CONTROL) + 1
    labels = sorted(texts(g)[0] for g in nodes)
    assert labels == sorted([printable(n) for n in CONTROL] + ["rr\\x1b"])
    [rr] = [g for g in nodes if texts(g)[0] == "rr\\x1b"]
    assert texts(rr) == ["rr\\x1b", "224.0.0.1"]
    assert texts(groups["cluster"][0]) == ["z\\x00\\x1b\\ud800"]
    assert len(groups["edge"]) == len(CONTROL)


# -- large clusters ------------------------------------------------------------------------------


def test_large_cluster_collapses_each_zones_clients():
    """3,000 nodes draw as their RRs and one node per zone's clients, each RR's edge to it
    labelled with its client count there; the counts add up to the RR-client sessions."""
    state = converged("multi", 1000, policy=Policy(rr_label=RR_LABEL, topology="multi"))
    fab = fabric(state, 4)
    text = dot(state)
    assert len(text) < 20_000
    parsed = parse(text)
    groups = {f"clients/{zone}" for zone in ZONES}
    assert set(parsed.declared) == set(fab.reflectors) | groups
    assert len(parsed.declared) == len(fab.reflectors) + len(ZONES)
    for zone in ZONES:
        clients = sum(1 for n in fab.speakers
                      if n not in fab.reflectors and state.nodes[n].labels[ZONE_LABEL] == zone)
        assert attr(parsed.nodes[f"clients/{zone}"], "label") == f"{clients} clients"

    counted = Counter()
    for a, b, edge_attrs in parsed.edges:
        if b in groups:
            counted[a, b] = int(attr(edge_attrs, "label"))
        else:
            assert a in fab.reflectors and b in fab.reflectors
    expected = Counter()
    for rr in fab.reflectors:
        for client in fab.sessions[rr] - fab.reflectors:
            expected[rr, f"clients/{state.nodes[client].labels[ZONE_LABEL]}"] += 1
    assert counted == expected
    rr_pairs = {p for p in session_pairs(fab) if p <= fab.reflectors}
    assert len(parsed.edges) == len(rr_pairs) + len(expected)


def test_collapsed_mesh_counts_sessions_within_and_between_zones():
    """With the mesh on and max_clients=0, each zone's clients are one node that counts the
    sessions among them, and the edges between zones count theirs."""
    state = converged("zoned", 6, mesh=True)
    fab = fabric(state, 4)
    clients = Counter(state.nodes[n].labels[ZONE_LABEL] for n in fab.speakers
                      if n not in fab.reflectors)
    parsed = parse(dot(state, max_clients=0))
    for zone, n in clients.items():
        label = attr(parsed.nodes[f"clients/{zone}"], "label")
        assert label == f"{n} clients\n{n * (n - 1) // 2} sessions among them"
    between = {(a, b): attr(e, "label") for a, b, e in parsed.edges
               if a.startswith("clients/") and b.startswith("clients/")}
    assert between == {(f"clients/{x}", f"clients/{y}"): str(clients[x] * clients[y])
                       for x, y in itertools.combinations(ZONES, 2)}
    assert parse(dot(state, max_clients=None)).declared == parse(dot(state)).declared
    assert len(parse(dot(state, max_clients=None)).declared) == len(fab.speakers)


def test_large_cluster_renders(graphviz):
    """The collapsed picture of 3,000 nodes is valid DOT that Graphviz lays out quickly."""
    state = converged("zoned", 1000, policy=Policy(rr_label=RR_LABEL, topology="zoned"))
    groups = rendered(dot(state))
    assert len(groups["node"]) == len(fabric(state, 4).reflectors) + len(ZONES)
    assert len(groups["cluster"]) == len(ZONES)


# -- running Graphviz ----------------------------------------------------------------------------


def test_missing_graphviz_is_its_own_error(monkeypatch, tmp_path):
    """Without `dot` on PATH, svg() raises GraphvizMissing, a GraphvizError of its own status
    (69: the command cannot run here), not that of a failed rendering."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GraphvizMissing, match="Graphviz is not installed"):
        svg("graph { a -- b }")
    assert issubclass(GraphvizMissing, GraphvizError)
    assert GraphvizMissing.status == ExitStatus.UNAVAILABLE != GraphvizError.status


def test_graphviz_errors_carry_its_stderr(graphviz):
    """Bad DOT or an unknown layout engine: a GraphvizError with Graphviz's own message."""
    with pytest.raises(GraphvizError, match="(?i)syntax error") as bad:
        svg("graph { a -- }")
    assert not isinstance(bad.value, GraphvizMissing)
    with pytest.raises(GraphvizError, match="nosuchengine"):
        svg("graph { a -- b }", engine="nosuchengine")

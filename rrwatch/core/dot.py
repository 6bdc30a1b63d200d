"""The route-reflector mesh as a picture: Graphviz DOT from the model, SVG from Graphviz.

`dot` is pure: one box per zone, RRs labelled with their cluster IDs, and the BGP sessions that
`verify.fabric` finds the records bring up. Past `max_clients` in a zone, its clients become one
node and its sessions counts, so that a cluster of thousands still draws as a few dozen nodes.
`svg` runs Graphviz's `dot` program: the one piece of I/O here.

Names, zones and cluster IDs come from etcd and may hold anything. Graphviz copies control
characters into the SVG, where XML forbids most of them, so IDs and labels show them as
`text.printable` escapes, and the DOT text holds none but its own line ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from rrwatch.core.model import ClusterState
from rrwatch.core.sessions import Speaker, fabric
from rrwatch.core.text import printable

NO_ZONE = "no zone"
HOSTS = "RR hosts"
GROUP_PREFIX = "clients/"  # a zone's collapsed clients; node names cannot hold a slash
MAX_CLIENTS = 50  # per zone: beyond this the picture is a hairball, so they are counted instead

# Graph-wide look, for the `dot` engine: it draws the RRs in a row with each zone's clients under
# them, which reads best (fdp tangles, and neato ignores the zone boxes). No `layout` attribute:
# it would override `svg(engine=...)`. `overlap` and `splines` are there for `-Kfdp`/`-Kneato`.
_GRAPH = ('fontname="Helvetica", labelloc=t, fontsize=12, nodesep=0.15, '
          'ranksep=1.2, overlap=false, splines=true, outputorder=edgesfirst')
_NODE = 'fontname="Helvetica", fontsize=9, shape=ellipse, margin="0.05,0.02"'
_STYLE = {  # per kind of vertex
    "rr": 'shape=hexagon, style=filled, fillcolor="#ffd966"',
    "host": 'shape=box, style=filled, fillcolor="#9fc5e8"',
    "client": "",
    "group": 'peripheries=2, style=filled, fillcolor="#eeeeee"',
}
_EDGE = {  # per kind of session: between RRs, an RR and a client, two clients
    "rr": 'style=bold, color="#7f6000", constraint=false',
    "client": 'color="#8c8c8c"',
    "mesh": 'style=dashed, color="#c0c0c0", constraint=false',
}
_EDGE_LABEL = 'fontname="Helvetica", fontsize=8'  # session counts of collapsed clients
_LEGEND = ("hexagon: RR (name, cluster ID)  box: RR host  bold: RR-RR  "
           "solid: RR-client  dashed: client-client")


def dot(state: ClusterState, *, family: int = 4, title: str | None = None,
        max_clients: int | None = MAX_CLIENTS) -> str:
    """The IPv`family` BGP sessions of `state` as an undirected Graphviz graph.

    A zone with more than `max_clients` clients (None: no limit) shows them as one node, its
    edges labelled with session counts. `title` is one line, above the legend. The same state
    always gives the same text. Cost: that of `fabric`, the square of the nodes when the
    node-to-node mesh is on.
    """
    fab = fabric(state, family)
    places = _places(state, fab.speakers.values())
    vertex = {name: name for name in fab.speakers}  # speaker -> the vertex that draws it
    for place, speakers in places.items():
        clients = [s.name for s in speakers if not s.reflector]
        if max_clients is not None and len(clients) > max_clients:
            vertex.update(dict.fromkeys(clients, GROUP_PREFIX + place))
    edges, within = _count(fab.sessions, vertex)
    if title is None:
        rrs = len(fab.reflectors)
        sessions = sum(len(near) for near in fab.sessions.values()) // 2
        title = (f"IPv{family}: {rrs} route reflectors, {len(fab.speakers) - rrs} other "
                 f"speakers, {sessions} sessions")
    heading = _label(title, _LEGEND)

    out = ["graph rrwatch {",
           f"  graph [{_GRAPH}, label={heading}];",
           f"  node [{_NODE}];",
           f"  edge [{_EDGE_LABEL}];"]
    for n, (place, speakers) in enumerate(places.items()):
        out += [f"  subgraph cluster_{n} {{", f"    label={_label(place)};"]
        groups = Counter(vertex[s.name] for s in speakers if vertex[s.name] != s.name)
        for speaker in speakers:
            if speaker.reflector:
                kind = "rr" if speaker.node else "host"
                out.append(_node(speaker.name, [speaker.name, str(speaker.cluster_id)], kind))
            elif vertex[speaker.name] == speaker.name:
                out.append(_node(speaker.name, [speaker.name], "client"))
        for group, members in groups.items():
            lines = [f"{members} clients"]
            if within[group]:
                lines.append(f"{within[group]} sessions among them")
            out.append(_node(group, lines, "group"))
        out.append("  }")
    for (a, b), count in sorted(edges.items()):
        first, second = fab.speakers.get(a), fab.speakers.get(b)  # None: a group of clients
        reflectors = sum(1 for s in (first, second) if s is not None and s.reflector)
        kind = ("mesh", "client", "rr")[reflectors]
        if kind == "client" and (first is None or not first.reflector):
            a, b = b, a  # the RR first: `dot` ranks an edge's first end above its second
        attrs = _EDGE[kind]
        if a.startswith(GROUP_PREFIX) or b.startswith(GROUP_PREFIX):
            attrs += f", label={_label(str(count))}"
        out.append(f"  {_id(a)} -- {_id(b)} [{attrs}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _places(state: ClusterState, speakers: Iterable[Speaker]) -> dict[str, list[Speaker]]:
    """The speakers by the box they are drawn in: zones by name, the unzoned, then RR hosts;
    in each box the RRs first, then by name."""
    places: dict[str, list[Speaker]] = {}
    for speaker in speakers:
        if speaker.node:
            place = state.zone_of(state.nodes[speaker.name]) or NO_ZONE
        else:
            place = HOSTS
        places.setdefault(place, []).append(speaker)
    return {place: sorted(places[place], key=lambda s: (not s.reflector, s.name))
            for place in sorted(places, key=lambda p: (p == HOSTS, p == NO_ZONE, p))}


def _count(sessions: Mapping[str, frozenset[str]], vertex: Mapping[str, str]
           ) -> tuple[Counter[tuple[str, str]], Counter[str]]:
    """Sessions per pair of vertices (each pair once, in order), and within each vertex."""
    edges: Counter[tuple[str, str]] = Counter()
    within: Counter[str] = Counter()
    for a, near in sessions.items():
        for b in near:
            if a < b:
                va, vb = vertex[a], vertex[b]
                if va == vb:
                    within[va] += 1
                else:
                    edges[min(va, vb), max(va, vb)] += 1
    return edges, within


def _node(name: str, lines: list[str], kind: str) -> str:
    style = f", {_STYLE[kind]}" if _STYLE[kind] else ""
    return f"    {_id(name)} [label={_label(*lines)}{style}];"


def _id(name: str) -> str:
    """A DOT ID for any name: quoted, so that dots, dashes and keywords are plain text.

    Every `\\` is doubled too: DOT keeps `\\\\` as two characters in an ID, so a name with a
    backslash gets a different (but still unique) ID; without it, a trailing backslash would
    swallow the closing quote. Control characters then become `printable` escapes, whose one
    backslash no doubled backslash of the name can be mistaken for: IDs stay unique.
    """
    return '"' + printable(_quote(name)) + '"'


def _label(*lines: str) -> str:
    """A label of `lines` (Graphviz escString: `\\\\` is one backslash, `\\n` a line break).

    Control characters, a newline in a name included, are shown as `printable` escapes: the
    line breaks are only those between `lines`.
    """
    return '"' + "\\n".join(_quote(printable(line)) for line in lines) + '"'


def _quote(text: str) -> str:
    """`text` inside DOT's double quotes: backslashes doubled, quotes escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"')

"""RR host mode: the local BIRD 2 route reflector's configuration, kept in step with the model.

Rendering is pure. The sessions are the ones `verify` simulates for a registered host: every node
whose BGPPeers point at one of the host's registered addresses, and every other registered host.
A neighbour is an `rr client` unless it has the host's own cluster ID, as Calico's template
decides on the node side (calico-datastore.md); `rr cluster id` goes on client sessions only.

Every neighbour is checked before it is rendered (`verify.host_refusals`): BIRD refuses a whole
configuration over one bad neighbour, so a node with AS 0 or a link-local address would
otherwise freeze the host's sessions with every node. A node that fails gets no session, is
named in the log once per change and counted in the metrics, and blocks nobody else. Two nodes
that claim one address both fail (which one is right cannot be told), and a node that claims
the host's own registered address never takes it over.

Applying is I/O: write a temporary file beside the target, check it with `bird -p -c`, rename it
into place, and ask BIRD to load it through its control socket. A file BIRD rejects is never
renamed into place, so BIRD keeps running the last good one. The control socket also gives the
session states, for metrics and `rrwatch status`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import re
import socket
import tempfile
from collections.abc import Iterable, Mapping, Sequence

import attrs
import trio

from rrwatch.model import ClusterState
from rrwatch.verify import HOST_PREFIX, Speaker, fabric
from rrwatch.watch import Watcher

log = logging.getLogger(__name__)

# The whole template, in one place. Protocol blocks depend only on their own neighbour, so a
# reload restarts the sessions that changed and no others.
HEADER = """\
# Written by rrwatch for the route reflector at {addresses}.
# Do not edit: rrwatch rewrites this file whenever the mesh in etcd changes.
{router_id}
{include}
protocol device {{
}}

# Connected and kernel routes, so that the next hops of reflected routes resolve.
protocol direct {{
  ipv4;
  ipv6;
}}
"""
FAMILY = """
protocol kernel kernel{family} {{
  learn;
  ipv{family} {{ import all; export none; }};
}}

template bgp rrwatch_v{family} {{
  local {address} as {asn};
  connect delay time 2;
  connect retry time 5;
  error wait time 5, 30;
  ipv{family} {{ import all; export where source = RTS_BGP; }};
}}
"""
SESSION = """
protocol bgp {name} from rrwatch_v{family} {{
  description "{description}";
  neighbor {address} as {asn};{client}
}}
"""
CLIENT = "\n  rr client;"
CLUSTER_ID = "\n  rr cluster id {cluster};"


@attrs.frozen
class Rendering:
    """The host's BIRD configuration, its sessions, and the neighbours refused a session."""

    text: str
    sessions: tuple[Session, ...]
    refused: Mapping[str, str]  # neighbour (node name, or host/<ip>) -> why it has no session


@attrs.frozen
class Session:
    """One BGP session of the host, as rendered."""

    protocol: str
    family: int
    address: str
    asn: int
    description: str
    client: bool


def protocol_name(address: str) -> str:
    """A BIRD symbol for the session with `address`: peer4_10_0_0_1, peer6_fd00__1."""
    version = ipaddress.ip_address(address).version
    return f"peer{version}_" + re.sub(r"[.:]", "_", address)


def sessions(state: ClusterState, addresses: Sequence[str]
             ) -> tuple[dict[str, str], list[Session], dict[str, str]]:
    """The host's registrations found in `state` (address -> cluster ID or ""), its sessions,
    and the neighbours it refuses (name -> why).

    Only registered addresses count: the nodes peer with what etcd holds, so a registration not
    seen yet (or gone) has no sessions. Every neighbour address is one speaker's alone: a host
    keeps its own, and two nodes that claim one address are both refused.
    """
    registered = {str(r.ip): r.cluster_id or "" for r in state.reflectors.values()}
    found = {a: registered[a] for a in addresses if a in registered}
    out = []
    refused: dict[str, str] = {}
    for address in found:
        family = ipaddress.ip_address(address).version
        fab = fabric(state, family, hosts_only=True)
        me = fab.speakers[HOST_PREFIX + address]
        refused.update(fab.refused[me.name])
        for name in sorted(fab.sessions[me.name], key=lambda n: (fab.speakers[n].address, n)):
            peer = fab.speakers[name]
            out.append(Session(
                protocol_name(str(peer.address)), family, str(peer.address), peer.asn,
                _description(peer), _is_client(me, peer)))
    return found, out, refused


def _description(peer: Speaker) -> str:
    if peer.node:  # nothing that changes: a reload would restart the session
        return "node " + re.sub(r'[^A-Za-z0-9._-]', "?", peer.name)  # a name is not BIRD syntax
    return f"RR host {peer.name.removeprefix(HOST_PREFIX)}"


def _is_client(me: Speaker, peer: Speaker) -> bool:
    """Calico's rule, with the host knowing every cluster ID: same AS, other cluster ID."""
    return peer.asn == me.asn and peer.cluster_id != me.cluster_id


def render(state: ClusterState, addresses: Sequence[str], include: str = ""
           ) -> Rendering | None:
    """The BIRD configuration for the RR host at `addresses`, its sessions and the neighbours
    it refuses; None while no address is registered."""
    found, peers, refused = sessions(state, addresses)
    if not found:
        return None
    v4 = [a for a in found if ipaddress.ip_address(a).version == 4]
    parts = [HEADER.format(
        addresses=", ".join(found),
        router_id=f"router id {v4[0]};" if v4 else "# router id: chosen by BIRD (no IPv4)",
        include=f'include "{include}";\n' if include else "",
    )]
    for address, cluster in found.items():
        family = ipaddress.ip_address(address).version
        parts.append(FAMILY.format(family=family, address=address, asn=state.bgp.asn))
        for s in (s for s in peers if s.family == family):
            client = (CLIENT + (CLUSTER_ID.format(cluster=cluster) if cluster else "")
                      if s.client else "")
            parts.append(SESSION.format(name=s.protocol, family=family, address=s.address,
                                        asn=s.asn, description=s.description, client=client))
    return Rendering("".join(parts), tuple(peers), refused)


# -- BIRD's control socket -----------------------------------------------------------------------


class BirdError(Exception):
    """BIRD cannot be reached, or it refused a command."""


@attrs.frozen
class Protocol:
    """A line of `show protocols`."""

    name: str
    proto: str
    state: str  # up, start, down, ...
    info: str  # the rest: since when, and for BGP the session state (Established, Active, ...)

    @property
    def established(self) -> bool:
        # Found by word: how many words "since" takes depends on BIRD's `timeformat`.
        return "Established" in self.info.split()


def parse_reply(lines: Iterable[str]) -> list[tuple[int, str]]:
    """BIRD's reply lines as (code, text), up to the last: "CODE-text" (more follows),
    " text" (more of the same code) and "CODE text" (the last)."""
    out: list[tuple[int, str]] = []
    code = 0
    for raw in lines:
        raw = raw.rstrip("\n")
        head = raw[:4]
        if head.isascii() and head.isdigit() and raw[4:5] in ("-", " "):
            code = int(head)
            out.append((code, raw[5:]))
            if raw[4:5] == " ":
                return out
        else:
            out.append((code, raw[1:]))
    raise BirdError("the reply ended early")


def ask(path: str, command: str, timeout: float = 5.0) -> list[tuple[int, str]]:
    """One command on BIRD's control socket: the reply as (code, text) lines.

    Blocking: the daemon calls it from a thread.
    """
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(path)
            stream = s.makefile("rwb")
            stream.readline()  # 0001 BIRD <version> ready.
            stream.write(command.encode() + b"\n")
            stream.flush()
            lines = iter(lambda: stream.readline().decode("utf-8", "replace"), "")
            reply = parse_reply(lines)
    except OSError as e:
        raise BirdError(f"{path}: {e.strerror or e}") from None
    if reply[-1][0] >= 8000:
        raise BirdError("; ".join(text for _, text in reply if text).strip())
    return reply


def protocols(path: str) -> list[Protocol]:
    """BIRD's protocols and their states (`show protocols`)."""
    out = []
    for code, text in ask(path, "show protocols"):
        fields = text.split(None, 4)
        if code == 1002 and len(fields) >= 4:
            out.append(Protocol(fields[0], fields[1], fields[3],
                                fields[4] if len(fields) > 4 else ""))
    return out


def configure(path: str, config: str) -> str:
    """Make BIRD load `config`; its answer ("Reconfigured", ...)."""
    reply = ask(path, f'configure "{config}"', timeout=30)
    return reply[-1][1]


# -- keeping BIRD in step ------------------------------------------------------------------------


@attrs.define
class BirdStats:
    applied: int = 0  # configurations written and loaded
    rejected: int = 0  # rendered configurations that `bird -p` refused
    reload_failures: int = 0  # BIRD could not be asked to load the file
    current: bool = False  # BIRD runs the configuration the model asks for


class BirdKeeper:
    """Renders the host's BIRD configuration from the watcher's model on every change.

    Rendering reads the model, so it runs on the trio thread: it costs O(nodes), like the file
    it writes, once per debounced change. File and socket work runs in worker threads.
    """

    # Retry a failed check or reload this often, even without a change: the cause may be outside
    # (BIRD not running yet, an include file being fixed).
    RETRY = 10.0

    def __init__(self, watcher: Watcher, config_path: str, socket_path: str,
                 addresses: Sequence[str], *, include: str = "", debounce: float = 0.1,
                 dry_run: bool = False) -> None:
        self._watcher = watcher
        self.path = os.path.abspath(config_path)  # BIRD resolves a relative one from its own cwd
        self.socket = socket_path
        self._addresses = tuple(addresses)
        self._include = include
        self._debounce = debounce
        self._dry_run = dry_run
        self.stats = BirdStats()
        self.peers: Mapping[str, Session] = {}  # protocol name -> session, as BIRD runs them
        self.refused: Mapping[str, str] = {}  # neighbour -> why, as of the last rendering
        self._reported: str | None = None  # the last problem logged, so a retry is no news

    async def run(self) -> None:
        version, done = -1, None  # `done`: the text last carried through (loaded, or checked)
        while True:
            if version >= 0:
                with trio.move_on_after(math.inf if done is not None else self.RETRY):
                    await self._watcher.wait_change(version)
                await trio.sleep(self._debounce)
            version = self._watcher.version
            rendered = render(self._watcher.state, self._addresses, self._include)
            self._note_refused(rendered.refused if rendered is not None else {})
            if rendered is None:
                self._report(f"waiting for {', '.join(self._addresses)} to be registered",
                             logging.INFO)
                continue
            text, peers = rendered.text, rendered.sessions
            if text == done:
                continue
            self.stats.current = False
            if await self.apply(text):
                done = text
                if not self._dry_run:
                    self.peers = {s.protocol: s for s in peers}
                    self.stats.current = True
            else:
                done = None

    async def apply(self, text: str) -> bool:
        """Check `text` with BIRD, put it in place and load it; False if any step failed."""
        try:
            problem = await self._write_checked(text)
        except OSError as e:
            self._report(f"cannot write {self.path}: {e.strerror or e}", logging.ERROR)
            return False
        if problem is not None:
            if self._report(f"rejected the new configuration, keeping {self.path}: {problem}",
                            logging.ERROR):
                self.stats.rejected += 1
            return False
        if self._dry_run:
            log.info("BIRD: dry run: the new configuration passes bird -p; %s left as it is",
                     self.path)
            return True
        try:
            answer = await trio.to_thread.run_sync(configure, self.socket, self.path)
        except BirdError as e:
            self.stats.reload_failures += 1
            self._report(f"{self.path} is written, but BIRD could not load it: {e}",
                         logging.WARNING)
            return False
        self.stats.applied += 1
        self._reported = None
        log.info("BIRD: %s (%s)", answer or "configured", self.path)
        return True

    # Refused neighbours named per change, at most this many lines at once (the rest counted).
    NAMED = 20

    def _note_refused(self, refused: Mapping[str, str]) -> None:
        """Log the neighbours newly refused a session (or refused for a new reason), and those
        no longer refused; nothing when the set is as before. A name is a node's, or host/<ip>
        for another RR host; logged as its repr(), since a record's name is not log syntax."""
        old = self.refused
        new = sorted(name for name, why in refused.items() if old.get(name) != why)
        for name in new[:self.NAMED]:
            log.warning("BIRD: no session with %r: %s", name, refused[name])
        if len(new) > self.NAMED:
            log.warning("BIRD: no session with %d more neighbours whose records fail a check "
                        "(%d in all)", len(new) - self.NAMED, len(refused))
        gone = sorted(old.keys() - refused.keys())
        if gone:
            log.info("BIRD: %d neighbour(s) no longer refused: %s%s", len(gone),
                     ", ".join(repr(name) for name in gone[:self.NAMED]),
                     ", ..." if len(gone) > self.NAMED else "")
        if new or gone:
            self.refused = dict(refused)

    def _report(self, message: str, level: int) -> bool:
        """Log `message` unless it is the one logged last; whether it was logged."""
        if message == self._reported:
            return False
        self._reported = message
        log.log(level, "BIRD: %s", message)
        return True

    async def _write_checked(self, text: str) -> str | None:
        """Check `text` with `bird -p`, from a temporary file beside the target (or, in a dry
        run, in a private directory), and rename it into place if BIRD accepts it; the reason
        BIRD gave when it does not. OSError when the files cannot be written."""
        if await trio.to_thread.run_sync(read_file, self.path) == text:
            return None
        directory = tempfile.mkdtemp() if self._dry_run else os.path.dirname(self.path)
        temp = None
        try:
            temp = await trio.to_thread.run_sync(_write_temp, directory, text)
            try:
                done = await trio.run_process(["bird", "-p", "-c", temp], capture_stdout=True,
                                              capture_stderr=True, check=False)
            except OSError as e:
                return f"cannot run bird -p: {e.strerror or e}"
            if done.returncode:
                reason = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
                return reason.replace(temp, "<new file>") or f"exit status {done.returncode}"
            if not self._dry_run:
                await trio.to_thread.run_sync(os.replace, temp, self.path)
                temp = None
            return None
        finally:
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            if self._dry_run:
                with contextlib.suppress(OSError):
                    os.rmdir(directory)


def _write_temp(directory: str, text: str) -> str:
    """`text` in a new file in `directory`, on disk; its path."""
    fd, temp = tempfile.mkstemp(prefix=".rrwatch-", suffix=".conf", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)  # BIRD may run as its own user
    except BaseException:
        os.unlink(temp)
        raise
    return temp


def read_file(path: str) -> str | None:
    """The text of `path`; None when it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None

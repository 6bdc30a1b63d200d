"""A lab of real BGP speakers, each in its own network namespace, all on one bridge that lives in
a namespace of its own. A speaker runs BIRD 2, or BIRD 1.6's `bird` and `bird6` as calico-node
does; nftables in its namespace can drop its BGP.

Addresses are private and exist only inside the lab: 10.99.0.0/16 and fd99::/64 on the bridge;
each speaker can originate one prefix, 172.20.<n>.0/24 and fd20:0:<n>::/48. Only a test that
asks for it (`Lab.link_host`) puts the host's own network on the bridge.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import time

import attrs
import trio

V4_NET = ipaddress.IPv4Network("10.99.0.0/16")
V6_NET = ipaddress.IPv6Network("fd99::/64")
ROUTES = 30  # seconds BGP gets to deliver every route


def bird1_dir() -> str:
    """Where BIRD 1.6, calico-node's, is: unpacked beside BIRD 2 by scripts/install-test-deps
    (or where RRWATCH_TEST_BIRD1_DIR says)."""
    return os.path.join(os.environ.get("RRWATCH_TEST_BIRD1_DIR", "/opt/rrwatch-test/bird1.6"),
                        "usr/sbin")


def missing() -> list[str]:
    """What this machine lacks for the lab (root, ip, nft, bird, bird1); empty when it can
    run."""
    out = []
    if os.geteuid() != 0:
        out.append("root")
    out += [tool for tool in ("ip", "nft", "bird") if shutil.which(tool) is None]
    if not os.access(os.path.join(bird1_dir(), "bird6"), os.X_OK):
        out.append("bird1")
    return out


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def prefixes(n: int) -> tuple[str, str]:
    """The IPv4 and IPv6 prefix that speaker number `n` originates."""
    return f"172.20.{n}.0/24", f"fd20:0:{n:x}::/48"


@attrs.define
class Bird:
    """One BIRD daemon: its binary, files and process."""

    binary: str
    config_path: str
    socket_path: str
    log_path: str
    proc: subprocess.Popen | None = None

    def start(self, netns: str) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, self.binary, "-f", "-c", self.config_path,
             "-s", self.socket_path], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while not self.alive():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.binary} did not start: {self.log_tail()}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def alive(self) -> bool:
        try:
            self.ask("show status")
        except OSError:
            return False
        return True

    def configure(self, config: str) -> str:
        with open(self.config_path, "w") as f:
            f.write(config)
        return self.ask(f'configure "{self.config_path}"')

    def ask(self, command: str) -> str:
        """One command on the control socket; the reply without its reply codes.

        Not rrwatch.host.birdc on purpose: the tests hold rrwatch's reading of BIRD (metrics,
        status, reports) against this one."""
        try:
            return self._ask(command)
        except TimeoutError:
            raise TimeoutError(f"{self.binary} at {self.socket_path}: no answer to {command!r}"
                               f" in 5 s: {self.log_tail()}") from None

    def _ask(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.socket_path)
            f = s.makefile("rwb")
            f.readline()  # 0001 BIRD ... ready.
            f.write(command.encode() + b"\n")
            f.flush()
            lines = []
            while True:
                line = f.readline().decode()
                if not line:
                    raise OSError("BIRD closed the control socket")
                lines.append(line[5:].rstrip("\n") if line[:4].isdigit() else line[1:].rstrip("\n"))
                if line[:4].isdigit() and line[4] == " ":
                    return "\n".join(lines)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


@attrs.define
class Speaker:
    """The BGP speaker of one machine, in one namespace: one BIRD 2 (both families), or, as on
    a Calico node, BIRD 1.6's `bird` and `bird6` (start_calico). `n` numbers its addresses and
    its prefix."""

    lab: Lab
    name: str
    n: int
    netns: str
    dir: str
    birds: list[Bird] = attrs.Factory(list)
    dead: bool = False  # its machine is gone: nothing starts its BIRDs again

    @property
    def ipv4(self) -> str:
        return str(V4_NET[self.n])

    @property
    def ipv6(self) -> str:
        return str(V6_NET[self.n])

    @property
    def prefixes(self) -> tuple[str, str]:
        return prefixes(self.n)

    @property
    def config_path(self) -> str:
        return os.path.join(self.dir, "bird.conf")

    @property
    def socket_path(self) -> str:
        return os.path.join(self.dir, "bird.ctl")

    @property
    def sockets(self) -> list[str]:
        """The control sockets of its BIRDs, as calico-node has them: bird.ctl, bird6.ctl."""
        return [os.path.join(self.dir, f"{family}.ctl") for family in ("bird", "bird6")]

    @property
    def running(self) -> bool:
        return any(bird.proc is not None for bird in self.birds)

    def start(self, config: str | None = None, *, bird: str = "bird") -> None:
        """Start one BIRD (`bird`: BIRD 2 by default, or a binary under `lab.bird1`) on `config`
        (or on what the config file already holds)."""
        if config is not None:
            with open(self.config_path, "w") as f:
                f.write(config)
        self.birds = []
        one = Bird(bird, self.config_path, self.socket_path, os.path.join(self.dir, "bird.log"))
        one.start(self.netns)
        self.birds = [one]  # only once it answers: others may ask it from another thread

    def start_calico(self, configs: tuple[str, str]) -> None:
        """Start BIRD 1.6's `bird` and `bird6` on `configs` (bird.cfg, bird6.cfg), as calico-node
        runs them, with calico-node's socket names."""
        # Published only once both answer: the lab's Confd starts them in a thread, and a
        # test asking a BIRD that was still starting found no control socket.
        self.birds = []
        birds: list[Bird] = []
        try:
            for daemon, config, sock in zip(("bird", "bird6"), configs, self.sockets,
                                            strict=True):
                path = os.path.join(self.dir, f"{daemon}.cfg")
                with open(path, "w") as f:
                    f.write(config)
                birds.append(Bird(os.path.join(self.lab.bird1, daemon), path, sock,
                                  os.path.join(self.dir, f"{daemon}.log")))
                birds[-1].start(self.netns)
        except BaseException:
            for bird in birds:
                bird.kill()
            raise
        self.birds = birds

    def restart(self) -> None:
        """Start its BIRDs again on the files they last had."""
        for bird in self.birds:
            bird.start(self.netns)

    def kill(self) -> None:
        for bird in self.birds:
            bird.kill()

    def alive(self) -> bool:
        return bool(self.birds) and all(bird.alive() for bird in self.birds)

    def configure(self, config: str) -> str:
        return self.birds[0].configure(config)

    def configure_calico(self, configs: tuple[str, str]) -> None:
        """Give `bird` and `bird6` new configurations, where they changed (as confd does)."""
        for bird, config in zip(self.birds, configs, strict=True):
            with open(bird.config_path) as f:
                if f.read() == config:
                    continue
            reply = bird.configure(config)
            if "Reconfigured" not in reply and "Reconfiguration in progress" not in reply:
                raise RuntimeError(f"{self.name}: BIRD refused its configuration: {reply}")

    def ask(self, command: str) -> str:
        """One command to its first BIRD (the only one, for BIRD 2)."""
        return self.birds[0].ask(command)

    def routes(self) -> set[str]:
        """The prefixes in its BIRDs' tables, of any source."""
        found: set[str] = set()
        for bird in self.birds:
            found |= {m.group(1) for m in re.finditer(r"^([0-9a-f:.]+/\d+)\s",
                                                      bird.ask("show route"), re.M)}
        return found

    def sessions(self) -> dict[str, str]:
        """BGP protocol name -> its info column (Established, Active, ...), of all its BIRDs."""
        out = {}
        for bird in self.birds:
            for line in bird.ask("show protocols").splitlines():
                fields = line.split(None, 5)
                if len(fields) >= 4 and fields[1] == "BGP":
                    out[fields[0]] = fields[5].split()[0] if len(fields) > 5 else fields[3]
        return out

    def firewall(self, *, drop: frozenset[str] | None) -> None:
        """nftables in its namespace: drop BGP (TCP 179, either way) with the addresses in
        `drop`, or with everyone when it is empty; None opens the firewall."""
        run("ip", "netns", "exec", self.netns, "nft", "flush", "ruleset")
        if drop is None:
            return
        rules = [f"tcp {port} 179 drop" for port in ("dport", "sport")]
        if drop:
            v4 = ", ".join(sorted(a for a in drop if ":" not in a))
            v6 = ", ".join(sorted(a for a in drop if ":" in a))
            rules = [f"{ip} saddr {{ {addrs} }} {rule}" for ip, addrs in (("ip", v4), ("ip6", v6))
                     if addrs for rule in rules]
        body = "".join(f"    {rule}\n" for rule in rules)
        script = ("table inet rrwatch_lab {\n  chain input {\n"
                  "    type filter hook input priority 0; policy accept;\n" + body + "  }\n}\n")
        done = subprocess.run(["ip", "netns", "exec", self.netns, "nft", "-f", "-"],
                              input=script, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"nft: {done.stderr.strip()}")

    def log_tail(self, lines: int = 20) -> str:
        return "".join(bird.log_tail(lines) for bird in self.birds)


class Lab:
    """Namespaces and a bridge, made on entry and removed on exit, whatever happened.

    Namespaces are named rrw<pid>x<lab>-...: unique per lab, and those of a test run that died
    (its pid gone) are removed when the next lab starts.
    """

    _made = 0

    def __init__(self, root: str) -> None:
        Lab._made += 1
        self.root = root
        self.tag = f"rrw{os.getpid()}x{Lab._made}"
        self.hub = f"{self.tag}-hub"
        self.speakers: dict[str, Speaker] = {}
        self.bird1 = bird1_dir()
        self._next = 1

    def __enter__(self) -> Lab:
        _sweep()
        try:
            run("ip", "netns", "add", self.hub)
            run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            run("ip", "-n", self.hub, "link", "set", "br0", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for speaker in self.speakers.values():
            speaker.kill()
        for netns in [s.netns for s in self.speakers.values()] + [self.hub]:
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        left = [n for n in _namespaces() if n.startswith(self.tag + "-")]
        assert not left, f"namespaces left behind: {left}"

    def add(self, name: str) -> Speaker:
        """A new namespace on the bridge with the next addresses; BIRD not started yet."""
        n = self._next
        self._next += 1
        netns = f"{self.tag}-{n}"
        directory = os.path.join(self.root, name)
        os.makedirs(directory, exist_ok=True)
        speaker = Speaker(self, name, n, netns, directory)
        self.speakers[name] = speaker
        run("ip", "netns", "add", netns)
        run("ip", "-n", self.hub, "link", "add", f"v{n}", "type", "veth", "peer", "name", "eth0",
            "netns", netns)
        run("ip", "-n", self.hub, "link", "set", f"v{n}", "master", "br0", "up")
        for cmd in (("addr", "add", f"{speaker.ipv4}/16", "dev", "eth0"),
                    ("addr", "add", f"{speaker.ipv6}/64", "dev", "eth0", "nodad"),
                    ("link", "set", "eth0", "up"), ("link", "set", "lo", "up")):
            run("ip", "-n", netns, *cmd)
        return speaker


    def link_host(self) -> tuple[str, str]:
        """This machine's own network on the lab's bridge, by one veth, with the next addresses
        (IPv4, IPv6): for what runs on the host's network, as a container with --net=host does.
        The link goes with the hub namespace, so with the lab (or the sweep of a dead run's)."""
        n = self._next
        self._next += 1
        host_end = f"{self.tag}h"
        run("ip", "link", "add", host_end, "type", "veth", "peer", "name", f"v{n}", "netns",
            self.hub)
        run("ip", "-n", self.hub, "link", "set", f"v{n}", "master", "br0", "up")
        ipv4, ipv6 = str(V4_NET[n]), str(V6_NET[n])
        for cmd in (("addr", "add", f"{ipv4}/16", "dev", host_end),
                    ("addr", "add", f"{ipv6}/64", "dev", host_end, "nodad"),
                    ("link", "set", host_end, "up")):
            run("ip", *cmd)
        return ipv4, ipv6


def _namespaces() -> list[str]:
    return [line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()]


def _sweep() -> None:
    """Remove the namespaces of labs whose test process is gone (killed, say)."""
    for netns in _namespaces():
        match = re.match(r"rrw(\d+)x\d+-", netns)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def missing_pairs(lab: Lab, origins: list[str], receivers: list[str], family: int
                  ) -> set[tuple[str, str]]:
    """(origin, receiver) pairs where the receiver's BIRD lacks the origin's prefix."""
    index = 0 if family == 4 else 1
    pairs = set()
    for receiver in receivers:
        have = lab.speakers[receiver].routes()
        pairs |= {(o, receiver) for o in origins
                  if o != receiver and lab.speakers[o].prefixes[index] not in have}
    return pairs


async def until_complete(lab: Lab, origins: list[str], receivers: list[str]) -> float:
    """Seconds until every receiver has every origin's prefixes, in both families."""
    start = time.monotonic()
    left: set = set()
    with trio.move_on_after(ROUTES):
        while True:
            left = missing_pairs(lab, origins, receivers, 4) | missing_pairs(
                lab, origins, receivers, 6)
            if not left:
                return time.monotonic() - start
            await trio.sleep(0.05)
    raise AssertionError(f"{len(left)} routes missing after {ROUTES} s: {sorted(left)[:10]}")

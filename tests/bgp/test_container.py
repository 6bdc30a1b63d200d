"""rrwatch's RR host image (deploy/container) run as seed 004's users ran theirs: `--net=host`,
with IP, IP6 and the ETCD_* settings, the TLS files mounted, and /sockets shared as a sidecar
would share it. The etcd is the tests' own on loopback; the host's network reaches the lab's
bridge by one veth (`Lab.link_host`), where a Calico node speaker (BIRD 1.6, as confd
configures it) peers with the container's BIRD."""

from __future__ import annotations

import json
import os
import re
import uuid

import pytest
import trio

from rrwatch.core import bird_config, calico, edits
from rrwatch.host import birdc
from rrwatch.testing import simulate
from tests import support
from tests.bgp import calico_bird
from tests.bgp.container import Container, Podman
from tests.bgp.lab import ROUTES, Lab

INCLUDE = "/etc/bird/rrwatch-include.conf"  # the image's: BIRD logs to stderr, timeformat
ASN = 64512
REGISTRATIONS = "/calico/bgp/v1/rr_v"


@pytest.fixture
def start(podman: Podman, daemon_env, tls, tmp_path):
    """Start the image with the test etcd's settings and TLS files, plus `env`. Every container
    is removed at the end, and none may have logged a traceback; its log shows if a test fails."""
    started: list[Container] = []

    def run(env: dict[str, str]) -> Container:
        name = f"rrwatch-test-{uuid.uuid4().hex[:8]}"
        sockets = tmp_path / name
        sockets.mkdir()
        started.append(Container(podman, name, str(sockets / "bird.ctl")))  # even if run fails
        podman.run(name, {**daemon_env, **env}, detach=True, files=[tls.ca, tls.cert, tls.key],
                   sockets=sockets)
        return started[-1]

    yield run
    logs = {c.name: c.logs() for c in started}
    for c in started:
        c.remove()
    for name, log in logs.items():
        print(f"--- {name}\n{log}")
        assert "Traceback" not in log, log


def node_record(name: str, ipv4: str, ipv6: str) -> tuple[str, bytes]:
    return calico.NODES + name, simulate.node_value(name, "a", 0, ipv4=f"{ipv4}/16",
                                                    ipv6=f"{ipv6}/64")


async def registrations(etcd) -> dict[str, tuple[bytes, int, int]]:
    """The RR host registrations: key -> (value, lease, mod revision)."""
    _, kvs = await etcd.snapshot([REGISTRATIONS])
    return {kv.key: (kv.value, kv.lease, kv.mod_revision) for kv in kvs}


async def rendered(etcd, container: Container, addresses: tuple[str, ...], env) -> str:
    """Once etcd is settled and the container's BIRD configuration is what rrwatch renders for
    its records: that text."""
    await support.settled(etcd, env)
    state = await support.snapshot_state(etcd, env)
    want = bird_config.render(state, addresses, INCLUDE)
    assert want is not None, "the host's registration is not in etcd"
    await support.wait_until(lambda: container.read("/etc/bird/bird.conf") == want.text)
    return want.text


def established(socket: str) -> set[str]:
    """The BGP protocols Established on the BIRD behind `socket`."""
    try:
        return {p.name for p in birdc.protocols(socket) if p.proto == "BGP" and p.established}
    except birdc.BirdError:
        return set()


def routes(socket: str) -> set[str]:
    """The prefixes in the tables of the BIRD behind `socket`."""
    try:
        reply = birdc.ask(socket, "show route")
    except birdc.BirdError:
        return set()
    return {text.split()[0] for code, text in reply if code == 1007 and text[:1].isalnum()}


async def test_the_image_registers_serves_a_node_and_unregisters_on_sigterm(
        lab: Lab, etcd, start, daemon_env):
    ipv4, ipv6 = lab.link_host()
    node = lab.add("node-a")
    await simulate.put_all(etcd, dict([(calico.BGP_CONFIG, simulate.mesh_off(ASN)),
                                       node_record(node.name, node.ipv4, node.ipv6)]))
    # A long lease: the registration must go by its revocation at SIGTERM, not by expiry.
    container = start({"IP": ipv4, "IP6": ipv6, "RRWATCH_LEASE_TTL": "60"})

    # Registered, both families, on the instance's lease.
    with trio.fail_after(support.CONVERGE):
        while len(held := await registrations(etcd)) < 2:
            await trio.sleep(0.1)
    assert {json.loads(value)["ip"] for value, _, _ in held.values()} == {ipv4, ipv6}
    assert all(lease for _, lease, _ in held.values())

    # BIRD runs what rrwatch renders for the records: a session per family with the node.
    text = await rendered(etcd, container, (ipv4, ipv6), daemon_env)
    assert f"neighbor {node.ipv4} as {ASN};" in text and f"neighbor {node.ipv6} as {ASN};" in text

    # The node, as confd configures it from the BGPPeer rrwatch wrote for the host.
    _, data = await support.settled(etcd, daemon_env)
    assert calico.PEERS + "rrwatch-host-" + ipv4.replace(".", "-") in data
    node.start_calico(calico_bird.configs16(calico_bird.read(data), node.name, node.prefixes))

    # Established on both sides, in both families; the RR host holds the node's prefixes. The
    # host's side is read through /sockets, as a bird_exporter sidecar reads it.
    host_protocols = set(re.findall(r"^protocol bgp (\S+) ", text, re.M))
    assert len(host_protocols) == 2
    with trio.fail_after(ROUTES):
        while not (established(container.socket) == host_protocols
                   and list(node.sessions().values()).count("Established") == 2
                   and set(node.prefixes) <= routes(container.socket)):
            await trio.sleep(0.1)

    # `rrwatch status` in the container shows this BIRD's sessions.
    shown = json.loads(container.exec("rrwatch", "status", "--output", "json"))["bird"]
    assert shown["socket"] == "/sockets/bird.ctl"
    assert {s["protocol"] for s in shown["sessions"] if s["established"]} == host_protocols

    # SIGHUP reaches rrwatch, which reloads and goes on.
    container.signal("HUP")
    await support.wait_until(lambda: "reloaded the configuration" in container.logs())
    assert container.running() and established(container.socket) == host_protocols

    # SIGTERM: a clean stop, rrwatch before BIRD, and the registration is gone with the lease.
    assert container.terminate() == 0, container.logs()
    assert await registrations(etcd) == {}
    assert not os.path.exists(container.socket)
    log = container.logs()
    assert log.index("SIGTERM: stopping") < log.index("Shutting down")


async def test_the_image_keeps_a_registration_written_by_hand(lab: Lab, etcd, start, daemon_env):
    """seed 004's operators wrote registrations by hand, cluster_id and all: the image serves
    under that one, and leaves it as it was when it stops."""
    ipv4, _ = lab.link_host()
    node = lab.add("node-a")
    key, value = edits.registration(ipv4, "224.0.1.9")
    await simulate.put_all(etcd, dict([(calico.BGP_CONFIG, simulate.mesh_off(ASN)),
                                       node_record(node.name, node.ipv4, node.ipv6),
                                       (key, value)]))
    [before] = (await registrations(etcd)).values()
    container = start({"IP": ipv4})

    text = await rendered(etcd, container, (ipv4,), daemon_env)
    assert f"neighbor {node.ipv4} as {ASN};\n  rr client;\n  rr cluster id 224.0.1.9;" in text
    await support.wait_until(lambda: "made by hand: leaving it alone" in container.logs())

    assert container.terminate() == 0, container.logs()
    assert await registrations(etcd) == {key: before}


# The image has no pkill: find BIRD by its name in /proc.
KILL_BIRD = """for p in /proc/[0-9]*; do
    if [ "$(cat "$p/comm" 2>/dev/null)" = bird ]; then kill -KILL "${p#/proc/}"; fi
done"""


async def test_when_bird_dies_the_container_unregisters_and_fails(etcd, start):
    """BIRD killed in the container: the entrypoint stops rrwatch, whose lease (so the
    registration) goes at once, and the container fails, for its restart policy to act on."""
    await simulate.put_all(etcd, {calico.BGP_CONFIG: simulate.mesh_off(ASN)})
    container = start({"IP": "192.0.2.10", "RRWATCH_LEASE_TTL": "60"})
    with trio.fail_after(support.CONVERGE):
        while not await registrations(etcd) or not os.path.exists(container.socket):
            await trio.sleep(0.1)

    container.exec("bash", "-c", KILL_BIRD)
    assert container.wait() == 128 + 9
    assert await registrations(etcd) == {}
    assert "rrwatch-rr: BIRD exited (status 137); stopping rrwatch" in container.logs()


@pytest.mark.parametrize("env, says", [
    ({}, "rrwatch-rr: set IP to this host's IPv4 address, or IP6 to its IPv6 one (or both)"),
    ({"IP": "10.0.0.1;include"}, "rrwatch: configuration: RRWATCH_REGISTER_IP: '10.0.0.1;include' "
                                 "does not appear to be an IPv4 or IPv6 address"),
])
def test_a_bad_setting_stops_the_image_with_status_78_and_one_line(env, says, podman: Podman):
    """One line from whoever found the problem (the entrypoint, or rrwatch), and no traceback;
    BIRD's own lines and the entrypoint's closing one may follow."""
    name = f"rrwatch-test-{uuid.uuid4().hex[:8]}"
    try:
        done = podman.run(name, env, detach=False)
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
    assert done.returncode == 78, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith(says.split(":")[0] + ":")]
    assert len(said) == 1 and said[0].startswith(says), done.stderr
    assert "Traceback" not in done.stderr

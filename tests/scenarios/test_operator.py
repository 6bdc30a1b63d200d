"""The operator's surface on a real TLS etcd with the real daemon: `check`, certificate rotation
under a running leader, the policy object, `register`/`unregister`, `graph`, and the daemon's
sd_notify messages."""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import signal
import socket
import time
import xml.etree.ElementTree as ET
from collections import Counter

import attrs
import trio

from rrwatch.core import calico
from rrwatch.etcd import Etcd
from rrwatch.testing import local_etcd, simulate
from rrwatch.testing.pki import SERVER_SANS, Pki, issue, make_ca, write_pem
from rrwatch.tls import TlsFiles
from rrwatch.tls import session as tls_session
from tests.support import ZONES, layout, read_cluster, seed_topology, settled

ZONE_ENV = {"ROUTE_REFLECTOR_ZONE_LABEL": simulate.ZONE_LABEL}


def _write(directory, name: str, *objects: object) -> str:
    """PEM objects into one file (several certificates make a bundle)."""
    path = str(directory / name)
    parts = []
    for obj in objects:
        write_pem(path, obj)
        with open(path, "rb") as f:
            parts.append(f.read())
    with open(path, "wb") as f:
        f.write(b"".join(parts))
    os.chmod(path, 0o600 if name.endswith("key.pem") else 0o644)
    return path


def two_ca_etcd(directory) -> tuple[local_etcd.LocalEtcd, dict]:
    """A TLS etcd that trusts clients of CAs one and two; a client of each, and CA bundles.

    Its server certificate has a CA of its own, which etcd must always trust too: its gateway
    presents that certificate to etcd's own gRPC port."""
    directory.mkdir()
    server_ca, one, two = make_ca("server CA"), make_ca("CA one"), make_ca("CA two")
    files = {"all": _write(directory, "all.pem", server_ca[0], one[0], two[0]),
             "two": _write(directory, "two.pem", server_ca[0], two[0])}
    server, server_key = issue(*server_ca, "localhost", sans=SERVER_SANS, server=True,
                               client=True)
    server_files = TlsFiles(files["all"], _write(directory, "server.pem", server),
                            _write(directory, "server-key.pem", server_key))
    now = datetime.datetime.now(datetime.UTC)
    for name, authority, days in (("first", one, 365), ("next", two, 200)):
        cert, key = issue(*authority, "rrwatch", not_after=now + datetime.timedelta(days=days))
        files[name] = TlsFiles(files["all"], _write(directory, f"{name}.pem", cert),
                               _write(directory, f"{name}-key.pem", key))
    pki = Pki(str(directory), files["all"], server_files, files["first"], files["first"])
    [member] = local_etcd.start_cluster(str(directory / "etcd"), pki, 1)
    return member, files


async def wait_for(condition, timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.1)


async def test_rotated_certificate_is_taken_up_by_the_running_leader(tmp_path, start_daemon):
    """New client files under a leader: it takes them up; then etcd is restarted trusting only
    the new certificate's CA, and the leader is still the leader, once, and still writes.
    Broken new files are refused and the files in use stay."""
    member, files = two_ca_etcd(tmp_path / "pki")
    live = TlsFiles(files["all"], str(tmp_path / "client.pem"), str(tmp_path / "client-key.pem"))
    shutil.copy(files["first"].cert, live.cert)
    shutil.copy(files["first"].key, live.key)
    env = {"ETCD_ENDPOINTS": member.endpoint, "ETCD_CA_CERT_FILE": live.ca,
           "ETCD_CERT_FILE": live.cert, "ETCD_KEY_FILE": live.key, "RRWATCH_SETTLE": "0.5",
           **ZONE_ENV}
    etcd = Etcd([member.endpoint], files["next"])
    try:
        await seed_topology(etcd, per_zone=3)
        daemon = start_daemon(env)
        await settled(etcd, env)
        await wait_for(daemon.leading)

        shutil.copy(files["next"].key, live.key + ".new")
        shutil.copy(files["next"].cert, live.cert + ".new")
        os.replace(live.key + ".new", live.key)  # as a rotation tool does: one file, then
        os.replace(live.cert + ".new", live.cert)  # the other
        await wait_for(lambda: daemon.metrics().get("rrwatch_tls_reloads_total") == 1)
        expires = daemon.metrics()["rrwatch_tls_cert_expiry_timestamp_seconds"] - time.time()
        assert 199 < expires / 86400 < 200.1  # the next certificate's

        member.stop()  # etcd comes back trusting CA two only: the old certificate is refused
        member.pki = attrs.evolve(member.pki, ca=files["two"], client=files["next"])
        member.start()
        await etcd.close()  # its pooled connections died with etcd
        etcd = Etcd([member.endpoint], files["next"])
        name = simulate.node_name("b", 900)
        await simulate.put_all(etcd, {calico.NODES + name: simulate.node_value(name, "b", 900)})
        _, data = await settled(etcd, env)
        assert name in layout(data)[1]  # the leader made the new node a client of the mesh

        with open(live.key, "w") as f:
            f.write("half a key\n")
        await wait_for(lambda: daemon.metrics().get("rrwatch_tls_rejected_total") == 1)
        name = simulate.node_name("c", 901)
        await simulate.put_all(etcd, {calico.NODES + name: simulate.node_value(name, "c", 901)})
        _, data = await settled(etcd, ZONE_ENV)  # (env's key file is broken now)
        assert name in layout(data)[1]
        metrics = daemon.metrics()
        assert (metrics["rrwatch_leader"], metrics["rrwatch_leaderships_total"]) == (1, 1)
        assert "no valid PEM private key (PEM blocks found: none); keeping the certificate" in (
            daemon.log())
    finally:
        await etcd.close()
        member.stop()


async def test_check_passes_against_a_good_etcd(etcd_server, rrwatch):
    """Config, TLS, the endpoint and every permission: one `ok` line each, exit 0."""
    result = rrwatch("check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * 4, lines
    assert lines[2] == f"ok   {etcd_server.endpoint}: etcd serves, revision 1"
    assert lines[3].startswith("ok   permissions: readwrite " + calico.NODES)


async def test_check_explains_an_etcd_with_auth(etcd_server, rrwatch, tls, pki):
    """etcd with auth on, and no user given: `check` says to give one, in one line, and exits
    77; with a certificate that has a CommonName, which etcd's gateway refuses outright, it says
    that instead and exits 78, instead of the daemon failing on every request."""
    with tls_session(tls) as session:
        for path, body in (("/v3/auth/role/add", {"name": "root"}),
                           ("/v3/auth/user/add", {"name": "root", "password": "secret"}),
                           ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                           ("/v3/auth/enable", {})):
            assert session.post(etcd_server.endpoint + path, json=body, timeout=5).ok
    nameless = {"ETCD_CERT_FILE": pki.nameless.cert, "ETCD_KEY_FILE": pki.nameless.key}
    result = rrwatch("check", env=nameless)
    assert result.returncode == 77, result.stdout + result.stderr
    [failed] = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert "etcd has auth enabled: set ETCD_USERNAME and ETCD_PASSWORD" in failed
    result = rrwatch("check")
    assert result.returncode == 78, result.stdout + result.stderr
    [failed] = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert "refuses a client certificate with a CommonName" in failed


def test_check_names_an_unreachable_endpoint(rrwatch):
    port = local_etcd.free_port()
    result = rrwatch("check", env={"ETCD_ENDPOINTS": f"https://127.0.0.1:{port}"})
    assert result.returncode == 69, result.stdout + result.stderr
    assert f"FAIL https://127.0.0.1:{port}: cannot be reached" in result.stdout


async def test_policy_object_applies_live(etcd, start_daemon, daemon_env):
    """The policy object turns a `simple` mesh `zoned` while the daemon runs; a bad object is
    skipped and counted, and leaves the mesh alone; deleting it brings the local policy back."""
    await seed_topology(etcd, per_zone=6)
    env = {**daemon_env, "ROUTE_REFLECTOR_TOPOLOGY": "simple"}
    daemon = start_daemon(env)
    _, data = await settled(etcd, env)
    assert len({cid for _, cid in layout(data)[0].values()}) == 1

    key = "/rrwatch/v1/policy"
    await simulate.put_all(etcd, {key: b'{"topology": "zoned", "min": 2}'})
    _, data = await settled(etcd, env)  # settled() plans with the object too
    reflectors, _ = layout(data)
    assert Counter(zone for zone, _ in reflectors.values()) == {z: 2 for z in ZONES}
    assert len({cid for _, cid in reflectors.values()}) == 3
    await wait_for(lambda: daemon.metrics().get("rrwatch_policy_object") == 1)
    zones = {(s.name, s.labels.get("zone")): s.value for s in daemon.samples()
             if s.name.startswith("rrwatch_zone_")}
    for zone in ZONES:
        assert (zones[("rrwatch_zone_nodes", zone)], zones[("rrwatch_zone_route_reflectors", zone)],
                zones[("rrwatch_zone_clients", zone)]) == (6, 2, 4)
    await wait_for(lambda: daemon.metrics().get("rrwatch_pending_changes") == 0)
    assert daemon.metrics()["rrwatch_last_reconcile_timestamp_seconds"] > 0

    await simulate.put_all(etcd, {key: b'{"topology": "ring"}'})
    await daemon.wait_for_log(f"skipping {key}")
    await wait_for(lambda: daemon.metrics().get("rrwatch_bad_records_current") == 1)
    assert "topology 'ring' is not one of" in daemon.log()
    await trio.sleep(1)  # twice the settle time: a plan from a changed policy would have run
    # (not settled(): a new reader that finds the object bad has only the local policy)
    _, after = await read_cluster(etcd)
    assert layout(after) == layout(data)

    await etcd.txn([], [{"request_delete_range": {
        "key": base64.b64encode(key.encode()).decode()}}])
    _, data = await settled(etcd, env)
    reflectors, _ = layout(data)
    assert Counter(zone for zone, _ in reflectors.values()) == {z: 3 for z in ZONES}
    assert len({cid for _, cid in reflectors.values()}) == 1


async def test_register_and_unregister(etcd, rrwatch):
    """`register` writes a registration without a lease, `unregister` removes it; one held by
    a running rrwatch's lease is refused both ways."""
    result = rrwatch("register", "10.0.0.9", "fd00::9", "--id", "224.0.0.9")
    assert result.returncode == 0, result.stderr
    v4 = await etcd.get(calico.RR_V4 + "10.0.0.9")
    assert json.loads(v4.value) == {"ip": "10.0.0.9", "cluster_id": "224.0.0.9"}
    assert v4.lease == 0
    assert json.loads((await etcd.get(calico.RR_V6 + "fd00::9")).value) == {
        "ip": "fd00::9", "cluster_id": "224.0.0.9"}

    result = rrwatch("unregister", "10.0.0.9")
    assert result.returncode == 0, result.stderr
    assert await etcd.get(calico.RR_V4 + "10.0.0.9") is None
    assert await etcd.get(calico.RR_V6 + "fd00::9") is not None

    lease = await etcd.grant(60)
    held = calico.RR_V4 + "10.0.0.7"
    await etcd.txn([], [{"request_put": {"key": base64.b64encode(held.encode()).decode(),
                                         "value": base64.b64encode(b'{"ip":"10.0.0.7"}').decode(),
                                         "lease": lease}}])
    for command in ("register", "unregister"):
        result = rrwatch(command, "10.0.0.7")
        assert result.returncode == 1 and "held by the lease of a running rrwatch" in (
            result.stderr)
        assert (await etcd.get(held)).lease == lease
    assert rrwatch("register", "10.0.0.300").returncode == 2  # argparse: not an address


async def test_graph_renders_with_graphviz(graphviz, etcd, rrwatch, tmp_path):
    """`rrwatch graph` prints DOT, and `--format svg` gives a picture Graphviz drew: one node
    per speaker."""
    await seed_topology(etcd, per_zone=2)
    result = rrwatch("graph")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("graph rrwatch {")
    out = tmp_path / "mesh.svg"
    result = rrwatch("graph", "--format", "svg", "-o", str(out))
    assert result.returncode == 0, result.stderr
    svg = ET.parse(out).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    titles = {g.find(f"{ns}title").text for g in svg.iter(f"{ns}g")
              if g.get("class") == "node"}
    nodes = {simulate.node_name(z, i) for z in ZONES for i in range(2)}
    assert titles == nodes | {"host/10.200.0.1"}  # the registered IPv4 host speaks too


async def test_daemon_notifies_systemd(start_daemon, tmp_path, etcd):
    """On a test NOTIFY_SOCKET: READY=1 with a STATUS line once in sync, WATCHDOG=1 pings,
    RELOADING=1 then READY=1 on SIGHUP, and STOPPING=1 on SIGTERM. Logs are JSON lines."""
    await seed_topology(etcd, per_zone=2)
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        daemon = start_daemon({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000",
                               "RRWATCH_LOG_FORMAT": "json"})
        received: list[str] = []

        async def until(field: str) -> list[str]:
            with trio.fail_after(30):
                while not any(field in message.split("\n") for message in received):
                    try:
                        received.append(sock.recv(4096).decode())
                    except BlockingIOError:
                        await trio.sleep(0.05)
            return received

        await until("READY=1")
        ready = next(m for m in received if "READY=1" in m.split("\n"))
        assert "STATUS=" in ready and "3 zones" in ready
        await until("WATCHDOG=1")
        received.clear()
        daemon.signal(signal.SIGHUP)
        await until("READY=1")
        assert received[0].startswith("RELOADING=1\nMONOTONIC_USEC=")
        received.clear()
        daemon.signal(signal.SIGTERM)
        await until("STOPPING=1")
        assert daemon.proc.wait(timeout=10) == 0
    entries = [json.loads(line) for line in daemon.log().splitlines()]  # --log-format json
    assert {"time", "level", "logger", "message"} <= entries[0].keys()
    assert any(e["message"] == "reloaded the configuration" for e in entries)


def test_check_lists_config_problems_one_per_line(rrwatch, tmp_path):
    """`check` reports every config problem on a FAIL line of its own, and exits 78."""
    result = rrwatch("check", env={"ETCD_KEY_FILE": str(tmp_path / "absent.pem"),
                                   "ROUTE_REFLECTOR_MIN": "many"})
    assert result.returncode == 78, result.stdout + result.stderr
    failed = result.stdout.splitlines()
    assert len(failed) == 2 and all(line.startswith("FAIL ") for line in failed)
    assert any(f"{tmp_path}/absent.pem: cannot read" in line for line in failed)


async def test_register_dry_run_writes_nothing(etcd, rrwatch):
    result = rrwatch("register", "10.0.0.9", "--dry-run")
    assert result.returncode == 0 and "would register" in result.stdout
    assert await etcd.get(calico.RR_V4 + "10.0.0.9") is None
    result = rrwatch("register", "10.0.0.9", "10.0.0.10")
    assert result.returncode == 2 and "one IPv4 and one IPv6" in result.stderr


async def test_graph_into_a_missing_directory_is_one_line(etcd, rrwatch, tmp_path):
    """`graph -o` where the file cannot be made: one line naming it on stderr, exit 78, and no
    traceback."""
    with trio.fail_after(30):
        await seed_topology(etcd, per_zone=1)
    out = tmp_path / "missing" / "mesh.dot"
    result = rrwatch("graph", "-o", str(out))
    assert result.returncode == 78, result.stderr
    assert result.stderr == f"rrwatch: cannot write {str(out)!r}: No such file or directory\n"
    assert result.stdout == "" and not out.parent.exists()

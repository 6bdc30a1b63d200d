"""etcd 3.4 with authentication on, least privilege: the roles docs/reference.md gives, set up by
running its `etcdctl` block as it is, and the real daemon, `check` and `report` as those users.

The fixtures here replace the suite's: etcd runs with `--auth-token-ttl 5`, a root user sets it
up, every client certificate has no CommonName (etcd's gateway refuses one that has, with auth
on), and the test's own client logs in as root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator

import pytest
import trio

from rrwatch.config.values import Credentials
from rrwatch.core import calico
from rrwatch.etcd import Code, Etcd, EtcdError, put
from rrwatch.testing import local_etcd, simulate
from rrwatch.tls import TlsFiles
from tests.support import (
    FakeBird,
    converged,
    mesh_problems,
    read_cluster,
    require,
    rr_names,
    seed,
    settled,
    wait_until,
)

TOKEN_TTL = 5
ROOT = Credentials("root", "root-pw")
PASSWORDS = {"RRWATCH_PASSWORD": "controller-pw", "RRWATCH_HOST_PASSWORD": "host-pw",
             "REPORT_PASSWORD": "report-pw"}
NODE = "node-a-00000"  # the reporter's node, as `seed` names them
HOST_IP = "10.200.0.9"
PREFIX = "/rrwatch/v1/"
REFERENCE = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "reference.md")


def documented_roles() -> str:
    """The `sh` block of docs/reference.md that follows the note that the tests run it."""
    with open(REFERENCE, encoding="utf-8") as f:
        text = f.read()
    found = re.search(r"<!-- tests/scenarios/test_etcd_auth.py runs this block as it is -->\n"
                      r"```sh\n(.*?)```", text, re.S)
    assert found, "docs/reference.md lost its block of role commands"
    return found.group(1)


def etcdctl(server: local_etcd.LocalEtcd, nameless: TlsFiles, script: str, *,
            root: bool = True, env: dict[str, str] | None = None) -> None:
    """Run `script` with bash, etcdctl pointed at `server` (as root once auth is on)."""
    environ = {"PATH": os.environ["PATH"], "ETCDCTL_API": "3",
               "ETCDCTL_ENDPOINTS": server.endpoint, "ETCDCTL_CACERT": nameless.ca,
               "ETCDCTL_CERT": nameless.cert, "ETCDCTL_KEY": nameless.key, **(env or {})}
    if root:
        environ["ETCDCTL_USER"] = f"{ROOT.user}:{ROOT.password}"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=environ,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def etcd_server(tmp_path, pki, etcd_binary) -> Iterator[local_etcd.LocalEtcd]:
    """etcd with auth on, a root user, the documented roles and users, and one user more:
    `reader`, who may read all that the controller reads and write nothing."""
    require(shutil.which("etcdctl") is not None,
            "no etcdctl (Debian: etcd-client): the etcd authentication tests need it",
            "RRWATCH_REQUIRE_ETCD")
    [server] = local_etcd.start_cluster(str(tmp_path / "etcd"), pki, 1, binary=etcd_binary,
                                        extra_args=(f"--auth-token-ttl={TOKEN_TTL}",))
    try:
        etcdctl(server, pki.nameless, f"""
            etcdctl role add root
            printf '%s\\n' '{ROOT.password}' | etcdctl user add root --interactive=false
            etcdctl user grant-role root root
            etcdctl auth enable""", root=False)
        etcdctl(server, pki.nameless, documented_roles(), env={**PASSWORDS, "NODE": NODE})
        reads = [calico.NODES, calico.RESOURCES + "bgp", "/calico/bgp/v1/rr_v", PREFIX]
        etcdctl(server, pki.nameless, "\n".join([
            "etcdctl role add reader",
            *(f"etcdctl role grant-permission --prefix=true reader read {p}" for p in reads),
            "printf 'reader-pw\\n' | etcdctl user add reader --interactive=false",
            "etcdctl user grant-role reader reader",
            # The controller's grants but one: no writes to its BGPPeers.
            "etcdctl role add no-peers",
            f"etcdctl role grant-permission --prefix=true no-peers readwrite {calico.NODES}",
            f"etcdctl role grant-permission --prefix=true no-peers readwrite {PREFIX}",
            "printf 'no-peers-pw\\n' | etcdctl user add no-peers --interactive=false",
            "etcdctl user grant-role no-peers no-peers",
            "etcdctl user grant-role no-peers reader"]))
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls(pki) -> TlsFiles:
    return pki.nameless


@pytest.fixture
async def etcd(etcd_server, tls) -> Etcd:
    client = Etcd([etcd_server.endpoint], tls, auth=ROOT)
    yield client
    await client.close()


@pytest.fixture
def daemon_env(daemon_env) -> dict[str, str]:
    """The suite's (with the nameless certificate), logged in as the controller's user, the
    password in the environment as Calico's components take it."""
    return {**daemon_env, "ETCD_USERNAME": "rrwatch",
            "ETCD_PASSWORD": PASSWORDS["RRWATCH_PASSWORD"]}


def as_user(user: str, password: str, tmp_path) -> dict[str, str]:
    """The environment for another user, its password in a file (ETCD_PASSWORD empty: unset)."""
    path = tmp_path / f"{user}.password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return {"ETCD_USERNAME": user, "ETCD_PASSWORD": "",
            "RRWATCH_ETCD_PASSWORD_FILE": str(path)}


async def test_with_the_documented_roles_everything_works(etcd, start_daemon, daemon_env,
                                                         rrwatch, tmp_path):
    """Convergence; a second instance in RR host mode that registers its host under its lease;
    the policy object; a session report; and when the leader dies, the other takes over,
    fenced, and answers the next change. No password in any log."""
    await seed(etcd, per_zone=6)
    first = start_daemon()
    host_env = as_user("rrwatch-host", PASSWORDS["RRWATCH_HOST_PASSWORD"], tmp_path)
    second = start_daemon({**host_env, "RRWATCH_REGISTER_IP": HOST_IP})
    daemons = [first, second]
    with trio.fail_after(30):
        while (registration := await etcd.get(calico.RR_V4 + HOST_IP)) is None:
            await trio.sleep(0.1)
    assert registration.lease != 0  # on the instance's lease: it goes when the host does
    await settled(etcd, daemon_env)

    await simulate.put_all(etcd, {PREFIX + "policy": json.dumps({"max": 20}).encode()})
    await wait_until(lambda: any(d.metrics().get("rrwatch_policy_object") == 1 for d in daemons))

    with FakeBird({"10.0.0.1": ("Established", "12:00:00")}) as bird:
        reporter = start_daemon(as_user(
            f"rrwatch-report-{NODE}", PASSWORDS["REPORT_PASSWORD"], tmp_path),
            "--node", NODE, "--socket", bird.path, "--report-interval", "0.2",
            command="report")
        with trio.fail_after(30):
            while await etcd.get(PREFIX + "sessions/" + NODE) is None:
                await trio.sleep(0.1)
        assert reporter.proc.poll() is None

    await wait_until(lambda: any(d.leading() for d in daemons))
    leader, other = daemons if daemons[0].leading() else daemons[::-1]
    leader.signal(signal.SIGKILL)
    await trio.to_thread.run_sync(leader.proc.wait)
    with trio.fail_after(30):
        await other.wait_for_log("leading as")
    await simulate.put_all(etcd, simulate.nodes("b", range(6, 9)))
    _, data = await settled(etcd, daemon_env)
    assert {calico.NODES + f"node-b-{i:05d}" for i in range(6, 9)} <= data.keys()
    shown = [rrwatch("status").stdout, rrwatch("status", "--output", "json").stdout,
             *(str(other.samples()),)]
    for daemon in [*daemons, reporter]:
        assert "logged in to etcd as" in daemon.log()
        shown.append(daemon.log())
    assert not any(password in text for password in PASSWORDS.values() for text in shown)


async def test_changes_are_answered_across_token_expiries(etcd, start_daemon):
    """Keep-alives every 10 s and probes every 12 s leave the 5 s token to expire between
    requests: each expiry costs a login, and a change made after several is answered."""
    await seed(etcd, per_zone=4)
    daemon = start_daemon({"RRWATCH_LEASE_TTL": "30", "RRWATCH_PROBE_INTERVAL": "12"})
    await converged(etcd)
    await trio.sleep(5 * TOKEN_TTL)
    await simulate.put_all(etcd, simulate.nodes("c", range(4, 7)))
    await converged(etcd)
    assert daemon.log().count("logged in to etcd as 'rrwatch'") >= 2, daemon.log()
    assert daemon.leading() and "campaigning again" not in daemon.log()  # no gap


async def test_a_watch_opened_with_an_expired_token_is_reopened_with_a_new_one(etcd, tls,
                                                                             etcd_server):
    """An open watch survives its token's expiry; one opened with an expired token comes back
    cancelled, and the next opens with a new token and sees the change."""
    user = Etcd([etcd_server.endpoint], tls, auth=Credentials(
        "rrwatch", PASSWORDS["RRWATCH_PASSWORD"]), probe_key=PREFIX)
    try:
        revision = await user.probe()  # logs in
        await trio.sleep(TOKEN_TTL + 1)  # unused, the token expires
        async with user.watch(PREFIX, revision + 1) as stream:
            first = await stream.__anext__()
        assert isinstance(first, EtcdError) and first.code == Code.CANCELLED, first
        await etcd.txn([], [put(PREFIX + "x", b"1")])
        with trio.fail_after(10):
            async with user.watch(PREFIX, revision + 1) as stream:
                async for message in stream:
                    if not isinstance(message, EtcdError) and message.events:
                        break
        assert [event.key for event in message.events] == [PREFIX + "x"]
    finally:
        await user.close()


async def test_without_a_grant_check_names_it_and_the_daemon_says_so_once(
        etcd, start_daemon, rrwatch, tmp_path):
    """A user who may only read: `check` exits 77, naming each write it lacks; the daemon
    reads, logs once that it may not take the leader key, and keeps running."""
    reader = as_user("reader", "reader-pw", tmp_path)
    result = rrwatch("check", env=reader)
    assert result.returncode == 77, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert {line.split(" (")[0] for line in failed} == {
        f"FAIL permission: readwrite {prefix}" for prefix in (
            calico.NODES, calico.PEERS + calico.OWNED_PEER_PREFIX, PREFIX)}, failed
    assert rrwatch("check").returncode == 0  # the controller's role has them all
    wrong = rrwatch("check", env={"ETCD_PASSWORD": "not-the-password"})
    assert wrong.returncode == 77 and "etcd refused the login" in wrong.stdout, wrong.stdout
    assert "not-the-password" not in wrong.stdout + wrong.stderr

    await seed(etcd, per_zone=4)
    daemon = start_daemon(reader)
    denied = "etcd denies rrwatch's user the leader key /rrwatch/v1/leader"
    with trio.fail_after(30):
        await daemon.wait_for_log(denied)
    await trio.sleep(8)  # several retries later
    assert daemon.log().count(denied) == 1 and daemon.proc.poll() is None
    assert daemon.metrics().get("rrwatch_leader") == 0
    _, data = await read_cluster(etcd)
    assert mesh_problems(data)  # it wrote nothing
    daemon.stop()

    # Without the BGPPeer grant, a leader says once that it may not write its BGPPeers. Its
    # transactions write nodes and BGPPeers together, so etcd refuses them whole.
    leader = start_daemon(as_user("no-peers", "no-peers-pw", tmp_path))
    peers = f"etcd denies rrwatch's user writes to {calico.PEERS}"
    with trio.fail_after(30):
        await leader.wait_for_log(peers)
    await trio.sleep(8)
    assert leader.log().count(peers) == 1 and leader.proc.poll() is None
    assert leader.leading()
    _, data = await read_cluster(etcd)
    assert not rr_names(data)


async def test_a_client_certificate_with_a_common_name_is_one_line(rrwatch, pki):
    """Not a retry loop: `check` and `run` stop at once, exit 78, and say what to do."""
    named = {"ETCD_CERT_FILE": pki.client.cert, "ETCD_KEY_FILE": pki.client.key}
    result = rrwatch("check", env=named)
    assert result.returncode == 78, result.stdout + result.stderr
    assert "has a CommonName (rrwatch)" in result.stdout
    run = rrwatch("run", env=named)
    assert run.returncode == 78, run.stderr
    [line] = run.stderr.splitlines()[-1:]
    assert "refuses a client certificate with a CommonName" in line
    assert "Traceback" not in run.stderr

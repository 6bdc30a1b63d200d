"""Real etcd processes on loopback, with mutual TLS, for the test suite and ``rrwatch demo``.

Plain blocking code (subprocess and requests): it runs in test fixtures and before the demo's
trio loop starts, never inside it.  Every process started here is killed at interpreter exit
if nobody stopped it, so a failing test run does not leave etcd servers behind; the exit hook
is registered by the first start, not at import.  Which binary runs and which ports are free
come from :mod:`rrwatch.testing.machine`, re-exported here.
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import signal
import subprocess
import time
import uuid
from typing import Any

import attrs
import requests

from rrwatch.testing.machine import etcd_binary, etcd_version, free_port, free_ports
from rrwatch.testing.pki import Pki
from rrwatch.tls import session as tls_session

__all__ = ["LocalEtcd", "etcd_binary", "etcd_version", "free_port", "start_cluster"]

log = logging.getLogger("rrwatch.local_etcd")

REQUEST_TIMEOUT = 5.0
_POLL_INTERVAL = 0.05

# Processes started by this module and not yet reaped: killed at exit (see _kill_leftovers).
_running: set[subprocess.Popen[bytes]] = set()
# The exit hook is registered on the first start, so that importing this module does nothing.
_hook_registered = False


def _track(proc: subprocess.Popen[bytes]) -> None:
    global _hook_registered
    if not _hook_registered:
        atexit.register(_kill_leftovers)
        _hook_registered = True
    _running.add(proc)


def _kill_leftovers() -> None:
    # SIGKILL also ends a SIGSTOPped process, so paused members cannot survive us either.
    for proc in list(_running):
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        _running.discard(proc)


def _etcd_env() -> dict[str, str]:
    # etcd reads any ETCD_* variable as a flag and refuses to start when one duplicates a
    # command-line flag; ours must be the only configuration.
    return {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}


def _new_cluster_token() -> str:
    return f"rrwatch-{uuid.uuid4().hex[:12]}"


def _default_log_path(member: LocalEtcd) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(member.data_dir)), f"{member.name}.log")


@attrs.define
class LocalEtcd:
    """One etcd member on 127.0.0.1 with mutual TLS for clients and peers.

    ``pki.server`` serves as both the client-facing and the peer certificate; clients must
    present a certificate signed by ``pki.ca``.  The server certificate needs the clientAuth
    usage too, and not only for peers: etcd's HTTP/JSON gateway (/v3/...) dials etcd's own gRPC
    port presenting that certificate, and without clientAuth every /v3 call fails with HTTP 503
    ("bad certificate") while /health still says healthy.
    """

    name: str
    data_dir: str
    pki: Pki
    client_port: int
    peer_port: int
    initial_cluster: str
    binary: str
    cluster_state: str = "new"
    cluster_token: str = attrs.field(factory=_new_cluster_token)
    extra_args: tuple[str, ...] = ()  # such as --auth-token-ttl
    log_path: str = attrs.field(default=attrs.Factory(_default_log_path, takes_self=True))
    proc: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False, repr=False)
    paused: bool = attrs.field(default=False, init=False)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        """True while the process exists (paused or not)."""
        return self.proc is not None and self.proc.poll() is None

    def args(self) -> list[str]:
        """The etcd command line; every flag here is accepted by both etcd 3.4 and 3.5."""
        server = self.pki.server
        return [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.endpoint}",
            f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-state={self.cluster_state}",
            f"--initial-cluster-token={self.cluster_token}",
            f"--cert-file={server.cert}",
            f"--key-file={server.key}",
            f"--trusted-ca-file={self.pki.ca}",
            "--client-cert-auth=true",
            f"--peer-cert-file={server.cert}",
            f"--peer-key-file={server.key}",
            f"--peer-trusted-ca-file={self.pki.ca}",
            "--peer-client-cert-auth=true",
            # Fast elections: start-up ~0.1 s instead of ~0.5 s, restart ~0.2 s instead of ~1.2 s.
            "--heartbeat-interval=10",
            "--election-timeout=100",
            # The default is 10 minutes; tests want progress notifications on watches promptly.
            "--experimental-watch-progress-notify-interval=1s",
            # 3.4 defaults to the deprecated capnslog logger; zap works in both.
            "--logger=zap",
            "--log-level=warn",
            *self.extra_args,
        ]

    def start(self, *, wait: bool = True, timeout: float = 15.0) -> None:
        """Launch etcd; with ``wait``, return only once it answers /health over mTLS."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"etcd {self.name} is already running (pid {self.proc.pid})")
        os.makedirs(os.path.dirname(os.path.abspath(self.data_dir)), exist_ok=True)
        # Append, so that a restart keeps the log of the previous run for post-mortems.
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                self.args(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=_etcd_env(),
                # Own session: a Ctrl-C in the terminal goes to us, not straight to etcd, so the
                # demo can shut down in order.
                start_new_session=True,
            )
        _track(self.proc)
        self.paused = False
        log.debug("started etcd %s pid %d on %s", self.name, self.proc.pid, self.endpoint)
        if wait:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.kill()
                raise

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Poll /health until the member reports healthy (it has a leader and serves reads)."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        with tls_session(self.pki.client) as session:
            while True:
                self._check_alive()
                try:
                    resp = session.get(self.endpoint + "/health", timeout=1.0)
                    if resp.status_code == 200 and resp.json().get("health") == "true":
                        return
                    last_error = f"HTTP {resp.status_code}: {resp.text.strip()}"
                except (requests.RequestException, ValueError) as exc:
                    last_error = repr(exc)
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"etcd {self.name} not ready after {timeout} s ({last_error}); "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(_POLL_INTERVAL)

    def wait_peer_serving(self, timeout: float = 15.0) -> None:
        """Wait until the member answers on its peer port (any HTTP reply will do)."""
        deadline = time.monotonic() + timeout
        with tls_session(self.pki.client) as session:
            while True:
                self._check_alive()
                try:
                    # Connection: close, because a keep-alive connection left on the peer port
                    # makes a later SIGTERM of a lone member take 1 s instead of 10 ms.
                    session.get(
                        self.peer_url + "/members", timeout=1.0, headers={"Connection": "close"}
                    )
                    return
                except requests.RequestException as exc:
                    if time.monotonic() >= deadline:
                        raise RuntimeError(
                            f"etcd {self.name} not serving peers after {timeout} s ({exc!r}); "
                            f"log {self.log_path}:\n{self.log_tail()}"
                        ) from exc
                time.sleep(_POLL_INTERVAL / 5)

    def _check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = self.proc.returncode if self.proc is not None else None
            raise RuntimeError(
                f"etcd {self.name} exited (status {code}) during start-up; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit in ``timeout`` s.  Idempotent.

        In a multi-member cluster this takes ~1 s while other members are still up: etcd gives
        its peer listener 1 s to drain, and peers' raft streams never go idle.
        """
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            if self.paused:
                # A stopped process only acts on SIGTERM once it runs again.
                proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("etcd %s ignored SIGTERM for %s s; killing it", self.name, timeout)
                proc.kill()
                proc.wait()
        self._reaped(proc)

    def kill(self) -> None:
        """SIGKILL and wait, like a crash (or a power cut for everything not yet fsynced)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._reaped(proc)

    def _reaped(self, proc: subprocess.Popen[bytes]) -> None:
        _running.discard(proc)
        self.paused = False
        log.debug("etcd %s exited with status %s", self.name, proc.returncode)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections stay open but nothing is answered."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self.paused = False

    def _signal(self, signum: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"etcd {self.name} is not running")
        self.proc.send_signal(signum)

    def restart(self, **start_kw: Any) -> None:
        """Stop (kill, if paused) and start again on the same data dir and ports.

        The initial-cluster flags are ignored by etcd once the data dir holds a member, so
        ``cluster_state="new"`` is harmless here.
        """
        if self.paused:
            self.kill()
        else:
            self.stop()
        self.start(**start_kw)

    def compact(self, revision: int) -> None:
        """Compact the keyspace up to ``revision``, waiting until it is applied to the backend."""
        self._post("kv/compaction", {"revision": revision, "physical": True})

    def revision(self) -> int:
        """The member's current store revision (header.revision)."""
        # A count-only range on a key nobody uses: the answer is just a header.
        key = base64.b64encode(b"\0").decode()
        reply = self._post("kv/range", {"key": key, "count_only": True})
        return int(reply["header"]["revision"])

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with tls_session(self.pki.client) as session:
            resp = session.post(f"{self.endpoint}/v3/{path}", json=body, timeout=REQUEST_TIMEOUT)
        if resp.status_code != 200:
            # The gateway's error text ("mvcc: required revision has been compacted") is the
            # useful part; raise_for_status would drop it.
            raise requests.HTTPError(
                f"etcd {self.name} /v3/{path}: HTTP {resp.status_code}: {resp.text.strip()}",
                response=resp,
            )
        result: dict[str, Any] = resp.json()
        return result

    def log_tail(self, size: int = 4000) -> str:
        """The last ``size`` bytes of etcd's log, for error messages."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - size))
                return f.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(cannot read log: {exc})"


def start_cluster(
    base_dir: str,
    pki: Pki,
    size: int = 1,
    *,
    binary: str | None = None,
    timeout: float = 15.0,
    extra_args: tuple[str, ...] = (),
) -> list[LocalEtcd]:
    """Start ``size`` members (raft over TLS on loopback) under ``base_dir`` and wait for all.

    Data dirs are ``base_dir/<name>``, logs ``base_dir/<name>.log``.  If any member fails to
    come up, every member started here is killed before the error propagates.
    """
    if size < 1:
        raise ValueError(f"cluster size must be at least 1, not {size}")
    binary = binary if binary is not None else etcd_binary()
    os.makedirs(base_dir, exist_ok=True)
    names = [f"etcd{i}" for i in range(size)]
    ports = free_ports(2 * size)
    client_ports, peer_ports = ports[:size], ports[size:]
    initial_cluster = ",".join(
        f"{name}=https://127.0.0.1:{port}" for name, port in zip(names, peer_ports, strict=True)
    )
    token = _new_cluster_token()  # keeps members of concurrently started clusters apart
    members = [
        LocalEtcd(
            name=name,
            data_dir=os.path.join(base_dir, name),
            pki=pki,
            client_port=client_port,
            peer_port=peer_port,
            initial_cluster=initial_cluster,
            binary=binary,
            cluster_token=token,
            extra_args=extra_args,
        )
        for name, client_port, peer_port in zip(names, client_ports, peer_ports, strict=True)
    ]
    try:
        # A new member first asks each peer whether it already belongs to the cluster (1 s
        # timeout per peer).  A peer whose port is bound but not yet served makes that request
        # hang, so launching all at once costs 0-2 s at random.  Launched one by one, each
        # member finds its predecessors serving and its successors refusing: ~0.1 s in total.
        # Health must wait until all are launched: it needs a quorum.
        for member in members:
            member.start(wait=False)
            member.wait_peer_serving(timeout)
        for member in members:
            member.wait_ready(timeout)
    except BaseException:
        for member in members:
            member.kill()
        raise
    return members

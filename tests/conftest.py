"""Fixtures: a real etcd on loopback with mutual TLS, and the real daemon as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping

import attrs
import pytest
import trio

from rrwatch import local_etcd
from rrwatch import pki as pki_mod
from rrwatch.etcd import Etcd
from rrwatch.tls import TlsFiles

# The daemon's settle time in tests: long enough to order promotions before demotions,
# short enough to keep the suite quick.
SETTLE = 0.5


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> pki_mod.Pki:
    return pki_mod.make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def etcd_server(tmp_path, pki) -> Iterator[local_etcd.LocalEtcd]:
    [server] = local_etcd.start_cluster(str(tmp_path / "etcd"), pki, 1)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls(pki) -> TlsFiles:
    return TlsFiles(pki.client.ca, pki.client.cert, pki.client.key)


@pytest.fixture
async def etcd(etcd_server, tls) -> Etcd:
    client = Etcd([etcd_server.endpoint], tls)
    yield client
    await client.close()


@attrs.define
class DaemonProcess:
    """`rrwatch run` in a subprocess, its log in a file."""

    proc: subprocess.Popen
    log_path: str

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    async def wait_for_log(self, text: str) -> None:
        while text not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.log()}")
            await trio.sleep(0.05)


@pytest.fixture
def daemon_env(etcd_server, tls) -> dict[str, str]:
    return {
        "ETCD_ENDPOINTS": etcd_server.endpoint,
        "ETCD_CA_CERT_FILE": tls.ca,
        "ETCD_CERT_FILE": tls.cert,
        "ETCD_KEY_FILE": tls.key,
        "ROUTE_REFLECTOR_ZONE_LABEL": "topology.kubernetes.io/zone",
        "RRWATCH_SETTLE": str(SETTLE),
    }


def _environment(daemon_env: Mapping[str, str], env: Mapping[str, str] | None) -> dict[str, str]:
    """The test's environment without any rrwatch setting, then the given ones."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("ETCD_", "ROUTE_REFLECTOR_", "RRWATCH_"))}
    return {**clean, **daemon_env, **(env or {})}


@pytest.fixture
def rrwatch(daemon_env) -> Callable[..., subprocess.CompletedProcess]:
    """Run a one-shot `rrwatch` command against the test etcd; its exit status and output."""

    def run(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rrwatch", *args],
                              env=_environment(daemon_env, env), capture_output=True, text=True,
                              timeout=120, check=False)

    return run


@pytest.fixture
def start_daemon(tmp_path, daemon_env) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(env: Mapping[str, str] | None = None, *args: str) -> DaemonProcess:
        log_path = str(tmp_path / f"daemon-{len(started)}.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rrwatch", "run", *args],
                env=_environment(daemon_env, env),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        daemon = DaemonProcess(proc, log_path)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()

"""Fixtures: a real etcd on loopback with mutual TLS, and the real daemon as a subprocess; and
at the end of a run, the skips summed up by reason."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping

import attrs
import pytest
import trio
from hypothesis import settings
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from rrwatch.etcd import Etcd
from rrwatch.testing import local_etcd
from rrwatch.testing import pki as pki_mod
from rrwatch.tls import TlsFiles
from tests import support

# No per-example deadline: hypothesis's default (200 ms) is a timing assertion, and fails
# examples on a loaded machine that pass on an idle one.
settings.register_profile("rrwatch", deadline=None)
settings.load_profile("rrwatch")

# The daemon's settle time in tests: long enough to order promotions before demotions,
# short enough to keep the suite quick.
SETTLE = 0.5


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> pki_mod.Pki:
    return pki_mod.make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="session")
def etcd_binary() -> str:
    """The etcd to run; without one, every test that needs etcd is skipped, saying how to get it."""
    return support.etcd_binary()


# The parts some tests need besides etcd. Fixtures, not calls in the test: pytest-trio re-raises
# a skip from inside an async test without its reason.

@pytest.fixture
def bird() -> None:
    """BIRD 2's `bird` on PATH; else a skip, or a failure under RRWATCH_REQUIRE_BGP."""
    support.need_bird()


@pytest.fixture
def graphviz() -> None:
    """Graphviz's `dot` on PATH; else a skip, or a failure under RRWATCH_REQUIRE_GRAPHVIZ."""
    support.need_graphviz()


@pytest.fixture
def promtool() -> None:
    """Prometheus's `promtool` on PATH; else a skip, or a failure under RRWATCH_REQUIRE_PROMTOOL."""
    support.need_promtool()


@pytest.fixture
def etcd_server(tmp_path, pki, etcd_binary) -> Iterator[local_etcd.LocalEtcd]:
    [server] = local_etcd.start_cluster(str(tmp_path / "etcd"), pki, 1, binary=etcd_binary)
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


@pytest.fixture
def etcd_cluster(tmp_path, pki, etcd_binary) -> Iterator[list[local_etcd.LocalEtcd]]:
    """Three members on loopback."""
    members = local_etcd.start_cluster(str(tmp_path / "cluster"), pki, 3, binary=etcd_binary)
    try:
        yield members
    finally:
        for member in members:
            member.stop()


@attrs.define
class DaemonProcess:
    """`rrwatch run` in a subprocess, its log in a file, its metrics on a local port."""

    proc: subprocess.Popen
    log_path: str
    metrics_port: int

    def metrics(self) -> dict[str, float]:
        """The daemon's metrics now, by sample name; {} while it cannot answer."""
        return {sample.name: sample.value for sample in self.samples()}

    def samples(self) -> list[Sample]:
        """The daemon's metric samples now, with their labels; [] while it cannot answer."""
        return [sample for family in text_string_to_metric_families(self.exposition())
                for sample in family.samples]

    def exposition(self) -> str:
        """A scrape as the daemon serves it; "" while it cannot answer."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            return ""

    def leading(self) -> bool:
        return self.metrics().get("rrwatch_leader") == 1

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
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

    def start(env: Mapping[str, str] | None = None, *args: str, command: str = "run"
              ) -> DaemonProcess:
        log_path = str(tmp_path / f"daemon-{len(started)}.log")
        port = local_etcd.free_port()
        metrics = {"RRWATCH_METRICS_ADDRESS": f"127.0.0.1:{port}"}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rrwatch", command, *args],
                env=_environment(daemon_env, {**metrics, **(env or {})}),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        daemon = DaemonProcess(proc, log_path, port)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
    for daemon in started:  # whatever a test did to it, a daemon never dies of a traceback
        assert "Traceback" not in daemon.log(), daemon.log()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """After pytest's own summary, the skips summed up by reason, one line each: what this
    machine could not test, and how to get the part it lacks."""
    yield
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.write_sep("=", "skips by reason")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"skipped: {count} × {reason}")

"""A process under measurement: `rrwatch run` or the baseline, its log read as it grows, and its
resident memory, CPU time and bytes read taken from /proc."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import attrs
import trio

# What the reconciler logs at debug level after every plan, and at info level for every
# transaction that wrote.
PLANNED = re.compile(r"planned at revision (\d+) in [\d.]+ ms: (\d+) to make, (\d+) to break")
WROTE = re.compile(r"\(revision (\d+)\)$")
_TICK = os.sysconf("SC_CLK_TCK")


@attrs.frozen
class PlanLine:
    time: float  # wall clock, from the log
    revision: int  # the newest revision the model held
    ops: int


class Process:
    """A child process whose stdout and stderr go to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: str) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.started = time.time()
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self._offset = 0
        self._partial = b""

    def new_lines(self) -> list[bytes]:
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        return complete

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            with open(self.log_path, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace")
            sys.exit(f"{' '.join(self.proc.args[1:4])} exited with {self.proc.returncode}:\n"
                     f"{tail}")

    def _proc(self, name: str) -> str:
        with open(f"/proc/{self.proc.pid}/{name}") as f:
            return f.read()

    def rss(self) -> int:
        """Resident set size in bytes."""
        for line in self._proc("status").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu(self) -> float:
        """User and system CPU seconds so far."""
        fields = self._proc("stat").rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK

    def bytes_read(self) -> int:
        """Bytes the process has read from sockets and files (rchar): for this process, its
        TLS traffic from etcd."""
        for line in self._proc("io").splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
        raise RuntimeError("no rchar")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Rrwatch(Process):
    """`rrwatch run -v --log-format json`, its plans and writes read from its log."""

    def __init__(self, env: dict[str, str], log_path: str, metrics_port: int) -> None:
        env = {**env, "RRWATCH_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"}
        super().__init__([sys.executable, "-m", "rrwatch", "run", "-v", "--log-format", "json"],
                         env, log_path)
        self._metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        self.plans: list[PlanLine] = []
        self.writes: list[tuple[float, int]] = []  # (time, revision) of each transaction
        self.in_sync: float | None = None  # when it logged being in sync with etcd

    def poll(self) -> None:
        for line in self.new_lines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            message = entry["message"]
            when = datetime.datetime.fromisoformat(entry["time"]).timestamp()
            if message.startswith("in sync with"):
                self.in_sync = when
            elif entry["logger"] != "rrwatch.reconcile":
                continue
            elif m := PLANNED.match(message):
                self.plans.append(PlanLine(when, int(m[1]), int(m[2]) + int(m[3])))
            elif entry["level"] == "INFO" and (m := WROTE.search(message)):
                self.writes.append((when, int(m[1])))

    async def wait_in_sync(self) -> None:
        while self.in_sync is None:
            self.check_alive()
            await trio.sleep(0.01)
            self.poll()

    async def settled(self, revision: int) -> float:
        """When the daemon first planned from a model holding `revision` and found nothing to
        write (the log's time)."""
        checked = 0
        while True:
            self.poll()
            for plan in self.plans[checked:]:
                if plan.revision >= revision and not plan.ops:
                    return plan.time
            checked = len(self.plans)
            self.check_alive()
            await trio.sleep(0.002)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self._metrics, timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise KeyError(name)


class Baseline(Process):
    """bench/baseline.py (run from the project root): prints `<revision> <writes>` per event."""

    def __init__(self, env: dict[str, str], log_path: str) -> None:
        super().__init__([sys.executable, "-m", "bench.baseline"], env, log_path)
        self.handled: list[int] = []
        self.ready = False

    async def wait_ready(self) -> None:
        while not self.ready:
            self.check_alive()
            await trio.sleep(0.01)
            self._poll()

    async def handled_after(self, revision: int) -> None:
        while not any(r >= revision for r in self.handled):
            self.check_alive()
            await trio.sleep(0.002)
            self._poll()

    def _poll(self) -> None:
        for line in self.new_lines():
            if line == b"ready":
                self.ready = True
            elif line[:1].isdigit():
                self.handled.append(int(line.split()[0]))

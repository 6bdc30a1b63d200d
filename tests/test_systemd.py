"""The systemd unit, its hardening drop-in and the example environment file."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rrwatch.config import OPTIONS
from rrwatch.errors import ExitStatus
from tests.support import need_systemd_analyze

SYSTEMD = Path(__file__).parent.parent / "systemd"
HARDENING = (SYSTEMD / "rrwatch.service.d" / "hardening.conf").read_text()


def systemd_analyze() -> str:
    """The binary; CI sets RRWATCH_REQUIRE_SYSTEMD so that a missing one fails, not skips."""
    return need_systemd_analyze()


def rrwatch_executable(tmp_path: Path) -> str:
    """An executable for ExecStart: the installed console script, or a stand-in."""
    beside = Path(sys.executable).parent / "rrwatch"
    if os.access(beside, os.X_OK):
        return str(beside)
    if found := shutil.which("rrwatch"):
        return found
    stand_in = tmp_path / "bin" / "rrwatch"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    return str(stand_in)


def install(tmp_path: Path, *, drop_in: str | None, name: str = "rrwatch.service",
            command: str = "run") -> Path:
    """Copy the unit (and drop-in text, if any) into a directory of its own and return the unit.

    verify insists that ExecStart's binary exists, so only ExecStart's path is rewritten, to a
    real executable; everything else is verified as shipped.
    """
    directory = tmp_path / "units"
    directory.mkdir()
    text = (SYSTEMD / name).read_text()
    shipped = f"ExecStart=/usr/local/bin/rrwatch {command}"
    assert text.count(shipped) == 1
    unit = directory / name
    unit.write_text(text.replace(shipped, f"ExecStart={rrwatch_executable(tmp_path)} {command}"))
    if drop_in is not None:
        # verify reads drop-ins from <unit>.d beside the unit it is given.
        (directory / f"{name}.d").mkdir()
        (directory / f"{name}.d" / "hardening.conf").write_text(drop_in)
    return unit


def verify(unit: Path) -> tuple[int, list[str]]:
    """Exit status and the output lines about our files (the rest is the host's business)."""
    done = subprocess.run(
        [systemd_analyze(), "verify", str(unit)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
             "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_LOG_LEVEL": "info"},
        capture_output=True, text=True, timeout=60,
    )
    lines = (done.stdout + done.stderr).splitlines()
    return done.returncode, [line for line in lines if "rrwatch" in line]


def test_unit_verifies(tmp_path):
    """systemd-analyze verify accepts the unit alone, without a word about it."""
    assert verify(install(tmp_path, drop_in=None)) == (0, [])


def test_report_unit_verifies(tmp_path):
    """The unit of `rrwatch report` too, with its own sandboxing."""
    assert verify(install(tmp_path, drop_in=None, name="rrwatch-report.service",
                          command="report")) == (0, [])


def test_unit_with_hardening_verifies(tmp_path):
    """systemd-analyze verify accepts the unit with the hardening drop-in, without a word."""
    assert verify(install(tmp_path, drop_in=HARDENING)) == (0, [])


def test_verify_reads_the_drop_in(tmp_path):
    """A broken line in the drop-in fails verify: the test above really checked the drop-in."""
    broken = HARDENING + "ExecStartPre=/nonexistent/rrwatch-proof\n"
    status, lines = verify(install(tmp_path, drop_in=broken))
    assert status != 0
    assert any("/nonexistent/rrwatch-proof" in line for line in lines)


@pytest.mark.parametrize("name", ["rrwatch.service", "rrwatch-report.service"])
def test_config_errors_are_not_restarted(name):
    """The units' RestartPreventExitStatus is the status configuration problems exit with."""
    unit = (SYSTEMD / name).read_text()
    assert re.findall(r"^RestartPreventExitStatus=(.*)$", unit, re.M) == [str(ExitStatus.CONFIG)]


def test_example_environment_names_only_known_settings():
    """Every assignment in rrwatch.env, commented out or not, is KEY=VALUE of a known name."""
    known = {env for option in OPTIONS for env in option.env} | {"RRWATCH_CONFIG"}
    names = []
    for line in (SYSTEMD / "rrwatch.env").read_text().splitlines():
        line = re.sub(r"^#\s?(?=[A-Z][A-Z0-9_]*=)", "", line.strip())
        if not line or line.startswith("#"):
            continue
        [word] = shlex.split(line)  # one shell word: quoting is right
        name, equals, _ = word.partition("=")
        assert equals and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), line
        names.append(name)
    assert set(names) <= known, set(names) - known
    assert len(names) == len(set(names))
    assert {"ETCD_ENDPOINTS", "ETCD_KEY_FILE", "RRWATCH_CONFIG"} <= set(names)

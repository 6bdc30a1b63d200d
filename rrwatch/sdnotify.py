"""sd_notify(3) without libsystemd: readiness, status, reload and watchdog for Type=notify.

Notification is advice to the service manager, so it must never crash or block the daemon:
datagrams are sent non-blocking, and a failure is logged once and otherwise ignored.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("rrwatch.notify")


class Notifier:
    """Talks to the socket in NOTIFY_SOCKET; without one every method is a cheap no-op."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self._watchdog_usec = watchdog_usec
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """Read, never unset, the variables: the daemon may read them again on reload."""
        usec = environ.get("WATCHDOG_USEC", "").strip()
        pid = environ.get("WATCHDOG_PID", "").strip()
        # The watchdog belongs to one process: a child that inherited the variables must not
        # believe it has to feed it.
        mine = not pid or pid == str(os.getpid())
        watchdog = int(usec) if mine and usec.isdigit() and int(usec) > 0 else None
        return cls(environ.get("NOTIFY_SOCKET") or None, watchdog)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half the timeout, as sd_watchdog_enabled(3) advises."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 2e6

    def send(self, *fields: str) -> None:
        """Send one datagram of KEY=VALUE lines."""
        if not self.address or not fields:
            return
        # A leading @ names the abstract namespace, which the kernel spells with a NUL byte.
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        try:
            with socket.socket(socket.AF_UNIX, kind) as sock:
                sock.sendto("\n".join(fields).encode(), target)
        except OSError as e:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "cannot notify the service manager at %s: %s", self.address, e)

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([] if status is None else [_status(status)]))

    def status(self, text: str) -> None:
        self.send(_status(text))

    def reloading(self) -> None:
        # systemd >= 253 wants the reload's start time, to tell this reload from an earlier one.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        """Ping the watchdog; like sd_notify, sent whether or not one is configured."""
        self.send("WATCHDOG=1")


def _status(text: str) -> str:
    # A newline would start another field of the datagram.
    return "STATUS=" + " ".join(text.splitlines())

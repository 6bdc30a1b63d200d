"""Takes up rotated TLS files without a restart, and without giving up leadership.

The files are looked at every few seconds (and at once on SIGHUP). A change must hold still for
a moment, since tools write the certificate and the key one after the other; then the new files
are checked like at start, and only if they pass does the etcd client make its new connections
with them. Leases, watch streams and requests in flight keep the connections they have. New
files that fail a check are logged, one line per problem, and the material in use stays.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl

import attrs
import trio

from rrwatch import certs
from rrwatch.etcd import Etcd
from rrwatch.tls import TlsFiles, context

log = logging.getLogger(__name__)

POLL = 5.0  # seconds between looks at the files
STILL = 1.0  # seconds a change must hold before it is read


@attrs.define
class TlsStats:
    reloads: int = 0  # new files taken up
    rejected: int = 0  # new files that failed a check, so the old ones stayed


def _look(files: TlsFiles) -> tuple[object, ...]:
    """What changes when a file is replaced or rewritten."""
    out: list[object] = []
    for path in files.paths:
        try:
            st = os.stat(path)
        except OSError as e:
            out.append(e.errno)
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class TlsKeeper:
    def __init__(self, etcd: Etcd, files: TlsFiles) -> None:
        self._etcd = etcd
        self.files = files
        self.stats = TlsStats()
        self._seen = _look(files)
        report = certs.check(files)  # config.load checked them a moment ago: this is for dates
        self.not_after = report.not_after
        self._warn(report)

    def days_left(self) -> float | None:
        """Days until the certificate in use expires."""
        if self.not_after is None:
            return None
        return (self.not_after - datetime.datetime.now(datetime.UTC)).total_seconds() / 86400

    async def run(self) -> None:
        while True:
            await trio.sleep(POLL)
            if _look(self.files) != self._seen:
                await self.reload("the files changed")

    async def reload(self, why: str) -> bool:
        """Check the files as they are now and take them up if they pass; whether they did."""
        seen = _look(self.files)
        while True:
            await trio.sleep(STILL)
            now = _look(self.files)
            if now == seen:
                break
            seen = now
        self._seen = seen
        report, tls, problems = await trio.to_thread.run_sync(_load, self.files)
        if tls is None:
            self.stats.rejected += 1
            for problem in problems:
                log.error("TLS (%s): %s; keeping the certificate in use", why, problem)
            return False
        self._etcd.use_tls(tls)
        self.not_after = report.not_after
        self.stats.reloads += 1
        log.info("TLS (%s): took up %s, valid until %s", why, self.files.cert,
                 f"{report.not_after:%Y-%m-%d %H:%M} UTC")
        self._warn(report)
        return True

    def _warn(self, report: certs.CertReport) -> None:
        for warning in report.warnings:
            log.warning("TLS: %s", warning)


def _load(files: TlsFiles) -> tuple[certs.CertReport, ssl.SSLContext | None, list[str]]:
    report = certs.check(files)
    if report.problems:
        return report, None, list(report.problems)
    try:
        return report, context(files), []
    except (OSError, ssl.SSLError) as e:  # changed again between the check and the load
        return report, None, [f"{files.cert}: {e}"]

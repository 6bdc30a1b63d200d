"""Takes up rotated TLS files without a restart, and without giving up leadership.

The files are looked at every few seconds (and at once on SIGHUP). A change must hold still for
a moment, since tools write the certificate and the key one after the other; then the new files
are checked like at start, and only if they pass does the etcd client make its new connections
with them. Leases, watch streams and requests in flight keep the connections they have. New
files that fail a check are logged in one line, and the material in use stays.
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
from rrwatch.tls import TlsFiles, context, shown

log = logging.getLogger("rrwatch.rotation")

POLL = 5.0  # seconds between looks at the files
STILL = 1.0  # seconds a change must hold before it is read
STILL_TRIES = 10  # looks for stillness before the files are read anyway: a file rewritten
# without end must not hold up a reload, nor the signals handled after it


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
    """Every read of the files runs in a worker thread, through `tls.read_regular`: a file
    replaced by a FIFO or a device is refused without blocking the event loop."""

    def __init__(self, etcd: Etcd, files: TlsFiles) -> None:
        self._etcd = etcd
        self.files = files
        self.stats = TlsStats()
        self._seen = _look(files)  # a stat, not a read: what Etcd's context was made from
        self.not_after: datetime.datetime | None = None  # known once `run` has read the files

    async def run(self) -> None:
        # config.load checked the files a moment ago: this is for the dates and the warnings.
        report = await trio.to_thread.run_sync(certs.check, self.files, abandon_on_cancel=True)
        if self.not_after is None:  # (unless a SIGHUP took files up meanwhile)
            self.not_after = report.not_after
            self._warn(report)
        while True:
            await trio.sleep(POLL)
            if await _looked(self.files) != self._seen:
                why = "the files changed"
                if (problem := await self.reload(why)) is not None:
                    log.error("TLS (%s): %s; keeping the certificate in use", why, problem)

    async def reload(self, why: str, files: TlsFiles | None = None) -> str | None:
        """Check `files` (by default the files in use) as they are now and take them up if they
        pass: None if they did, else why not in one line, for the caller to log. Files that
        fail change nothing."""
        files = files or self.files
        seen = await _looked(files)
        for _ in range(STILL_TRIES):
            await trio.sleep(STILL)
            now = await _looked(files)
            if now == seen:
                break
            seen = now
        if files == self.files:
            self._seen = seen  # a failure is not retried until the files change again
        report, tls, problems = await trio.to_thread.run_sync(_load, files,
                                                              abandon_on_cancel=True)
        if tls is None:
            self.stats.rejected += 1
            return "; ".join(problems)
        self._etcd.use_tls(tls)
        self.files, self._seen = files, seen
        self.not_after = report.not_after
        self.stats.reloads += 1
        log.info("TLS (%s): took up %s, valid until %s", why, shown(files.cert),
                 f"{report.not_after:%Y-%m-%d %H:%M} UTC")
        self._warn(report)
        return None

    def _warn(self, report: certs.CertReport) -> None:
        for warning in report.warnings:
            log.warning("TLS: %s", warning)


async def _looked(files: TlsFiles) -> tuple[object, ...]:
    return await trio.to_thread.run_sync(_look, files, abandon_on_cancel=True)


def _load(files: TlsFiles) -> tuple[certs.CertReport, ssl.SSLContext | None, list[str]]:
    report = certs.check(files)
    if report.problems:
        return report, None, list(report.problems)
    try:
        return report, context(files), []
    except (OSError, ssl.SSLError) as e:  # changed again between the check and the load
        return report, None, [f"{shown(files.cert)}: {e}"]

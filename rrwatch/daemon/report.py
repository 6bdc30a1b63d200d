"""`rrwatch report`: a speaker's BGP sessions, read from its BIRD, kept in etcd for the leader.

The leader lets no BGP session go until the sessions that replace it are Established, and it
learns that from these reports. The RRs report, not the clients: an RR's BIRD sees every session
with its clients, so the reporters grow with the RRs, not with the nodes. Every node that may
become an RR runs one (calico-node's BIRD 1.6 sockets by default); an RR host's `rrwatch run`
reports its own BIRD 2 the same way.

A report lives on the reporter's own lease, so a reporter that dies takes its report with it and
the leader knows it no longer knows. It is written only when it changes. Reading BIRD costs one
`show protocols all` per socket per interval, whatever the number of sessions.
"""

from __future__ import annotations

import datetime
import logging
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence

import attrs
import trio

from rrwatch.config import Config
from rrwatch.config.values import node_name
from rrwatch.core.bird_protocols import BgpSession, bgp_sessions, since_time
from rrwatch.core.reports import Report, Session, dumps
from rrwatch.daemon import election
from rrwatch.errors import ExitStatus
from rrwatch.etcd import Etcd, EtcdError, denials, put
from rrwatch.host.birdc import BirdError, ask
from rrwatch.retry import Backoff, forever, until_ok

log = logging.getLogger("rrwatch.report")

# A state whose BIRD time moves on by more than this went down and up again between two reads.
_FLAP = datetime.timedelta(seconds=2)


class Reader:
    """Reads BIRD's sessions from its control sockets, and keeps each session's `since` steady
    while its state holds: BIRD writes a time of day, then only a date, for the same moment."""

    def __init__(self, sockets: Sequence[str],
                 now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now().astimezone()
                 ) -> None:
        self.sockets = tuple(sockets)
        self._now = now
        self._seen: dict[str, tuple[str, datetime.datetime]] = {}  # neighbour -> state, since

    async def read(self) -> Report:
        found: list[BgpSession] = []
        unreachable = {}
        for path in self.sockets:
            try:
                reply = await trio.to_thread.run_sync(ask, path, "show protocols all",
                                                      abandon_on_cancel=True)
            except BirdError as e:
                unreachable[path] = str(e).removeprefix(f"{path}: ")
                continue
            found += bgp_sessions(reply)
        return self.report(found, unreachable)

    def report(self, found: Sequence[BgpSession], unreachable: Mapping[str, str]) -> Report:
        now = self._now()
        sessions = {}
        for s in found:
            since = since_time(s.since, now).replace(microsecond=0)
            state, before = self._seen.get(s.neighbour, ("", since))
            if state == s.state and since <= before + _FLAP:
                since = before  # the same state: BIRD's time can only have lost precision
            self._seen[s.neighbour] = (s.state, since)
            sessions[s.neighbour] = Session(s.state, since, s.imported, s.exported,
                                            s.protocol, s.error)
        for gone in self._seen.keys() - sessions.keys():
            del self._seen[gone]
        return Report(ok=len(unreachable) < len(self.sockets), sessions=sessions,
                      unreachable=dict(unreachable))


def split(report: Report, keys: Mapping[str, int | None]) -> dict[str, bytes]:
    """The report as stored under each key: all of it (None), or one address family's
    sessions (4 or 6: an RR host's report per registered address)."""
    return {key: dumps(Report(report.ok, {
        address: s for address, s in report.sessions.items()
        if family is None or (":" in address) == (family == 6)}, report.unreachable))
        for key, family in keys.items()}


async def keep(etcd: Etcd, reader: Reader, keys: Mapping[str, int | None], lease: int,
               interval: float) -> None:
    """Keep the reports under `keys` on `lease`, for ever, each written when it changes, and
    again when someone else has changed or deleted it (each key watched from our write)."""
    written: dict[str, bytes] = {}
    guards: dict[str, trio.CancelScope] = {}
    ok: bool | None = None  # whether BIRD answered, as last logged
    backoff = Backoff()
    # A watch that failed is read again after this: short of the lease, not chatty.
    recheck = max(10 * interval, 2 * etcd.timeout)
    async with trio.open_nursery() as nursery:
        while True:
            report = await reader.read()
            for key, value in split(report, keys).items():
                if written.get(key) == value:
                    continue
                if key in guards:
                    guards.pop(key).cancel()  # our own write is no one else's

                async def write(key: str = key, value: bytes = value) -> int:
                    return (await etcd.txn([], [put(key, value, lease)])).revision

                revision = await until_ok(write, backoff, errors=(EtcdError,),
                                          failed=denials.failed(
                                              "the session report " + key, lambda e: log.warning(
                                              "writing the session report: %s; retrying", e)))
                written[key] = value
                guards[key] = await nursery.start(_guard, etcd, key, value, lease, revision,
                                                  written, recheck)
            if report.ok != ok:
                log.info("%s: %s", ", ".join(keys), _summary(report))
                ok = report.ok
            await trio.sleep(interval)


async def _guard(etcd: Etcd, key: str, value: bytes, lease: int, revision: int,
                 written: dict[str, bytes], recheck: float, *,
                 task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED
                 ) -> None:
    """Forget what was written under `key` (so that the next read writes it again) once etcd
    holds something else there: another writer's value, or nothing. Cancelled by its scope."""
    with trio.CancelScope() as scope:
        task_status.started(scope)
        while True:
            await election.until_changed(etcd, key, revision, recheck=recheck)
            try:
                kv = await etcd.get(key)
            except EtcdError as e:
                log.debug("reading %s: %s; trying again", key, e)
                await trio.sleep(recheck)
                continue
            if kv is not None and (kv.value, kv.lease) == (value, lease):
                revision = kv.mod_revision  # ours after all: a retried write landed twice
                continue
            log.warning("%s was %s behind the reporter's back; writing it again", key,
                        "deleted" if kv is None else "changed")
            written.pop(key, None)
            return


def _summary(report: Report) -> str:
    if not report.ok:
        return "no BIRD answers: " + "; ".join(f"{path}: {why}" for path, why
                                                in sorted(report.unreachable.items()))
    up = sum(s.established for s in report.sessions.values())
    return f"BIRD answers; {up} of {len(report.sessions)} sessions Established"


async def run(config: Config) -> None:
    """The reporter, until cancelled: one lease after another, its report on each."""
    node = config.report_node
    etcd = Etcd.of(config, probe_key=config.sessions_prefix + node)
    reader = Reader(config.report_sockets)
    keys: dict[str, int | None] = {config.sessions_prefix + node: None}
    log.info("reporting the BGP sessions of %s from %s at %s", node,
             ", ".join(config.report_sockets), config.sessions_prefix + node)
    backoff = Backoff()

    async def session() -> None:
        async with election.session(etcd, config.lease_ttl) as lease:
            backoff.reset()
            await keep(etcd, reader, keys, lease, config.report_interval)

    try:
        await forever(session, backoff, errors=(election.SessionLost, EtcdError),
                      failed=lambda e: log.warning("%s; starting a new lease", e))
    finally:
        await etcd.close()


def main(config: Config) -> int:
    """`rrwatch report` until SIGTERM or SIGINT; the exit status."""
    if not config.report_node:
        try:
            config = attrs.evolve(config, report_node=node_name(socket.gethostname()))
        except ValueError as e:
            print(f"rrwatch: configuration: the host name is no node name ({e});"
                  " name the node with --node or RRWATCH_REPORT_NODE", file=sys.stderr)
            return ExitStatus.CONFIG

    async def serve() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, config)
                async for signum in signals:
                    log.info("%s: stopping", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()

    trio.run(serve)
    return ExitStatus.OK

"""The keeper of an RR host's BIRD: render its configuration from the model, check it with
`bird -p`, write it atomically, and ask BIRD to load it."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Protocol

import attrs
import trio

from rrwatch.core.bird_config import Session, render
from rrwatch.core.model import ClusterState
from rrwatch.host.birdc import BirdError, configure
from rrwatch.metrics import Latency

log = logging.getLogger("rrwatch.bird")


class Model(Protocol):
    """What the keeper reads: the watcher's model, and a way to wait for it to change."""

    state: ClusterState
    version: int

    async def wait_change(self, version: int) -> None: ...

    def changed_since(self, version: int) -> float | None: ...


# -- keeping BIRD in step ------------------------------------------------------------------------


@attrs.define
class BirdStats:
    applied: int = 0  # configurations written and loaded
    rejected: int = 0  # rendered configurations that `bird -p` refused
    reload_failures: int = 0  # BIRD could not be asked to load the file
    current: bool = False  # BIRD runs the configuration the model asks for


class BirdKeeper:
    """Renders the host's BIRD configuration from the watcher's model on every change.

    Rendering reads the model, so it runs on the trio thread: it costs O(nodes), like the file
    it writes, once per debounced change. File and socket work runs in worker threads.
    """

    # Retry a failed check or reload this often, even without a change: the cause may be outside
    # (BIRD not running yet, an include file being fixed).
    RETRY = 10.0

    def __init__(self, watcher: Model, config_path: str, socket_path: str,
                 addresses: Sequence[str], *, include: str = "", debounce: float = 0.1,
                 dry_run: bool = False) -> None:
        self._watcher = watcher
        self.path = os.path.abspath(config_path)  # BIRD resolves a relative one from its own cwd
        self.socket = socket_path
        self._addresses = tuple(addresses)
        self._include = include
        self._debounce = debounce
        self._dry_run = dry_run
        self.stats = BirdStats()
        self.latency = {"bird_change_to_reload_seconds": Latency()}
        self.peers: Mapping[str, Session] = {}  # protocol name -> session, as BIRD runs them
        self.refused: Mapping[str, str] = {}  # neighbour -> why, as of the last rendering
        self._reported: str | None = None  # the last problem logged, so a retry is no news

    async def run(self) -> None:
        version, done = -1, None  # `done`: the text last carried through (loaded, or checked)
        waiting: float | None = None  # when the oldest change not yet loaded came
        while True:
            if version >= 0:
                with trio.move_on_after(math.inf if done is not None else self.RETRY):
                    await self._watcher.wait_change(version)
                await trio.sleep(self._debounce)
                if waiting is None:
                    waiting = self._watcher.changed_since(version)
            version = self._watcher.version
            rendered = render(self._watcher.state, self._addresses, self._include)
            self._note_refused(rendered.refused if rendered is not None else {})
            if rendered is None:
                self._report(f"waiting for {', '.join(self._addresses)} to be registered",
                             logging.INFO)
                continue
            text, peers = rendered.text, rendered.sessions
            if text == done:
                waiting = None  # the change did not touch BIRD's sessions
                continue
            self.stats.current = False
            if await self.apply(text):
                done = text
                if not self._dry_run:
                    self.peers = {s.protocol: s for s in peers}
                    self.stats.current = True
                    if waiting is not None:
                        self.latency["bird_change_to_reload_seconds"].observe(
                            trio.current_time() - waiting)
                waiting = None
            else:
                done = None

    async def apply(self, text: str) -> bool:
        """Check `text` with BIRD, put it in place and load it; False if any step failed."""
        try:
            problem = await self._write_checked(text)
        except OSError as e:
            self._report(f"cannot write {self.path}: {e.strerror or e}", logging.ERROR)
            return False
        if problem is not None:
            if self._report(f"rejected the new configuration, keeping {self.path}: {problem}",
                            logging.ERROR):
                self.stats.rejected += 1
            return False
        if self._dry_run:
            log.info("BIRD: dry run: the new configuration passes bird -p; %s left as it is",
                     self.path)
            return True
        try:
            answer = await trio.to_thread.run_sync(configure, self.socket, self.path)
        except BirdError as e:
            self.stats.reload_failures += 1
            self._report(f"{self.path} is written, but BIRD could not load it: {e}",
                         logging.WARNING)
            return False
        self.stats.applied += 1
        self._reported = None
        log.info("BIRD: %s (%s)", answer or "configured", self.path)
        return True

    # Refused neighbours named per change, at most this many lines at once (the rest counted).
    NAMED = 20

    def _note_refused(self, refused: Mapping[str, str]) -> None:
        """Log the neighbours newly refused a session (or refused for a new reason), and those
        no longer refused; nothing when the set is as before. A name is a node's, or host/<ip>
        for another RR host; logged as its repr(), since a record's name is not log syntax."""
        old = self.refused
        new = sorted(name for name, why in refused.items() if old.get(name) != why)
        for name in new[:self.NAMED]:
            log.warning("BIRD: no session with %r: %s", name, refused[name])
        if len(new) > self.NAMED:
            log.warning("BIRD: no session with %d more neighbours whose records fail a check "
                        "(%d in all)", len(new) - self.NAMED, len(refused))
        gone = sorted(old.keys() - refused.keys())
        if gone:
            log.info("BIRD: %d neighbour(s) no longer refused: %s%s", len(gone),
                     ", ".join(repr(name) for name in gone[:self.NAMED]),
                     ", ..." if len(gone) > self.NAMED else "")
        if new or gone:
            self.refused = dict(refused)

    def _report(self, message: str, level: int) -> bool:
        """Log `message` unless it is the one logged last; whether it was logged."""
        if message == self._reported:
            return False
        self._reported = message
        log.log(level, "BIRD: %s", message)
        return True

    async def _write_checked(self, text: str) -> str | None:
        """Check `text` with `bird -p`, from a temporary file beside the target (or, in a dry
        run, in a private directory), and rename it into place if BIRD accepts it; the reason
        BIRD gave when it does not. OSError when the files cannot be written."""
        if await trio.to_thread.run_sync(read_file, self.path) == text:
            return None
        directory = tempfile.mkdtemp() if self._dry_run else os.path.dirname(self.path)
        temp = None
        try:
            temp = await trio.to_thread.run_sync(_write_temp, directory, text)
            try:
                done = await trio.run_process(["bird", "-p", "-c", temp], capture_stdout=True,
                                              capture_stderr=True, check=False)
            except OSError as e:
                return f"cannot run bird -p: {e.strerror or e}"
            if done.returncode:
                reason = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
                return reason.replace(temp, "<new file>") or f"exit status {done.returncode}"
            if not self._dry_run:
                await trio.to_thread.run_sync(os.replace, temp, self.path)
                temp = None
            return None
        finally:
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            if self._dry_run:
                with contextlib.suppress(OSError):
                    os.rmdir(directory)


def _write_temp(directory: str, text: str) -> str:
    """`text` in a new file in `directory`, on disk; its path."""
    fd, temp = tempfile.mkstemp(prefix=".rrwatch-", suffix=".conf", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)  # BIRD may run as its own user
    except BaseException:
        os.unlink(temp)
        raise
    return temp


def read_file(path: str) -> str | None:
    """The text of `path`; None when it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None

"""What etcd refused or could not do, as values the daemon can act on."""

from __future__ import annotations

import logging

log = logging.getLogger("rrwatch.etcd")


class EtcdError(Exception):
    """etcd could not be reached or refused a request; the message says why, in one line."""


class Compacted(EtcdError):
    """A watch asked for history that compaction has removed: snapshot again."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"revision compacted (oldest kept: {revision})")
        self.revision = revision


class StreamIdle(EtcdError):
    """A watch stream completed no message for the whole watch timeout (silent, or trickling
    bytes that never make a line): reopen it from where it was."""

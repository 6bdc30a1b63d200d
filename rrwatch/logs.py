"""Root logging: timestamped text in a terminal, priority prefixes for journald, or JSON lines.

Names and values from etcd reach log messages as they are; the text and journald formatters pass
each whole record through `printable`, so that a record is always one line and no control
character reaches a terminal. JSON lines are safe already: json.dumps escapes them.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from rrwatch.core.text import printable

FORMATS = ("text", "json")

_TEXT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

class _Handler(logging.StreamHandler):
    """Ours, so that setup() replaces it on a second call."""


class _TextFormatter(logging.Formatter):
    """Local time, level, logger and message; a record, traceback and all, on one line."""

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


class _JournalFormatter(logging.Formatter):
    """sd-daemon(3) priority prefixes; journald adds the time.

    journald makes each line an entry, so a record, traceback and all, is escaped to one line:
    a newline in a message or an exception can never make an entry of its own.
    """

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_priority(record.levelno)}>" + printable(super().format(record))


class _JsonFormatter(logging.Formatter):
    """One object per line, for log shippers; json.dumps escapes newlines."""

    def format(self, record: logging.LogRecord) -> str:
        time = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry = {
            "time": time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _priority(level: int) -> int:
    if level >= logging.ERROR:
        return 3
    if level >= logging.WARNING:
        return 4
    return 6 if level >= logging.INFO else 7


def _is_journal(environ: Mapping[str, str], stream: TextIO) -> bool:
    """JOURNAL_STREAM names the journal's socket as dev:inode; it is inherited by whatever runs
    under the service, so it counts only when the stream is that socket (sd_journal docs)."""
    try:
        dev, ino = (int(part) for part in environ.get("JOURNAL_STREAM", "").split(":"))
        stat = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (stat.st_dev, stat.st_ino) == (dev, ino)


def setup(*, verbose: bool, fmt: str = "text", environ: Mapping[str, str] = os.environ,
          stream: TextIO | None = None) -> None:
    """Configure the root logger; stream is sys.stderr as it is at the call, not at import."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    stream = sys.stderr if stream is None else stream
    handler = _Handler(stream)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    elif _is_journal(environ, stream):
        handler.setFormatter(_JournalFormatter())
    else:
        handler.setFormatter(_TextFormatter())
    root = logging.getLogger()
    # Only our own handler is replaced: others (pytest's capture) are not ours to remove.
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # requests and urllib3 say every connection at DEBUG; that is not ours to show.
    logging.getLogger("urllib3").setLevel(logging.WARNING)

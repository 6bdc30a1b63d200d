"""BIRD's control socket: commands, replies and the state of its protocols."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable

import attrs

from rrwatch.errors import RrwatchError

log = logging.getLogger("rrwatch.bird")


# -- BIRD's control socket -----------------------------------------------------------------------


class BirdError(RrwatchError):
    """BIRD cannot be reached, or it refused a command."""


@attrs.frozen
class Protocol:
    """A line of `show protocols`."""

    name: str
    proto: str
    state: str  # up, start, down, ...
    info: str  # the rest: since when, and for BGP the session state (Established, Active, ...)

    @property
    def established(self) -> bool:
        # Found by word: how many words "since" takes depends on BIRD's `timeformat`.
        return "Established" in self.info.split()


def parse_reply(lines: Iterable[str]) -> list[tuple[int, str]]:
    """BIRD's reply lines as (code, text), up to the last: "CODE-text" (more follows),
    " text" (more of the same code) and "CODE text" (the last)."""
    out: list[tuple[int, str]] = []
    code = 0
    for raw in lines:
        raw = raw.rstrip("\n")
        head = raw[:4]
        if head.isascii() and head.isdigit() and raw[4:5] in ("-", " "):
            code = int(head)
            out.append((code, raw[5:]))
            if raw[4:5] == " ":
                return out
        else:
            out.append((code, raw[1:]))
    raise BirdError("the reply ended early")


def ask(path: str, command: str, timeout: float = 5.0) -> list[tuple[int, str]]:
    """One command on BIRD's control socket: the reply as (code, text) lines.

    Blocking: the daemon calls it from a thread.
    """
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(path)
            stream = s.makefile("rwb")
            stream.readline()  # 0001 BIRD <version> ready.
            stream.write(command.encode() + b"\n")
            stream.flush()
            lines = iter(lambda: stream.readline().decode("utf-8", "replace"), "")
            reply = parse_reply(lines)
    except OSError as e:
        raise BirdError(f"{path}: {e.strerror or e}") from None
    if reply[-1][0] >= 8000:
        raise BirdError("; ".join(text for _, text in reply if text).strip())
    return reply


def protocols(path: str) -> list[Protocol]:
    """BIRD's protocols and their states (`show protocols`)."""
    out = []
    for code, text in ask(path, "show protocols"):
        fields = text.split(None, 4)
        if code == 1002 and len(fields) >= 4:
            out.append(Protocol(fields[0], fields[1], fields[3],
                                fields[4] if len(fields) > 4 else ""))
    return out


def configure(path: str, config: str) -> str:
    """Make BIRD load `config`; its answer ("Reconfigured", ...)."""
    reply = ask(path, f'configure "{config}"', timeout=30)
    return reply[-1][1]

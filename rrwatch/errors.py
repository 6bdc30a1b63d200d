"""Every failure a user can meet, and the statuses rrwatch exits with.

A failure is an RrwatchError: its text is one line that names its source, and its `status` says
how the command ends. The statuses follow sysexits.h, so that systemd can tell a broken config
(not worth a restart: RestartPreventExitStatus=78) from a fault that may pass.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator


class ExitStatus(enum.IntEnum):
    OK = 0
    FAILED = 1  # verify: routes do not reach; plan: its result would not; register: refused
    PENDING = 2  # plan --detailed-exitcode: changes are pending
    UNAVAILABLE = os.EX_UNAVAILABLE  # 69: etcd cannot be reached or read
    NOPERM = os.EX_NOPERM  # 77: etcd refuses a permission rrwatch needs
    CONFIG = os.EX_CONFIG  # 78: the config or the TLS files are wrong


def one_line(text: str) -> str:
    """`text` with every character that is not printable (a newline, an escape) shown as its
    escape, so that no value can forge a line of stderr or of the log."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class RrwatchError(Exception):
    """A failure with a one-line message."""

    status = ExitStatus.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class ConfigError(RrwatchError):
    """One or more configuration problems, each naming its source."""

    status = ExitStatus.CONFIG

    def __init__(self, problems: list[str]) -> None:
        self.problems = [one_line(problem) for problem in problems]
        super().__init__("; ".join(self.problems))


def leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:
    """The exceptions in a group, however deeply nurseries nested it."""
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            yield from leaves(e)
        else:
            yield e

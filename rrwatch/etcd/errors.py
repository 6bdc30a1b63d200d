"""What etcd refused or could not do, as values the daemon can act on.

The gateway answers a refused request with its gRPC status code (`{"error", "message",
"code"}`), and that code, never the message text, is what code here looks at. One refusal comes
without a code: etcd 3.4 turns away, with a plain-text HTTP 400, any gateway request whose
client certificate has a CommonName while auth is on (the CVE-2018-16886 fix).
"""

from __future__ import annotations

import enum

from rrwatch.errors import ExitStatus, RrwatchError


class Code(enum.IntEnum):
    """The gRPC status codes etcd's errors carry (google.golang.org/grpc/codes)."""

    CANCELLED = 1  # a watch the server cancelled (for an invalid token, or a denied key)
    INVALID_ARGUMENT = 3  # also auth: "user name is empty", "auth revision is old"
    NOT_FOUND = 5  # a lease that does not exist (any more)
    PERMISSION_DENIED = 7
    FAILED_PRECONDITION = 9
    OUT_OF_RANGE = 11  # a revision compacted away
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16  # an invalid or expired auth token


class EtcdError(RrwatchError):
    """etcd could not be reached or refused a request; the message says why, in one line.

    `code` is the gRPC status code etcd refused with, None when there was none (a request that
    failed on the way, a reply that made no sense); `http_status` the gateway's, if it replied.
    """

    status = ExitStatus.UNAVAILABLE

    def __init__(self, message: str, *, code: int | None = None,
                 http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status

    @property
    def denied(self) -> bool:
        """etcd refused the permission this request needs."""
        return self.code == Code.PERMISSION_DENIED

    @property
    def needs_user(self) -> bool:
        """etcd has auth on and the request carried no (valid) token."""
        return self.code == Code.UNAUTHENTICATED


class CertificateRefused(RrwatchError):
    """etcd's gateway refuses every request whose client certificate has a CommonName while
    auth is on. No retry cures that, so it is no EtcdError: it ends the command or the daemon
    with one line."""

    status = ExitStatus.CONFIG


class LoginRefused(EtcdError):
    """etcd refused the user name and password (or knows no such user)."""


class Compacted(EtcdError):
    """A watch asked for history that compaction has removed: snapshot again."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"revision compacted (oldest kept: {revision})", code=Code.OUT_OF_RANGE)
        self.revision = revision


class StreamIdle(EtcdError):
    """A watch stream completed no message for the whole watch timeout (silent, or trickling
    bytes that never make a line): reopen it from where it was."""

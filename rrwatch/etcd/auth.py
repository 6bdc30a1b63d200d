"""etcd authentication: a user name and password, and the token etcd gives for them.

etcd's JSON gateway ignores client certificate names for authorisation, so with auth on every
request carries a token (header `Authorization`), got from `POST /v3/auth/authenticate`. One
token serves every request of a client: unary calls, watches and lease keep-alives.

Simple tokens live `--auth-token-ttl` seconds from their last use; JWT tokens expire from issue
whatever their use; any change to users or roles invalidates every token. So a token is not
renewed on a clock: the request it fails on logs in again and is sent once more (`stale`), and
a watch etcd cancels for it is reopened with a new one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from rrwatch.etcd.errors import Code, EtcdError

# The codes of the refusals that want a new token: "invalid auth token" (expired, or auth
# changed) is UNAUTHENTICATED; "user name is empty" (no token) and "auth revision is old" come as
# INVALID_ARGUMENT, with many refusals that no token cures. Telling those apart would take the
# message text; a second login and one more try cost less, and the refusal then stands.
_RENEW = (Code.UNAUTHENTICATED, Code.INVALID_ARGUMENT)


def stale(error: EtcdError) -> bool:
    """May `error` mean that the token must be renewed?"""
    return error.code in _RENEW


class Token:
    """The current token of one client, got by `login` when there is none.

    Callers that need a token while a login runs wait for that one login. `renew(old)` drops
    the token only if it is still `old`, so that many requests failing on one expired token
    cause one login, not one each.
    """

    def __init__(self, login: Callable[[], Awaitable[str]]) -> None:
        self._login = login
        self._value: str | None = None
        self._lock = trio.Lock()

    async def get(self) -> str:
        if self._value is not None:
            return self._value
        async with self._lock:
            if self._value is None:
                self._value = await self._login()
            return self._value

    def renew(self, old: str) -> None:
        if self._value == old:
            self._value = None

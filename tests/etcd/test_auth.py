"""The auth token: one login however many requests want one, renewed only when etcd refuses it.
Pure trio, on the autojump clock: the login stands in for etcd's /v3/auth/authenticate."""

from __future__ import annotations

import trio

from rrwatch.config.values import Credentials
from rrwatch.etcd import Code, EtcdError
from rrwatch.etcd.auth import Token, stale


class Logins:
    """Logs in after a second, handing out token-1, token-2, ..."""

    def __init__(self) -> None:
        self.issued = 0

    async def __call__(self) -> str:
        await trio.sleep(1)
        self.issued += 1
        return f"token-{self.issued}"


async def gather(token: Token, count: int) -> list[str]:
    got: list[str] = []

    async def one() -> None:
        got.append(await token.get())

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return got


async def test_requests_that_want_a_token_at_once_share_one_login(autojump_clock):
    logins = Logins()
    token = Token(logins)
    start = trio.current_time()
    assert await gather(token, 10) == ["token-1"] * 10
    assert logins.issued == 1
    assert trio.current_time() - start == 1  # one login's time, not ten
    assert await token.get() == "token-1" and logins.issued == 1  # kept: no clock renews it


async def test_a_refused_token_is_renewed_once_however_many_requests_it_failed(autojump_clock):
    """Ten requests fail on token-1 and each says so: one login gives them all token-2. A late
    failure on token-1 then leaves token-2 alone."""
    logins = Logins()
    token = Token(logins)
    old = await token.get()
    for _ in range(10):
        token.renew(old)
    assert await gather(token, 10) == ["token-2"] * 10
    token.renew(old)
    assert await token.get() == "token-2" and logins.issued == 2


async def test_a_failed_login_leaves_no_token_and_the_next_request_tries_again(autojump_clock):
    attempts = []

    async def login() -> str:
        await trio.sleep(1)
        attempts.append(trio.current_time())
        if len(attempts) == 1:
            raise EtcdError("etcd unreachable")
        return "token-ok"

    token = Token(login)
    try:
        await token.get()
    except EtcdError:
        pass
    else:
        raise AssertionError("the failed login raised nothing")
    assert await token.get() == "token-ok" and len(attempts) == 2


def test_the_refusals_that_want_a_new_token():
    """Expired or unknown tokens (UNAUTHENTICATED) and "user name is empty" or "auth revision is
    old" (INVALID_ARGUMENT); not a denied permission, a compaction or a failed connection."""
    assert stale(EtcdError("etcdserver: invalid auth token", code=Code.UNAUTHENTICATED))
    assert stale(EtcdError("etcdserver: user name is empty", code=Code.INVALID_ARGUMENT))
    assert not stale(EtcdError("etcdserver: permission denied", code=Code.PERMISSION_DENIED))
    assert not stale(EtcdError("mvcc: required revision has been compacted",
                               code=Code.OUT_OF_RANGE))
    assert not stale(EtcdError("connection refused"))


def test_the_password_is_in_no_repr():
    shown = repr(Credentials("rrwatch", "s3cret-pw"))
    assert "rrwatch" in shown and "s3cret-pw" not in shown

"""The etcd client: unary calls on etcd3gw's gateway client, pages at a pinned revision, leases,
and fail-over to the next endpoint when a member cannot serve."""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import etcd3gw
import requests
import trio

from rrwatch.config.values import Credentials
from rrwatch.etcd.auth import Token, stale
from rrwatch.etcd.errors import CertificateRefused, Code, EtcdError, LoginRefused
from rrwatch.etcd.http import (
    _BROKEN,
    _OPENING,
    _UNARY,
    _Exchange,
    _in_thread,
    _reason,
    _request,
    _session,
    _shutdown,
)
from rrwatch.etcd.stream import WatchStream, _pump
from rrwatch.etcd.wire import (
    KV,
    T,
    TxnResult,
    WatchResponse,
    _b64,
    _grant_reply,
    _granted_ttl_reply,
    _header_revision,
    _keep_alive_reply,
    _range_reply,
    _txn_reply,
    prefix_end,
    refusal,
)
from rrwatch.tls import TlsFiles
from rrwatch.tls import context as tls_context

if TYPE_CHECKING:
    from rrwatch.config import Config

log = logging.getLogger("rrwatch.etcd")

# Refusals that mean this member cannot serve now (etcd3gw's ConnectionFailedError and
# ConnectionTimeoutError): try the next endpoint.
_UNAVAILABLE = {503, 408, 504}


class Etcd:
    """A client for one etcd cluster. Endpoints are tried in turn when one fails."""

    def __init__(
        self,
        endpoints: Sequence[str],
        tls: TlsFiles | None = None,
        *,
        timeout: float = 5.0,
        watch_timeout: float = 60.0,
        auth: Credentials | None = None,
        probe_key: str = "\0",
    ) -> None:
        """`auth`: log in as this user (etcd with auth on). `probe_key`: the key `probe` reads,
        one the user may read (a least-privilege role grants none outside its prefixes)."""
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self._auth = auth
        self._token = None if auth is None else Token(self._login)
        self._probe_key = probe_key.encode()
        self._endpoints = [urllib.parse.urlsplit(e) for e in endpoints]
        self._tls = None if tls is None else tls_context(tls)
        self.timeout = timeout
        self._watch_timeout = watch_timeout
        self._current = 0
        self._client = self._connect(self._current)

    @classmethod
    def of(cls, config: Config, endpoints: Sequence[str] = (), *, probe_key: str = "") -> Etcd:
        """A client as `config` says: its endpoints (or `endpoints`), TLS files, timeouts and
        user; `probe` reads `probe_key`, by default the key of rrwatch's prefix."""
        return cls(endpoints or config.etcd_endpoints, config.tls, timeout=config.etcd_timeout,
                   watch_timeout=config.watch_timeout, auth=config.etcd_auth,
                   probe_key=probe_key or config.prefix)

    def _connect(self, index: int) -> etcd3gw.Etcd3Client:
        url = self._endpoints[index]
        return etcd3gw.Etcd3Client(
            host=url.hostname or "localhost",
            port=url.port or 2379,
            protocol=url.scheme or "https",
            timeout=self.timeout,
            api_path="/v3/",
            session=_session(self._tls),
        )

    @property
    def endpoint(self) -> str:
        return self._client.base_url

    def use_tls(self, context: ssl.SSLContext) -> None:
        """Make new connections with `context` (rotated certificates). Requests in flight and
        open watch streams keep the connections they have: nothing is interrupted."""
        self._tls = context
        old, self._client.session = self._client.session, _session(context)
        old.close()

    def fail_over(self, endpoint: str) -> None:
        """Move to the next endpoint, unless someone already moved away from `endpoint`."""
        if len(self._endpoints) > 1 and endpoint == self.endpoint:
            self._client.session.close()
            self._current = (self._current + 1) % len(self._endpoints)
            self._client = self._connect(self._current)
            log.info("using etcd endpoint %s", self.endpoint)

    async def close(self) -> None:
        self._client.session.close()

    async def _post(self, path: str, payload: dict[str, Any], *, abandon: bool = False) -> Any:
        """One request, within the timeout in all; its JSON value. Every failure is an
        EtcdError.

        With `abandon`, cancelling the caller ends the request at once (only for requests safe
        to repeat or to lose); without, the caller waits for it, at most until the timeout.
        With a user, a request refused for its token is sent once more with a new one (etcd
        applies nothing it refuses, so a write too).
        """
        if self._token is None:
            return await self._send(path, payload, {}, abandon)
        token = await self._token.get()
        try:
            return await self._send(path, payload, {"Authorization": token}, abandon)
        except EtcdError as e:
            if not stale(e):
                raise
            self._token.renew(token)
            log.debug("etcd refused the auth token (%s): logging in again", e)
        token = await self._token.get()
        return await self._send(path, payload, {"Authorization": token}, abandon)

    async def _login(self) -> str:
        """A new token for the user."""
        assert self._auth is not None
        payload = {"name": self._auth.user, "password": self._auth.password}
        try:
            reply = await self._send("/auth/authenticate", payload, {}, False)
        except EtcdError as e:
            if e.code is None:
                raise
            raise LoginRefused(f"{e} (user {self._auth.user!r})", code=e.code,
                               http_status=e.http_status) from None
        token = reply.get("token") if isinstance(reply, dict) else None
        if not isinstance(token, str) or not token:
            raise EtcdError(f"{self.endpoint}: no token in the reply to /auth/authenticate")
        log.info("logged in to etcd as %r", self._auth.user)
        return token

    async def _send(self, path: str, payload: dict[str, Any], headers: dict[str, str],
                    abandon: bool) -> Any:
        client = self._client
        base = client.base_url
        send = functools.partial(_request, client.session, client.get_url(path), payload,
                                 self.timeout, headers)
        try:
            status, reply = await _in_thread(send, timeout=self.timeout, limiter=_UNARY,
                                             abandon=abandon)
        except trio.TooSlowError:
            self.fail_over(base)
            raise EtcdError(f"{base}: no whole reply to {path} within {self.timeout:g} s"
                            ) from None
        except EtcdError as e:  # too large, or not JSON
            raise EtcdError(f"{base}: unexpected reply to {path}: {e}") from e
        except _BROKEN as e:
            # A reply cut short by a dying server comes through as the library raised it.
            self.fail_over(base)
            raise EtcdError(f"{base}: {_reason(e)}") from e
        if status != 200:
            if status in _UNAVAILABLE:
                self.fail_over(base)
            message, code = refusal(reply)
            if status == 400 and code is None:
                raise CertificateRefused(
                    f"{base}: etcd has auth on and refuses a client certificate with a"
                    f" CommonName on its gateway ({message}): use one without a CommonName"
                    " (docs/howto-tls-etcd.md)")
            raise EtcdError(f"{base}: {message}", code=code, http_status=status)
        return reply

    async def _call(self, path: str, payload: dict[str, Any], read: Callable[[Any], T],
                    *, abandon: bool = False) -> T:
        """A request, and the decoder `read` applied to its reply: a reply of the wrong shape
        is an EtcdError too, never a KeyError deep in the daemon."""
        reply = await self._post(path, payload, abandon=abandon)
        try:
            return read(reply)
        except EtcdError as e:
            raise EtcdError(f"{self.endpoint}: unexpected reply to {path}: {e}") from e

    async def range(
        self, start: bytes, end: bytes, *, revision: int = 0, limit: int = 0,
        keys_only: bool = False,
    ) -> tuple[int, list[KV], bool]:
        """One range request: (header revision, key-values, whether more remain)."""
        payload: dict[str, Any] = {"key": _b64(start), "range_end": _b64(end)}
        if revision:
            payload["revision"] = revision
        if limit:
            payload["limit"] = limit
        if keys_only:
            payload["keys_only"] = True
        return await self._call("/kv/range", payload, _range_reply)

    async def pages(
        self, prefixes: Sequence[str], *, page: int = 1000, keys_only: bool = False
    ) -> AsyncIterator[tuple[int, list[KV]]]:
        """Every key under the prefixes at one pinned revision, page by page as it is read:
        (revision, key-values). A caller that uses each page as it comes never holds them all.

        The revision is the first reply's: a reply's header gives etcd's revision at the time,
        which moves on while the pages are read, not the revision read at.
        """
        revision = 0
        for prefix in prefixes:
            start = prefix.encode()
            end = prefix_end(start)
            while True:
                now, kvs, more = await self.range(start, end, revision=revision, limit=page,
                                                  keys_only=keys_only)
                revision = revision or now
                yield revision, kvs
                if not more or not kvs:
                    break
                start = kvs[-1].key.encode() + b"\0"

    async def snapshot(
        self, prefixes: Sequence[str], *, page: int = 1000, keys_only: bool = False
    ) -> tuple[int, list[KV]]:
        """Every key under the prefixes at one pinned revision, read in pages."""
        revision = 0
        out: list[KV] = []
        async for read in self.pages(prefixes, page=page, keys_only=keys_only):
            revision, kvs = read
            out.extend(kvs)
        return revision, out

    async def get(self, key: str) -> KV | None:
        encoded = key.encode()
        _, kvs, _ = await self.range(encoded, encoded + b"\0", limit=1)
        return kvs[0] if kvs else None

    async def probe(self) -> int:
        """A linearizable read of one key: the current revision, or EtcdError when the member
        cannot serve (frozen, partitioned from its quorum, unreachable)."""
        return await self._call("/kv/range", {"key": _b64(self._probe_key), "count_only": True},
                                _header_revision)

    async def txn(
        self, compare: Sequence[dict], success: Sequence[dict], failure: Sequence[dict] = ()
    ) -> TxnResult:
        request = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        return await self._call("/kv/txn", request, _txn_reply)

    async def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; its ID."""
        return await self._call("/lease/grant", {"TTL": ttl}, _grant_reply)

    async def keep_alive(self, lease: int) -> int:
        """Renew a lease; the TTL it now has, 0 when it has expired or been revoked.

        Cancellable at once: the caller's deadline, not the request timeout, decides."""
        return await self._call("/lease/keepalive", {"ID": lease}, _keep_alive_reply,
                                abandon=True)

    async def lease_granted_ttl(self, lease: int) -> int:
        """The TTL `lease` was granted with; 0 when it does not exist (any more)."""
        return await self._call("/lease/timetolive", {"ID": lease}, _granted_ttl_reply)

    async def revoke(self, lease: int) -> None:
        """End a lease now, deleting every key attached to it."""
        try:
            await self._post("/lease/revoke", {"ID": lease})
        except EtcdError as e:
            if e.code != Code.NOT_FOUND:  # already gone: revoked, or expired
                raise

    @contextlib.asynccontextmanager
    async def watch(
        self, key: str, start_revision: int, *, prefix: bool = True
    ) -> AsyncIterator[WatchStream]:
        """A watch stream on a prefix (or one key), as an async iterator of responses.

        The stream's end arrives as an EtcdError in it (Compacted when the start revision is
        gone, StreamIdle when no whole message came for the watch timeout). Opening it takes
        at most the request timeout plus the watch timeout. Leaving the context shuts the
        socket down, which unblocks the reading thread at once.
        """
        start = key.encode()
        create: dict[str, Any] = {"key": _b64(start), "start_revision": start_revision,
                                  "progress_notify": True}
        if prefix:
            create["range_end"] = _b64(prefix_end(start))
        request = {"create_request": create}
        endpoint = self.endpoint
        url = self._client.get_url("/watch")
        auth_token = None if self._token is None else await self._token.get()
        headers = {} if auth_token is None else {"Authorization": auth_token}
        with contextlib.ExitStack() as cleanup:
            session = cleanup.enter_context(_session(self._tls))

            def open_stream(exchange: _Exchange
                            ) -> tuple[requests.Response, socket.socket | None]:
                response = session.post(url, json=request, headers=headers, stream=True,
                                        timeout=(self.timeout, self._watch_timeout))
                exchange.keep(response)  # closed by `end` if we stop waiting from now on
                return response, exchange.sock

            opening = self.timeout + self._watch_timeout
            try:
                response, sock = await _in_thread(open_stream, timeout=opening,
                                                  limiter=_OPENING, abandon=True)
                cleanup.enter_context(response)
                response.raise_for_status()
            except trio.TooSlowError:
                self.fail_over(endpoint)
                raise EtcdError(f"{url}: no reply headers within {opening:g} s") from None
            except _BROKEN as e:
                self.fail_over(endpoint)
                raise EtcdError(f"{url}: {_reason(e)}") from e
            token = trio.lowlevel.current_trio_token()
            send, receive = trio.open_memory_channel[WatchResponse | EtcdError](16)
            done = trio.Event()

            def finished(_outcome: object) -> None:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(done.set)

            # A plain thread rather than a nursery: errors raised by the caller's block then
            # reach the caller as themselves, not wrapped in an exception group.
            trio.lowlevel.start_thread_soon(
                functools.partial(_pump, response, send, url, token), finished)
            # etcd cancels a watch opened with an expired token (an open one survives expiry):
            # the next one opens with a new token.
            renew = None if auth_token is None or self._token is None else functools.partial(
                self._token.renew, auth_token)
            try:
                yield WatchStream(receive, self._watch_timeout, url, sock, renew)
            finally:
                _shutdown(sock)
                receive.close()
                with trio.CancelScope(shield=True):
                    await done.wait()
                if sock is not None:
                    sock.close()  # urllib3 may have let go of it after a broken read

"""One rate limit across every pod: GCRA in Redis, one atomic round trip per decision.

Theory of operation. A Lua script (below) keeps each key's theoretical arrival time (TAT) in Redis and
decides with Redis' own clock (``TIME``), so every pod, whatever its clock, shares one limit; the key
expires when the limit would be idle again (at most the burst tolerance), so idle keys cost nothing.
Times in the script are whole microseconds, exact in Lua's doubles until the year 2255: a burst of N
admits exactly N. The script is loaded once per connection (``SCRIPT LOAD``); each decision is one
``EVALSHA``, and ``EVAL`` if Redis forgot the script (``NOSCRIPT`` after a restart or ``SCRIPT FLUSH``).

The client is our own minimal RESP2 speaker (:mod:`sidegate.ratelimit.resp`): one connection per
limiter, an asyncio ``Protocol`` (the data callback parses replies and completes the waiting futures in
FIFO order, with no reader task in between), and every concurrent request pipelined on it. A request
waits at most ``timeout`` (including a first connect); when that passes, or the connection is refused,
reset or answers garbage, the connection is dropped, every request on it fails with
:class:`RedisUnavailable`, and the limiter turns unhealthy: requests then fail at once, without touching
the network, while a background task reconnects with backoff (0.5 s doubling to 5 s). A reconnect counts
only once Redis has answered (``AUTH``/``SELECT``/``SCRIPT LOAD``), so a frozen Redis whose kernel still
accepts connections stays unhealthy. What to do when Redis is unavailable (fail open, fail closed, a
local limit) is the caller's choice.

``rediss://`` speaks TLS (asyncio's TLS transport, the stdlib's verifying context: see
:mod:`sidegate.ratelimit.redis_tls`), with the certificate checked against ``server_name`` or else
the URL's host. A handshake that fails is a failed connect like any other, with the reason in words
(``TLS certificate verification failed: ...``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote, urlsplit

from sidegate.errors import SidegateError
from sidegate.policy.gcra import Decision
from sidegate.ratelimit.redis_tls import RedisTls, client_context, describe_tls_error
from sidegate.ratelimit.resp import Reply, ReplyError, RespProtocolError, encode, parse_reply

__all__ = ["RedisAddress", "RedisLimiter", "RedisUnavailable", "ReplyError", "parse_reply", "parse_url"]

log = logging.getLogger("sidegate.ratelimit")

# KEYS[1]: the key. ARGV: emission interval (us), tolerance = burst * interval (us), cost.
# Returns {allowed 0|1, remaining, reset_after (us), retry_after (us)}.
GCRA_SCRIPT = b"""\
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local carried = tat - now
local backlog = carried + cost * interval
if backlog > tolerance then
  return {0, math.max(0, math.floor((tolerance - carried) / interval)), carried, backlog - tolerance}
end
if cost > 0 then
  redis.call('SET', KEYS[1], string.format('%d', now + backlog), 'PX', math.ceil(backlog / 1000))
end
return {1, math.floor((tolerance - backlog) / interval), backlog, 0}
"""
GCRA_SHA = hashlib.sha1(GCRA_SCRIPT, usedforsecurity=False).hexdigest().encode()
_EVALSHA_HEAD = b"*7\r\n$7\r\nEVALSHA\r\n$40\r\n" + GCRA_SHA + b"\r\n$1\r\n1\r\n"
_EVAL_HEAD = b"*7\r\n$4\r\nEVAL\r\n$%d\r\n%s\r\n$1\r\n1\r\n" % (len(GCRA_SCRIPT), GCRA_SCRIPT)
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 5.0


class RedisUnavailable(SidegateError):  # noqa: N818 (the name says what the caller handles)
    """Redis could not decide within the timeout: down, frozen, refusing, or answering nonsense."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where Redis is and how to log in: ``redis[s]://[[user]:password@]host[:port][/db]``."""

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False  # rediss://

    def __str__(self) -> str:  # never the password: this goes to logs and errors
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


def parse_url(url: str) -> RedisAddress:
    """Parse a ``redis://`` or ``rediss://`` URL (ValueError with the reason when it is not one this
    client supports)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(
            f"redis url {_hidden(url)!r}: scheme must be redis:// or rediss:// (TLS); no unix sockets"
        )
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ValueError(f"redis url {_hidden(url)!r}: bad port") from exc
    if not parts.hostname:
        raise ValueError(f"redis url {_hidden(url)!r}: no host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"redis url {_hidden(url)!r}: the path must be a database number")
    return RedisAddress(
        host=parts.hostname,
        port=port,
        db=int(path or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=parts.scheme == "rediss",
    )


def _hidden(url: str) -> str:
    """The URL as errors may show it: without the password."""
    scheme, sep, rest = url.partition("://")
    login, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in login:
        return url
    return f"{scheme}://{login.split(':', 1)[0]}:***@{host}"


class _Connection(asyncio.Protocol):
    """One TCP connection: requests written in order, replies matched to them in the same order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[_Connection, str], None]) -> None:
        self._loop = loop
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._pending: deque[asyncio.Future[Reply]] = deque()
        self._buffer = bytearray()
        self.failed = ""  # why the connection is unusable; "" while it is fine
        self.lost: Exception | None = None  # what connection_lost was told (a TLS alert, a reset)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def send(self, payload: bytes) -> asyncio.Future[Reply]:
        """Write one request (or several, pipelined as one payload) and return its reply's future."""
        fut: asyncio.Future[Reply] = self._loop.create_future()
        if self.failed or self._transport is None:
            fut.set_exception(RedisUnavailable(self.failed or "not connected"))
            return fut
        self._pending.append(fut)
        self._transport.write(payload)
        return fut

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        pos = 0
        pending = self._pending
        try:
            while pos < len(buf):
                parsed = parse_reply(buf, pos)
                if parsed is None:
                    break
                if not pending:
                    raise RespProtocolError("a reply nobody asked for")
                value, pos = parsed
                fut = pending.popleft()
                if not fut.done():  # a request cancelled by its caller still owns its place in the FIFO
                    fut.set_result(value)
        except RespProtocolError as exc:
            self.close(f"protocol error from redis: {exc}")
            return
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc
        self.close("redis closed the connection" if exc is None else f"connection to redis lost: {exc}")

    def close(self, reason: str) -> None:
        """Drop the connection and fail every request waiting on it with ``reason``. Idempotent."""
        if self.failed:
            return
        self.failed = reason
        if self._transport is not None:
            self._transport.abort()
        while self._pending:
            fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(RedisUnavailable(reason))
        self._on_lost(self, reason)


class RedisLimiter:
    """GCRA limits kept in Redis, shared by every pod that uses the same Redis and keys.

    Made anywhere; bound to the event loop of its first use. ``timeout`` bounds every decision
    (connect included); ``connect_timeout`` bounds each background (re)connect, TLS handshake and
    login included. ``tls`` applies to a ``rediss://`` URL (default: the system trust store).
    Both timeouts are given: their defaults are the config model's (``redis:``), written only there.
    """

    def __init__(
        self, url: str, *, timeout: float, connect_timeout: float, tls: RedisTls | None = None
    ) -> None:
        if not timeout > 0 or not connect_timeout > 0:
            raise ValueError("redis timeouts must be positive")
        self.address = parse_url(url)
        if tls is not None and not self.address.tls:
            raise ValueError(f"redis url {self.address}: TLS settings need a rediss:// URL")
        self._tls = (tls or RedisTls()) if self.address.tls else None
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._conn: _Connection | None = None
        self._connector: asyncio.Task[None] | None = None
        self._first_attempt: asyncio.Future[None] | None = None  # done when the first connect has ended
        self._healthy = True
        self._closed = False
        self._reason = ""
        self._args: dict[tuple[int, float, int, int], bytes] = {}
        login: list[bytes] = []
        names: list[str] = []
        if self.address.password is not None:
            user = self.address.username
            login.append(encode(b"AUTH", *([user.encode()] if user else []), self.address.password.encode()))
            names.append("AUTH")
        if self.address.db:
            login.append(encode(b"SELECT", str(self.address.db).encode()))
            names.append("SELECT")
        login.append(encode(b"SCRIPT", b"LOAD", GCRA_SCRIPT))
        names.append("SCRIPT LOAD")
        self._handshake = tuple(zip(names, login, strict=True))

    async def gcra(self, key: bytes, requests: int, per: float, burst: int, cost: int = 1) -> Decision:
        """Decide a request of ``cost`` for ``key`` under ``requests`` per ``per`` s, bursts of ``burst``.

        Raises :class:`RedisUnavailable` when Redis cannot answer within the timeout (or is known to be
        down: then at once), and ValueError for a limit that makes no sense.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        conn = self._conn
        if conn is None:
            conn = await self._connection(loop, deadline)
        tail = self._args.get((requests, per, burst, cost))
        if tail is None:
            tail = self._encode_args(requests, per, burst, cost)
        keyed = b"$%d\r\n%s\r\n" % (len(key), key)
        reply = await self._call(conn, _EVALSHA_HEAD + keyed + tail, loop, deadline)
        if type(reply) is ReplyError and reply.message.startswith("NOSCRIPT"):
            reply = await self._call(conn, _EVAL_HEAD + keyed + tail, loop, deadline)
        if isinstance(reply, list) and len(reply) == 4:
            allowed, remaining, reset_us, retry_us = reply
            if (
                isinstance(allowed, int)
                and isinstance(remaining, int)
                and isinstance(reset_us, int)
                and isinstance(retry_us, int)
            ):
                return Decision(allowed == 1, burst, remaining, reset_us / 1e6, retry_us / 1e6)
        if isinstance(reply, ReplyError):
            raise RedisUnavailable(f"redis refused the rate-limit script: {reply.message}")
        raise RedisUnavailable(f"unexpected answer to the rate-limit script: {reply!r:.100}")

    def healthy(self) -> bool:
        """False from a failure until a reconnect has succeeded (and after :meth:`close`)."""
        return self._healthy and not self._closed

    async def close(self) -> None:
        """Stop reconnecting and drop the connection; waiting requests fail. Idempotent."""
        self._closed = True
        connector = self._connector
        if connector is not None:
            connector.cancel()
            await asyncio.wait((connector,))
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close("the rate-limit redis client was closed")

    def _is_closed(self) -> bool:  # a call, so that mypy does not keep the narrowing across an await
        return self._closed

    def _encode_args(self, requests: int, per: float, burst: int, cost: int) -> bytes:
        if requests < 1 or burst < 1 or not per > 0 or cost < 0:
            raise ValueError(f"bad limit: {requests} per {per} s, burst {burst}, cost {cost}")
        # Whole microseconds, rounded down (the 1e-6 absorbs float noise such as 0.7 s / 7 = 99999.999...
        # us), so that a client pacing itself exactly at the configured rate is never refused.
        interval = max(1, math.floor(per * 1_000_000 / requests + 1e-6))
        args = (str(interval).encode(), str(burst * interval).encode(), str(cost).encode())
        tail = b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)
        if len(self._args) >= 1024:  # limits come from config: a handful; never grow without bound
            self._args.clear()
        self._args[(requests, per, burst, cost)] = tail
        return tail

    async def _call(
        self, conn: _Connection, payload: bytes, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> Reply:
        fut = conn.send(payload)
        timer = loop.call_at(deadline, self._expire, conn, fut)
        try:
            return await fut
        finally:
            timer.cancel()

    def _expire(self, conn: _Connection, fut: asyncio.Future[Reply]) -> None:
        if not fut.done():
            # The connection is behind by at least this request: drop it rather than queue more on it.
            conn.close(f"no answer from {self.address} within {self._timeout * 1000:g} ms")

    async def _connection(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        """The connection, waiting for the first connect until ``deadline``; never waits on a known outage."""
        if self._closed:
            raise RedisUnavailable("the rate-limit redis client is closed")
        if not self._healthy:
            raise RedisUnavailable(self._reason)
        if self._first_attempt is None:
            self._first_attempt = loop.create_future()
            self._connector = loop.create_task(self._connect(0.0))
        await asyncio.wait((self._first_attempt,), timeout=max(0.0, deadline - loop.time()))
        conn = self._conn
        if conn is None:
            raise RedisUnavailable(self._reason or f"no connection to {self.address} within the timeout")
        return conn

    async def _connect(self, delay: float) -> None:
        """Connect, retrying with backoff until it works or the limiter is closed."""
        try:
            while not self._closed:
                if delay:
                    await asyncio.sleep(delay)
                try:
                    conn = await self._open()
                except Exception as exc:  # whatever went wrong, try again later
                    reason = f"cannot connect to {self.address}: {self._describe(exc)}"
                    delay = min(max(2 * delay, _BACKOFF_FIRST), _BACKOFF_MAX)
                    if self._healthy or reason != self._reason:
                        log.warning("%s; retrying in %g s", reason, delay)
                    self._healthy = False
                    self._reason = reason
                    self._attempted()
                    continue
                if self._is_closed():  # close() ran while this task waited for the connection
                    conn.close("the rate-limit redis client was closed")
                    return
                if not self._healthy:
                    log.warning("rate-limit redis %s is reachable again", self.address)
                self._conn = conn
                self._healthy = True
                self._reason = ""
                return
        finally:
            self._connector = None
            self._attempted()

    def _attempted(self) -> None:
        """Release the requests waiting for the first connect: it has succeeded, failed or stopped."""
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(None)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        tls = self._tls
        # A fresh context per connect: certificates renewed on disk are used from the next one on.
        context = client_context(tls) if tls is not None else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self._lost),
                    self.address.host,
                    self.address.port,
                    ssl=context,
                    server_hostname=(tls.server_name or self.address.host) if tls is not None else None,
                )
                replies = await asyncio.gather(*(conn.send(command) for _, command in self._handshake))
            for (name, _), reply in zip(self._handshake, replies, strict=True):
                if isinstance(reply, ReplyError):
                    raise RedisUnavailable(f"{name} refused: {reply.message}")
        except BaseException as exc:
            if conn is not None:
                conn.close("connect failed")
                if conn.lost is not None:  # Redis dropped us while logging in: say why (a TLS alert)
                    raise _LoginLostError(conn.lost) from None
            elif tls is not None and isinstance(exc, TimeoutError):
                raise TimeoutError(
                    "timed out connecting (in the TLS handshake if Redis does not speak TLS on this port: "
                    "use redis://)"
                ) from None
            raise
        return conn

    def _describe(self, exc: BaseException) -> str:
        """A failed connect in words, with a hint at the setting to check."""
        lost = isinstance(exc, _LoginLostError)
        cause = exc.cause if isinstance(exc, _LoginLostError) else exc
        tls = self._tls
        told = describe_tls_error(cause, tls) if tls is not None else None
        if told is not None:
            return told
        text = str(cause) or ("timed out" if isinstance(cause, TimeoutError) else type(cause).__name__)
        if not lost:
            return text
        text = f"the connection was lost while logging in: {text}"
        if tls is None:
            return f"{text} (if Redis serves TLS on this port, use a rediss:// URL)"
        if not tls.cert_file:
            return f"{text} (does Redis require a client certificate? set redis.tls.cert_file and key_file)"
        return text

    def _lost(self, conn: _Connection, reason: str) -> None:
        if conn is not self._conn:
            return  # a connection that never became current (failed login) or was replaced
        self._conn = None
        if self._closed:
            return
        log.warning("rate-limit redis %s failed: %s; reconnecting", self.address, reason)
        self._healthy = False
        self._reason = reason
        if self._connector is None:
            self._connector = asyncio.get_running_loop().create_task(self._connect(_BACKOFF_FIRST))


class _LoginLostError(Exception):
    """The connection was made, then lost before the login answered; ``cause``: why it was lost."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause

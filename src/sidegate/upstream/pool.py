"""A keep-alive pool per endpoint: idle connections lent to requests, most recently used first.

Deciding is kept apart from doing: :meth:`EndpointPool.acquire` only hands out an idle connection
(or None); opening a new one is :meth:`connect`, a coroutine the caller runs when it must.
A pool retired by a config reload closes its idle connections and every connection given back.

Endpoint state for the admin API costs nothing per request: only a failure (the cold path) is
written down, by :meth:`EndpointPool.failed`; :meth:`EndpointPool.report` later infers success
from what the pool keeps anyway (a connection opened, or one given back, after that failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
from typing import Any

from sidegate.config.snapshot import Endpoint
from sidegate.errors import UpstreamFailure, connect_error, connect_refused, connect_timeout
from sidegate.server.timers import Sweeper
from sidegate.upstream.connection import ConnectionOwner, UpstreamConnection
from sidegate.upstream.tls_origin import TlsOrigin, tls_failure


class ConnectFailedError(Exception):
    def __init__(self, failure: UpstreamFailure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


class EndpointPool(ConnectionOwner):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        endpoint: Endpoint,
        sweeper: Sweeper,
        *,
        max_idle: int = 128,
        idle_timeout: float = 60.0,
        buffer_high_water: int = 64 * 1024,
        chunk_line: int = 4096,
        tls: TlsOrigin | None = None,
    ) -> None:
        super().__init__(loop, endpoint, sweeper, buffer_high_water=buffer_high_water, chunk_line=chunk_line)
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.idle: list[UpstreamConnection] = []
        self.retired = False
        self.tls = tls  # None: plain TCP (every inbound pool)
        self.connects = 0  # connections opened, for stats and tests
        # The last failure (cold path only): its kind, when (wall and loop clock), connects then.
        self.failure_kind = ""
        self.failure_at = 0.0
        self.failure_clock = 0.0
        self.failure_connects = 0

    def acquire(self) -> UpstreamConnection | None:
        """An idle keep-alive connection, or None if a new one must be opened."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if transport is not None and not transport.is_closing():
                return conn
            conn.close()
        return None

    async def connect(self, timeout: float) -> UpstreamConnection:
        """Open a new connection; raises :class:`ConnectFailedError` with the reason."""
        name = str(self.endpoint)
        tls = self.tls
        try:
            if tls is None:
                coro = self.loop.create_connection(
                    lambda: UpstreamConnection(self), self.endpoint.host, self.endpoint.port
                )
            else:
                coro = self.loop.create_connection(
                    lambda: UpstreamConnection(self),
                    self.endpoint.host,
                    self.endpoint.port,
                    ssl=tls.context,
                    server_hostname=tls.server_name,
                    ssl_handshake_timeout=timeout or None,
                )
            _, conn = await (asyncio.wait_for(coro, timeout) if timeout else coro)
        except TimeoutError:
            raise self._connect_failed(connect_timeout(name, timeout)) from None
        except ConnectionRefusedError:
            raise self._connect_failed(connect_refused(name)) from None
        except ssl.SSLError as exc:  # before OSError, its base: a verify failure is no refusal
            raise self._connect_failed(tls_failure(name, exc)) from None
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                raise self._connect_failed(connect_refused(name)) from None
            if isinstance(exc, socket.gaierror):
                raise self._connect_failed(connect_error(name, f"cannot resolve host: {exc}")) from None
            raise self._connect_failed(connect_error(name, exc.strerror or str(exc))) from None
        self.connects += 1
        return conn

    def _connect_failed(self, failure: UpstreamFailure) -> ConnectFailedError:
        self.failed(failure)
        return ConnectFailedError(failure)

    def failed(self, failure: UpstreamFailure) -> None:
        """Note an attempt to this endpoint that failed (called on failure paths only)."""
        self.failure_kind = failure.kind
        self.failure_at = time.time()
        self.failure_clock = self.clock()
        self.failure_connects = self.connects

    def release(self, conn: UpstreamConnection) -> None:
        """Take back a connection whose response is complete and that may be reused."""
        conn.detach()
        if self.retired or len(self.idle) >= self.max_idle or not conn.usable:
            conn.close()
            return
        conn.deadline = self.clock() + self.idle_timeout if self.idle_timeout else 0.0
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        """A connection closed: forget it if it was idle here."""
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def retire(self) -> None:
        """No longer used by the current config: close idle connections now, the rest when done."""
        self.retired = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

    def report(self) -> dict[str, Any]:
        """This endpoint's state for the admin API (plain values; see ``ClusterSet.report``).

        ``state`` is ``unknown`` before any connection or failure, ``failing`` when nothing has
        succeeded since the last failure, else ``ok``. Success is seen without per-request work: a
        connection opened after the failure, or one given back to the pool after it (its idle
        deadline was set at that moment). ``last_ok`` is when a connection was last given back,
        as far as the idle connections still tell.
        """
        released = (
            [c.deadline - self.idle_timeout for c in self.idle if c.deadline] if self.idle_timeout else []
        )
        last_release = max(released, default=0.0)
        failure: dict[str, Any] | None = None
        if not self.failure_kind:
            state = "ok" if self.connects else "unknown"
        else:
            failure = {"kind": self.failure_kind, "at": self.failure_at}
            recovered = self.connects > self.failure_connects or last_release > self.failure_clock
            state = "ok" if recovered else "failing"
        wall_offset = time.time() - self.clock()
        return {
            "address": str(self.endpoint),
            "state": state,
            "idle": len(self.idle),
            "connects": self.connects,
            "last_failure": failure,
            "last_ok": last_release + wall_offset if last_release else None,
        }

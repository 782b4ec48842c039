"""A keep-alive pool per endpoint: idle connections lent to requests, most recently used first.

Deciding is kept apart from doing: :meth:`EndpointPool.acquire` only hands out an idle connection
(or None); opening a new one is :meth:`connect`, a coroutine the caller runs when it must.
A pool retired by a config reload closes its idle connections and every connection given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket

from sidegate.config.snapshot import Endpoint
from sidegate.errors import UpstreamFailure, connect_error, connect_refused, connect_timeout
from sidegate.server.timers import Sweeper
from sidegate.upstream.connection import UpstreamConnection


class ConnectFailedError(Exception):
    def __init__(self, failure: UpstreamFailure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


class EndpointPool:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        endpoint: Endpoint,
        sweeper: Sweeper,
        *,
        max_idle: int = 128,
        idle_timeout: float = 60.0,
        buffer_high_water: int = 64 * 1024,
    ) -> None:
        self.loop = loop
        self.clock = loop.time
        self.endpoint = endpoint
        self.sweeper = sweeper
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.buffer_high_water = buffer_high_water
        self.idle: list[UpstreamConnection] = []
        self.retired = False
        self.connects = 0  # connections opened, for stats and tests

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
        try:
            coro = self.loop.create_connection(
                lambda: UpstreamConnection(self), self.endpoint.host, self.endpoint.port
            )
            _, conn = await (asyncio.wait_for(coro, timeout) if timeout else coro)
        except TimeoutError:
            raise ConnectFailedError(connect_timeout(name, timeout)) from None
        except ConnectionRefusedError:
            raise ConnectFailedError(connect_refused(name)) from None
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                raise ConnectFailedError(connect_refused(name)) from None
            if isinstance(exc, socket.gaierror):
                raise ConnectFailedError(connect_error(name, f"cannot resolve host: {exc}")) from None
            raise ConnectFailedError(connect_error(name, exc.strerror or str(exc))) from None
        self.connects += 1
        return conn

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

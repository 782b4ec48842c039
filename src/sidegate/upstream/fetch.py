"""A request of Sidegate's own, sent through an endpoint's pool: the background user.

Proxied requests are not the only ones an app gets: a cache revalidation (``stale-while-
revalidate``) and, next, an active health check send a request no client waits for. :func:`fetch`
sends one the way proxied requests go: on a keep-alive connection lent by the endpoint's
:class:`~sidegate.upstream.pool.EndpointPool` (a new one only when none is idle), through the same
:class:`~sidegate.upstream.connection.UpstreamConnection` and its strict response parser, and the
connection goes back to the pool when the response allows. The caller brings the complete head
(a route's request: :func:`sidegate.request.upstream_head.upstream_head`, the one head builder).

The response is buffered, bounded in time (``timeout``: from the start to the last byte) and in
size (``max_body`` body bytes). ``done`` gets :data:`~sidegate.http.messages.Fetched`, or None
when anything failed (logged); nothing here raises. A pooled connection the app had closed while
it sat idle is retried once on a new one, as the proxy does for a request without a body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sidegate.errors import UpstreamFailure
from sidegate.http.messages import Fetched, Headers
from sidegate.http.response_parser import ParsedResponse
from sidegate.upstream.connection import UpstreamConnection, UpstreamUser
from sidegate.upstream.pool import ConnectFailedError, EndpointPool

log = logging.getLogger("sidegate.upstream")

_TASKS: set[asyncio.Task[None]] = set()  # connects in progress (kept from the GC)


def fetch(
    pool: EndpointPool,
    head: bytes,
    *,
    connect_timeout: float,
    timeout: float,
    max_body: int,
    clock: Callable[[], float],
    done: Callable[[Fetched | None], None],
    purpose: str = "background request",
) -> None:
    """Send ``head`` (a complete request head, no body) to ``pool``'s endpoint in the background.

    ``clock`` stamps the request and response times that ``done`` gets; ``purpose`` names the
    request in the log line of a failure ("cache revalidation").
    """
    BackgroundFetch(
        pool,
        head,
        connect_timeout=connect_timeout,
        timeout=timeout,
        max_body=max_body,
        clock=clock,
        done=done,
        purpose=purpose,
    ).start()


class BackgroundFetch(UpstreamUser):
    """One background request and its buffered response (see the module's docstring)."""

    def __init__(
        self,
        pool: EndpointPool,
        head: bytes,
        *,
        connect_timeout: float,
        timeout: float,
        max_body: int,
        clock: Callable[[], float],
        done: Callable[[Fetched | None], None],
        purpose: str,
        log_failures: bool = True,
        head_request: bool = False,
    ) -> None:
        self.pool = pool
        self.head = head
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_body = max_body
        self.clock = clock
        self.done = done
        self.purpose = purpose
        self.log_failures = log_failures  # False: the caller reports ``problem`` itself
        self.head_request = head_request  # a HEAD: the response has no body, whatever it says
        self.conn: UpstreamConnection | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.finished = False
        self.retried = False
        self.request_time = 0.0
        self.status = 0
        self.headers: Headers = []
        self.keep_alive = False
        self.body: list[bytes] = []
        self.size = 0
        self.problem = ""  # why it failed, when ``done`` got None

    def start(self) -> None:
        self.request_time = self.clock()
        if self.timeout:
            self.timer = self.pool.loop.call_later(self.timeout, self._expired)
        conn = self.pool.acquire()
        if conn is not None:
            self._attach(conn)
        else:
            self._connect()

    def _connect(self) -> None:
        task = self.pool.loop.create_task(self._open())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    async def _open(self) -> None:
        try:
            conn = await self.pool.connect(self.connect_timeout)
        except ConnectFailedError as failed:
            self._fail(failed.failure.detail)
            return
        if self.finished:  # timed out meanwhile: the new connection is still clean
            self.pool.release(conn)
            return
        self._attach(conn)

    def _attach(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        window = self.timeout
        conn.attach(self, self.head_request, window, window, True, send=window)
        conn.send(self.head)

    # -- endings -------------------------------------------------------------------------------

    def _expired(self) -> None:
        self.timer = None
        self._fail(f"no complete response within {self.timeout:g}s")

    def _fail(self, why: str) -> None:
        if self.finished:
            return
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()  # mid-response: it cannot be reused
        if self.log_failures:
            log.info("%s to %s failed: %s", self.purpose, self.pool.endpoint, why)
        self.problem = why
        self._finish(None)

    def _finish(self, result: Fetched | None) -> None:
        self.finished = True
        self.body = []
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()
        try:
            self.done(result)
        except Exception:  # a bug in the callback must not kill the loop's callback silently
            log.exception("%s: handling the response failed", self.purpose)

    # -- UpstreamUser --------------------------------------------------------------------------

    def upstream_read_begin(self) -> None:
        pass

    def upstream_read_end(self) -> None:
        pass

    def upstream_writable(self, writable: bool) -> None:
        pass  # one head: nothing more to write or hold

    def upstream_failed(self, failure: UpstreamFailure) -> None:
        self.conn = None
        if self.finished:
            return
        if failure.retryable and failure.kind == "reset" and not self.retried:
            self.retried = True  # a pooled connection the app had closed: once more on a new one
            self._restart()
            return
        self._fail(f"{failure.kind}: {failure.detail}")

    def _restart(self) -> None:
        self.status = self.size = 0
        self.headers, self.body = [], []
        self._connect()

    def on_informational(self, head: ParsedResponse) -> None:
        pass  # 100 Continue, 103 Early Hints: the final response follows

    def on_response_head(self, head: ParsedResponse) -> None:
        if self.finished:
            return
        if head.switching:
            self._fail("101 Switching Protocols to a request that asked for no upgrade")
            return
        self.status = head.status
        self.headers = head.headers
        self.keep_alive = head.keep_alive

    def on_response_body(self, data: bytes) -> None:
        if self.finished:
            return
        self.size += len(data)
        if self.size > self.max_body:
            self._fail(f"response body larger than {self.max_body} bytes")
            return
        self.body.append(data)

    def on_response_end(self) -> None:
        if self.finished:
            return
        conn, self.conn = self.conn, None
        if conn is not None:
            if self.keep_alive:
                self.pool.release(conn)
            else:
                conn.close()
        self._finish((self.status, self.headers, b"".join(self.body), self.request_time, self.clock()))

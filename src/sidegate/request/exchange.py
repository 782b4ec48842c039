"""One request and its response: the phase loop that :class:`~sidegate.request.proxy.Proxy` starts.

The exchange implements both sides' callbacks: the inbound connection feeds it the request body,
the upstream connection feeds it the response. It holds upstream-bound bytes until the client
read that carried them has parsed cleanly, corks client-bound bytes for one upstream read, and
turns failures into JSON answers (or a cut connection once part of the response is out).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final

from sidegate.errors import UpstreamFailure
from sidegate.filters.base import RequestContext, Wait
from sidegate.http.messages import LocalResponse, ReadyResponse
from sidegate.http.wire import join_head
from sidegate.http.writer import (
    LAST_CHUNK,
    STATUS_LINES,
    chunk,
    error_response,
    header_block,
    status_line,
)
from sidegate.observe.trace_context import TraceContext
from sidegate.request.upstream_head import upstream_head
from sidegate.server.inbound import Exchange as InboundExchange
from sidegate.upstream.connection import UpstreamUser
from sidegate.upstream.pool import ConnectFailedError, EndpointPool

if TYPE_CHECKING:
    from sidegate.http.request_head import ParsedRequest
    from sidegate.http.response_parser import ParsedResponse
    from sidegate.request.plan import RoutePlan
    from sidegate.request.proxy import Proxy
    from sidegate.server.inbound import InboundConnection
    from sidegate.upstream.connection import UpstreamConnection

_RETRY_SAFE: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
_DISCARD_LIMIT: Final = 64 * 1024
_STATUS_LINES: Final = STATUS_LINES


class Exchange(UpstreamUser, InboundExchange):
    """One request and its response; implements both the inbound and the upstream callbacks."""

    __slots__ = (
        "answered_by",
        "body_seen",
        "bytes_in",
        "bytes_out",
        "chunk_out",
        "conn",
        "ctx",
        "deferred",
        "ended_at",
        "finished",
        "flag",
        "head",
        "outbox",
        "pending",
        "pool",
        "proxy",
        "replacement",
        "request_done",
        "request_id",
        "request_id_line",
        "response_at",
        "retried",
        "route",
        "sent_up",
        "started_at",
        "status",
        "trace",
        "tries",
        "tunnel",
        "upstream",
        "upstream_at",
        "upstream_head",
        "upstream_keep_alive",
        "view",
    )

    def __init__(self, proxy: Proxy, conn: InboundConnection, head: ParsedRequest) -> None:
        self.proxy = proxy
        self.conn = conn
        self.head = head
        self.view = proxy.view
        self.started_at = proxy.clock()
        request_id = head.request_id or proxy.request_id()
        self.request_id = request_id
        self.request_id_line = b"X-Request-Id: " + request_id + b"\r\n"
        # A request without a body is complete with its head.
        self.request_done = not (head.chunked or head.content_length)
        self.route: RoutePlan | None = None
        self.ctx: RequestContext | None = None
        self.upstream: UpstreamConnection | None = None
        self.pool: EndpointPool | None = None
        self.pending: list[bytes] | None = None  # request bytes waiting for a connection
        self.upstream_head = b""
        self.deferred: LocalResponse | ReadyResponse | None = None  # sent once the body is read
        self.replacement: LocalResponse | ReadyResponse | None = None  # sent instead of the upstream's
        self.outbox: list[bytes] | None = None  # upstream bytes held until the client read parses
        self.chunk_out = False  # re-chunk the response body for the client
        self.retried = False
        self.finished = False
        self.tunnel = False
        self.sent_up = False  # any byte written to the upstream connection
        self.upstream_keep_alive = False  # the response allows reusing the upstream connection
        self.status = 0
        self.body_seen = 0
        # What the access log, traces and explain read once the exchange is over.
        self.flag = ""  # why it ended as it did, when not simply answered by the app
        self.answered_by = -1  # index in the route's on_request chain of the filter that answered
        self.tries: list[tuple[str, str]] | None = None  # failed upstream attempts: (endpoint, why)
        self.bytes_in = 0  # request body bytes from the client
        self.bytes_out = 0  # response body bytes to the client
        self.upstream_at = 0.0  # when the upstream request was started (0: never)
        self.response_at = 0.0  # when the upstream response head arrived
        self.ended_at = 0.0
        sampler = proxy.sampler
        self.trace: TraceContext | None = None
        if sampler is not None:  # ids cut from a batch of random bytes: a slice each (see new_ids)
            self.trace = sampler.start(head.traceparent)
        proxy.metrics.requests_active += 1

    # -- inbound side --------------------------------------------------------------------------

    def start(self) -> None:
        """Route, filter, and send the head upstream (or answer locally)."""
        head = self.head
        addresses = self.view.client_addresses
        if addresses is not None and not head.plain_forwarding:  # behind trusted proxies
            head.client_ip = addresses.client(head)
        matched = self.view.router.match(head)
        if matched is None:
            self.flag = "no_route"
            self._answer(error_response(404, "no_route", f"no route for {_describe(head)}"))
            return
        self.route = route = self.view.plans[matched]
        if head.content_length is not None and head.content_length > route.max_body:
            self.flag = "body_too_large"
            self._answer(
                error_response(413, "body_too_large", f"body over {route.max_body} bytes", close=True)
            )
            return
        if route.filters:
            self.ctx = RequestContext(route.name, head.host_header)
            if route.on_request:
                self._run_request_filters(0)
                return
        self._forward()

    def _run_request_filters(self, first: int) -> None:
        """The route's ``on_request`` chain from filter ``first``; forwards when none answers."""
        route, ctx = self.route, self.ctx
        assert route is not None and ctx is not None
        chain = route.on_request
        for index in range(first, len(chain)):
            answer = chain[index].on_request(self.head, ctx)
            if answer is None:
                continue
            if isinstance(answer, Wait):
                self.proxy.spawn(self._wait(answer, index))
            else:
                self.answered_by = index
                self._answer(answer)
            return
        self._forward()

    async def _wait(self, wait: Wait, index: int) -> None:
        """A filter parked the request (a cache miss another request is already fetching)."""
        with contextlib.suppress(TimeoutError):  # waited long enough: go on without it
            await asyncio.wait_for(asyncio.shield(wait.until), wait.timeout)
        if not self.finished:
            self._run_request_filters(index)

    def _forward(self) -> None:
        """Build the upstream head and send it on a pooled (or new) connection."""
        head = self.head
        route = self.route
        assert route is not None
        ctx = self.ctx
        self.upstream_head = upstream_head(
            head,
            route,
            self.view.forwarding.lines(head),
            identity=ctx.upstream_lines if ctx is not None else b"",
            request_id_line=self.request_id_line,
            trace=self.trace,
        )
        self.upstream_at = self.proxy.clock()
        self.pool = pool = route.single_pool or route.cluster.pick()
        upstream = pool.acquire()
        if upstream is not None:
            self._attach(upstream)
        else:
            self.pending = []
            self.proxy.spawn(self._connect(pool))

    def request_body(self, data: bytes) -> None:
        if self.finished or self.deferred is not None:
            return
        head = self.head
        self.bytes_in += len(data)
        if head.chunked:
            self.body_seen += len(data)
            route = self.route
            if route is not None and self.body_seen > route.max_body:
                self.flag = "body_too_large"
                self._fail_local(
                    error_response(413, "body_too_large", f"body over {route.max_body} bytes", close=True)
                )
                return
            data = chunk(data)
        self._send_up(data)

    def request_end(self) -> None:
        if self.request_done:  # a request without a body: complete since its head
            return
        self.request_done = True
        if self.finished:
            return
        deferred = self.deferred
        if deferred is not None:
            self.deferred = None
            self._send_local(deferred)
            return
        if self.head.chunked:
            self._send_up(LAST_CHUNK)
        if self.upstream is not None:
            self.upstream.request_sent()

    def _send_up(self, data: bytes) -> None:
        """Request bytes for the upstream: held while connecting, or until the client read that
        carried them has parsed cleanly (so a request found broken later in the same read never
        reaches the app), else written at once."""
        upstream = self.upstream
        if upstream is None:
            pending = self.pending
            if pending is not None:
                pending.append(data)
                if sum(map(len, pending)) > self.conn_high_water:
                    self.conn.pause_reading()
        elif self.conn.feeding:
            outbox = self.outbox
            if outbox is None:
                self.outbox = [data]
            else:
                outbox.append(data)
        else:
            self.sent_up = True
            upstream.send(data)

    def flush_upstream(self) -> None:
        """The client read that produced held bytes parsed cleanly: send them."""
        outbox = self.outbox
        if outbox is not None:
            self.outbox = None
            upstream = self.upstream
            if upstream is not None:
                self.sent_up = True
                upstream.send(outbox[0] if len(outbox) == 1 else b"".join(outbox))

    def client_lost(self) -> None:
        if self.finished:
            return
        upstream, self.upstream = self.upstream, None
        self.outbox = None
        if upstream is not None:
            if not self.sent_up and self.pool is not None:
                self.pool.release(upstream)  # nothing was written on it: still clean
            else:
                upstream.close()
        self.flag = "client_closed"
        self._complete(499, keep_alive=False, notify=False)

    def client_writable(self, writable: bool) -> None:
        upstream = self.upstream
        if upstream is not None:
            if writable:
                upstream.resume_reading()
            else:
                upstream.pause_reading()

    def client_stalled(self) -> None:
        """The client took nothing for ``send_timeout``: the response is cut (the connection is
        being aborted), the upstream connection closed, as it cannot be reused mid-response."""
        if self.finished:
            return
        upstream, self.upstream = self.upstream, None
        self.outbox = None
        if upstream is not None:
            upstream.close()
        self.flag = "client_send_timeout"
        self._complete(self.status or 499, keep_alive=False, notify=False)

    @property
    def conn_high_water(self) -> int:
        return self.view.snapshot.limits.buffer_high_water

    # -- upstream side -------------------------------------------------------------------------

    async def _connect(self, pool: EndpointPool) -> None:
        route = self.route
        assert route is not None
        try:
            upstream = await pool.connect(route.connect_timeout)
        except ConnectFailedError as failed:
            self.upstream_failed(failed.failure)
            return
        if self.finished:
            pool.release(upstream)
            return
        self._attach(upstream)

    def _attach(self, upstream: UpstreamConnection) -> None:
        route = self.route
        assert route is not None
        self.upstream = upstream
        head_request = self.head.method == b"HEAD"
        upstream.attach(
            self,
            head_request,
            route.response_timeout,
            route.idle_timeout,
            self.request_done,
            send=route.send_timeout,
        )
        if not self.conn.writable:  # the client has not taken the previous response yet
            upstream.pause_reading()
        pending, self.pending = self.pending, None
        if pending:
            self._send_up(b"".join([self.upstream_head, *pending]))
            self.conn.resume_reading()
        else:
            self._send_up(self.upstream_head)

    def upstream_read_begin(self) -> None:
        self.conn.cork()  # the response bytes of one upstream read leave in one write

    def upstream_read_end(self) -> None:
        self.conn.uncork()

    def upstream_writable(self, writable: bool) -> None:
        if writable:
            self.conn.resume_reading()
        else:
            self.conn.pause_reading()

    def on_informational(self, head: ParsedResponse) -> None:
        if self.head.version == b"1.1" and not self.finished:
            self.conn.send(status_line(head.status, head.reason) + header_block(head.headers) + b"\r\n")

    def on_response_head(self, head: ParsedResponse) -> None:
        if self.finished:
            return
        upstream = self.upstream
        self.response_at = self.proxy.clock()
        if upstream is not None and upstream.idle_window:  # from now on only the idle window applies
            upstream.deadline = self.proxy.loop_time() + upstream.idle_window
        elif upstream is not None:
            upstream.deadline = 0.0
        route = self.route
        assert route is not None
        if head.switching:
            self._switch_protocols(head)
            return
        self.status = status = head.status
        if route.on_response:
            ctx = self.ctx
            assert ctx is not None
            ctx.status = status
            for flt in route.on_response:
                answer = flt.on_response(self.head, head, ctx)
                if answer is not None:
                    self.replacement = answer
                    self.upstream_keep_alive = head.keep_alive
                    return
        self.upstream_keep_alive = head.keep_alive
        request = self.head
        edits = route.response_headers
        headers = head.headers if edits is None else edits.apply(head.headers)
        parts: list[bytes] = []  # what follows the fields
        if edits is not None:
            parts.append(edits.block)
        view = self.view
        if head.via:
            parts += (b"Via: ", head.via + b", " + view.via if view.via else head.via, b"\r\n")
        else:
            parts.append(view.via_line)
        parts.append(self.request_id_line)
        keep = request.keep_alive and self.conn.keep_alive_wanted
        if head.content_length is not None:
            parts.append(b"Content-Length: ")
            parts.append(head.content_length_raw)
            parts.append(b"\r\n")
        elif request.method == b"HEAD" or status in {204, 304}:
            pass
        elif request.version == b"1.1":
            parts.append(b"Transfer-Encoding: chunked\r\n")
            self.chunk_out = True
        else:
            keep = False  # an HTTP/1.0 client reads this body until the connection closes
        if not keep:
            parts.append(b"Connection: close\r\n\r\n")
            request.keep_alive = False
        elif request.version != b"1.1":
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self.conn.send(join_head([_STATUS_LINES.get(status) or status_line(status)], headers, parts))

    def on_response_body(self, data: bytes) -> None:
        if self.finished or self.replacement is not None:
            return
        self.bytes_out += len(data)
        self.conn.send(chunk(data) if self.chunk_out else data)
        route = self.route
        if route is not None and route.on_response_body:
            ctx = self.ctx
            assert ctx is not None
            for flt in route.on_response_body:
                flt.on_response_body(data, ctx)

    def on_response_end(self) -> None:
        if self.finished:
            return
        if self.chunk_out:
            self.conn.send(LAST_CHUNK)
        route = self.route
        if route is not None and route.on_response_end and self.replacement is None:
            ctx = self.ctx
            assert ctx is not None
            for flt in route.on_response_end:
                flt.on_response_end(ctx)
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            pool = self.pool
            if self.request_done and self.upstream_keep_alive and pool is not None:
                pool.release(upstream)
            else:
                upstream.close()
        replacement = self.replacement
        if replacement is not None:
            self.status = 0
            self._send_local(replacement)
            return
        self._complete(self.status, keep_alive=self.head.keep_alive)

    def upstream_failed(self, failure: UpstreamFailure) -> None:
        if self.finished:
            return
        self.upstream = None
        pool = self.pool
        endpoint = str(pool.endpoint) if pool else ""
        self.proxy.metrics.upstream_failure(self.route.upstream if self.route else "", endpoint, failure.kind)
        if self.tries is None:
            self.tries = []
        self.tries.append((endpoint, f"{failure.kind}: {failure.detail}"))
        self.flag = "upstream_" + failure.kind
        if self.tunnel:
            self.conn.close()
            self._complete(101, keep_alive=False)
            return
        replacement = self.replacement
        if replacement is not None:  # the upstream's response was being dropped anyway
            self.status = 0
            self._send_local(replacement)
            return
        if self.status and self.conn.retract():  # its head was still in the cork buffer
            self.status = 0
            self.chunk_out = False
            self.bytes_out = 0
        if self.status:  # part of the response is out: the client sees a cut connection
            self.flag += "_mid_response"
            self.conn.close()
            self._complete(self.status, keep_alive=False, notify=False)
            return
        if (
            failure.retryable
            and failure.kind == "reset"
            and not self.retried
            and not self.head.has_body
            and self.head.method in _RETRY_SAFE
            and pool is not None
        ):
            self.retried = True  # a pooled connection the app had closed: once more on a new one
            self.flag = ""
            self.pending = []
            self.proxy.spawn(self._connect(pool))
            return
        route = self.route
        if route is not None and route.on_upstream_failure:
            ctx = self.ctx
            assert ctx is not None
            for flt in route.on_upstream_failure:
                answer = flt.on_upstream_failure(self.head, failure.kind, ctx)
                if answer is not None:
                    self._send_local(answer)
                    return
        self._send_local(error_response(failure.status, failure.kind, failure.detail))

    # -- endings -------------------------------------------------------------------------------

    def _switch_protocols(self, head: ParsedResponse) -> None:
        upstream = self.upstream
        request = self.head
        conn = self.conn
        if not request.upgrade or upstream is None or conn.transport is None:
            self.upstream_failed(UpstreamFailure("protocol_error", 502, "101 without an Upgrade request"))
            return
        via = self.view.via
        conn.send(
            status_line(101, head.reason)
            + header_block(head.headers)
            + b"Connection: Upgrade\r\nUpgrade: "
            + (head.upgrade or request.upgrade)
            + b"\r\n"
            + (b"Via: " + via + b"\r\n" if via else b"")
            + b"X-Request-Id: "
            + self.request_id
            + b"\r\n\r\n"
        )
        self.tunnel = True
        self.status = 101
        route = self.route
        assert route is not None
        upstream.start_tunnel(conn.transport, route.idle_timeout)
        early = conn.start_tunnel(upstream)
        if early:
            upstream.tunnel_write(early)
        self.proxy.metrics.streams_active += 1

    def _answer(self, response: LocalResponse | ReadyResponse) -> None:
        """Answer locally now if the request is fully read, else once its body has been read."""
        length = self.head.content_length
        if self.request_done or not self.head.has_body or response.close or self.head.expect_continue:
            self._send_local(response)  # a client waiting for 100 Continue gets the answer now
        elif length is not None and length <= _DISCARD_LIMIT:
            self.deferred = response  # read and drop the small body so the connection stays usable
        else:
            self._send_local(response)  # not fully read: answered, then closed

    def _fail_local(self, response: LocalResponse) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close()
        if self.status:
            self.conn.close()
            self._complete(self.status, keep_alive=False, notify=False)
        else:
            self._send_local(response)

    def _send_local(self, response: LocalResponse | ReadyResponse) -> None:
        self.status = response.status
        self.bytes_out = 0 if self.head.method == b"HEAD" else len(response.body)
        keep = self.head.keep_alive and self.request_done and not response.close
        head_only = self.head.method == b"HEAD"
        if isinstance(response, ReadyResponse):
            if not keep:
                response = ReadyResponse(response.status, response.head, response.body, close=True)
            self._complete(response.status, keep_alive=keep, notify=False)
            self.conn.send_ready(response, self.request_id, head_only=head_only)
            return
        if not keep:
            response = LocalResponse(
                response.status, response.body, response.headers, response.content_type, close=True
            )
        self._complete(response.status, keep_alive=keep, notify=False)
        self.conn.send_local(response, self.request_id, head_only=head_only)

    def _complete(self, status: int, *, keep_alive: bool, notify: bool = True) -> None:
        self.finished = True
        self.status = status
        # The proxy remembers finished exchanges (explain): nothing bulky stays with them.
        self.pending = self.outbox = None
        route = self.route
        proxy = self.proxy
        self.ended_at = now = proxy.clock()
        seconds = now - self.started_at
        if route is None:
            self.view.no_route_stats.observe(self.head.method, status, seconds)
        else:
            ctx = self.ctx
            if route.metrics:
                if ctx is not None and ctx.consumer:
                    stats = route.stats.for_consumer(ctx.consumer, ctx.tenant)
                    stats.observe(self.head.method, status, seconds)
                else:
                    route.stats.observe(self.head.method, status, seconds)
                pool = self.pool
                if pool is not None and self.upstream_at:
                    route.endpoint_stats[pool].observe(now - self.upstream_at, status)
            if route.on_log:
                assert ctx is not None
                ctx.status = status
                for flt in route.on_log:
                    flt.on_log(self.head, ctx)
        metrics = proxy.metrics
        metrics.requests_active -= 1
        metrics.bytes_received += self.bytes_in
        metrics.bytes_sent += self.bytes_out
        if self.tunnel:
            metrics.streams_active -= 1
        proxy.record(self)
        if notify:
            self.conn.finish(keep_alive and self.request_done)


def _describe(head: ParsedRequest) -> str:
    host = head.host.decode("latin-1")
    return f"{head.method.decode('latin-1')} {host}{head.path.decode('latin-1')}"

"""The upstream leg of an exchange: the request's head and body on their way to the app.

:class:`Forwarder` is the base of :class:`~sidegate.request.exchange.Exchange` that owns the
upstream connection's side of a request: it builds the upstream head (one builder,
:mod:`sidegate.request.upstream_head`), borrows a pooled connection or opens one, holds request
bytes while connecting and until the client read that carried them has parsed cleanly (so a
request found broken later in the same read never reaches the app), and passes backpressure
both ways. It knows no phase: routing, filters, the response and the endings are the
exchange's. A base class rather than a member, so every call stays a direct native call; its
fields are set by the exchange's ``__init__`` (one constructor per request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidegate.request.upstream_head import upstream_head
from sidegate.upstream.connection import UpstreamUser
from sidegate.upstream.pool import ConnectFailedError, EndpointPool

if TYPE_CHECKING:
    from sidegate.filters.context import RequestContext
    from sidegate.http.request_head import ParsedRequest
    from sidegate.request.plan import RoutePlan
    from sidegate.request.record import RequestRecord
    from sidegate.request.services import RequestServices
    from sidegate.request.view import View
    from sidegate.server.stream import ResponseChannel
    from sidegate.upstream.connection import UpstreamConnection


class Forwarder(UpstreamUser):
    """The upstream leg of one request (see the module's docstring)."""

    services: RequestServices
    channel: ResponseChannel
    request: ParsedRequest
    view: View
    record: RequestRecord
    request_id_line: bytes
    route: RoutePlan | None
    ctx: RequestContext | None
    request_done: bool  # the whole request has been read from the client
    finished: bool
    upstream: UpstreamConnection | None
    pool: EndpointPool | None
    pending: list[bytes] | None  # request bytes waiting for a connection
    outbox: list[bytes] | None  # upstream bytes held until the client read parses
    upstream_head: bytes
    sent_up: bool  # any byte written to the upstream connection

    def _forward(self) -> None:
        """Build the upstream head and send it on a pooled (or new) connection."""
        head = self.request
        route = self.route
        assert route is not None
        ctx = self.ctx
        self.upstream_head = upstream_head(
            head,
            route,
            self.view.forwarding.lines(head),
            identity=ctx.upstream_lines if ctx is not None else b"",
            request_id_line=self.request_id_line,
            trace=self.record.trace,
        )
        self.record.upstream_at = self.services.clock()
        self.pool = pool = route.single_pool or route.cluster.pick()
        upstream = pool.acquire()
        if upstream is not None:
            self._attach(upstream)
        else:
            self.pending = []
            self.services.spawn(self._connect(pool))

    def _send_up(self, data: bytes) -> None:
        """Request bytes for the upstream: held while connecting, or until the client read that
        carried them has parsed cleanly (so a request found broken later in the same read never
        reaches the app), else written at once."""
        upstream = self.upstream
        if upstream is None:
            pending = self.pending
            if pending is not None:
                pending.append(data)
                if sum(map(len, pending)) > self.high_water:
                    self.channel.pause_reading()
        elif self.channel.feeding:
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

    def client_writable(self, writable: bool) -> None:
        upstream = self.upstream
        if upstream is not None:
            if writable:
                upstream.resume_reading()
            else:
                upstream.pause_reading()

    @property
    def high_water(self) -> int:
        return self.view.snapshot.limits.buffer_high_water

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
        head_request = self.request.method == b"HEAD"
        upstream.attach(
            self,
            head_request,
            route.response_timeout,
            route.idle_timeout,
            self.request_done,
            send=route.send_timeout,
        )
        if not self.channel.writable:  # the client has not taken the previous response yet
            upstream.pause_reading()
        pending, self.pending = self.pending, None
        if pending:
            self._send_up(b"".join([self.upstream_head, *pending]))
            self.channel.resume_reading()
        else:
            self._send_up(self.upstream_head)

    def upstream_read_begin(self) -> None:
        self.channel.cork()  # the response bytes of one upstream read leave in one write

    def upstream_read_end(self) -> None:
        self.channel.uncork()

    def upstream_writable(self, writable: bool) -> None:
        if writable:
            self.channel.resume_reading()
        else:
            self.channel.pause_reading()

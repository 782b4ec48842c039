"""One request and its response: the phase loop that :class:`~sidegate.request.proxy.Proxy` starts.

The exchange is the request logic's side of the stream interface (:mod:`sidegate.server.stream`):
the client's connection feeds it request events and takes response events from it, the upstream
connection feeds it the response. It never touches a transport nor frames for the client (the
connection does). It holds upstream-bound bytes until the client read that carried them has
parsed cleanly, corks the client side for one upstream read, turns failures into JSON answers (or
a cut connection once part of the response is out), and writes what happened into the request's
:class:`~sidegate.request.record.RequestRecord`.

Phases: :meth:`Exchange.start` (route, ``on_request`` filters) -> :meth:`Exchange._forward`
(upstream head, pooled connection) -> request events up / response events down
(``on_response*`` filters) -> :meth:`Exchange._complete` (``on_log``, the record), or
:meth:`Exchange.upstream_failed` (one retry of a reset, ``on_upstream_failure``, an error answer).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final

from sidegate.errors import UpstreamFailure
from sidegate.filters.base import RequestContext, Wait
from sidegate.http.messages import LocalResponse, ReadyResponse
from sidegate.http.writer import LAST_CHUNK, chunk, error_response
from sidegate.request.forward import Forwarder
from sidegate.request.record import RequestRecord
from sidegate.server.stream import RequestStream

if TYPE_CHECKING:
    from sidegate.http.request_head import ParsedRequest
    from sidegate.http.response_parser import ParsedResponse
    from sidegate.request.services import RequestServices
    from sidegate.server.stream import ResponseChannel

_RETRY_SAFE: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
_DISCARD_LIMIT: Final = 64 * 1024


class Exchange(Forwarder, RequestStream):
    """One request and its response; the request stream of the client's connection and the
    user of the upstream connection."""

    __slots__ = (
        "body_seen",
        "deferred",
        "replacement",
        "request_id",
        "retried",
        "status",
        "tunnel",
        "upstream_keep_alive",
    )

    def __init__(self, services: RequestServices, channel: ResponseChannel, request: ParsedRequest) -> None:
        self.services = services
        self.channel = channel
        self.request = request
        self.view = services.view
        request_id = request.request_id or services.request_id()
        self.request_id = request_id
        self.request_id_line = b"X-Request-Id: " + request_id + b"\r\n"
        sampler = services.recorder.sampler  # ids cut from a batch of random bytes (see new_ids)
        trace = sampler.start(request.traceparent) if sampler is not None else None
        self.record = RequestRecord(request_id, bool(request.request_id), trace, services.clock())
        # A request without a body is complete with its head.
        self.request_done = not (request.chunked or request.content_length)
        self.route = None
        self.ctx = None
        self.upstream = None
        self.pool = None
        self.pending = None  # request bytes waiting for a connection
        self.upstream_head = b""
        self.deferred: LocalResponse | ReadyResponse | None = None  # sent once the body is read
        self.replacement: LocalResponse | ReadyResponse | None = None  # sent instead of the upstream's
        self.outbox = None  # upstream bytes held until the client read parses
        self.retried = False
        self.finished = False
        self.tunnel = False
        self.sent_up = False  # any byte written to the upstream connection
        self.upstream_keep_alive = False  # the response allows reusing the upstream connection
        self.status = 0  # of the response being sent (0: none yet)
        self.body_seen = 0
        services.metrics.requests_active += 1

    # -- inbound side --------------------------------------------------------------------------

    def start(self) -> None:
        """Route, filter, and send the head upstream (or answer locally)."""
        head = self.request
        addresses = self.view.client_addresses
        if addresses is not None and not head.plain_forwarding:  # behind trusted proxies
            head.client_ip = addresses.client(head)
        matched = self.view.router.match(head)
        if matched is None:
            self.record.flag = "no_route"
            self._answer(error_response(404, "no_route", f"no route for {_describe(head)}"))
            return
        self.route = route = self.view.plans[matched]
        if head.content_length is not None and head.content_length > route.max_body:
            self.record.flag = "body_too_large"
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
            answer = chain[index].on_request(self.request, ctx)
            if answer is None:
                continue
            if isinstance(answer, Wait):
                self.services.spawn(self._wait(answer, index))
            else:
                self.record.answered_by = index
                self._answer(answer)
            return
        self._forward()

    async def _wait(self, wait: Wait, index: int) -> None:
        """A filter parked the request (a cache miss another request is already fetching)."""
        with contextlib.suppress(TimeoutError):  # waited long enough: go on without it
            await asyncio.wait_for(asyncio.shield(wait.until), wait.timeout)
        if not self.finished:
            self._run_request_filters(index)

    def request_body(self, data: bytes) -> None:
        if self.finished or self.deferred is not None:
            return
        self.record.bytes_in += len(data)
        if self.request.chunked:
            self.body_seen += len(data)
            route = self.route
            if route is not None and self.body_seen > route.max_body:
                self.record.flag = "body_too_large"
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
        if self.request.chunked:
            self._send_up(LAST_CHUNK)
        if self.upstream is not None:
            self.upstream.request_sent()

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
        self.record.flag = "client_closed"
        self._complete(499)

    def client_stalled(self) -> None:
        """The client took nothing for ``send_timeout``: the response is cut (the connection is
        being aborted), the upstream connection closed, as it cannot be reused mid-response."""
        if self.finished:
            return
        upstream, self.upstream = self.upstream, None
        self.outbox = None
        if upstream is not None:
            upstream.close()
        self.record.flag = "client_send_timeout"
        self._complete(self.status or 499)

    # -- upstream side -------------------------------------------------------------------------

    def on_informational(self, head: ParsedResponse) -> None:
        if not self.finished:
            self.channel.informational(head.status, head.reason, head.headers)

    def on_response_head(self, head: ParsedResponse) -> None:
        if self.finished:
            return
        response = head
        upstream = self.upstream
        self.record.response_at = self.services.clock()
        if upstream is not None:
            upstream.response_started()
        route = self.route
        assert route is not None
        if response.switching:
            self._switch_protocols(response)
            return
        self.status = status = response.status
        self.upstream_keep_alive = response.keep_alive
        if route.on_response:
            ctx = self.ctx
            assert ctx is not None
            ctx.status = status
            for flt in route.on_response:
                answer = flt.on_response(self.request, response, ctx)
                if answer is not None:
                    self.replacement = answer
                    return
        edits = route.response_headers
        headers = response.headers if edits is None else edits.apply(response.headers)
        added: list[bytes] = []  # the fields Sidegate adds after the app's
        if edits is not None:
            added.append(edits.block)
        view = self.view
        if response.via:
            added.append(b"Via: ")
            added.append(response.via + b", " + view.via if view.via else response.via)
            added.append(b"\r\n")
        else:
            added.append(view.via_line)
        added.append(self.request_id_line)
        length = response.content_length_raw if response.content_length is not None else None
        self.channel.response_head(status, headers, added, length)

    def on_response_body(self, data: bytes) -> None:
        if self.finished or self.replacement is not None:
            return
        self.record.bytes_out += len(data)
        self.channel.response_body(data)
        route = self.route
        if route is not None and route.on_response_body:
            ctx = self.ctx
            assert ctx is not None
            for flt in route.on_response_body:
                flt.on_response_body(data, ctx)

    def on_response_end(self) -> None:
        if self.finished:
            return
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
        self._complete(self.status)
        self.channel.response_end(self.request_done)

    def upstream_failed(self, failure: UpstreamFailure) -> None:
        if self.finished:
            return
        self.upstream = None
        pool = self.pool
        record = self.record
        endpoint = str(pool.endpoint) if pool else ""
        self.services.metrics.upstream_failure(
            self.route.upstream if self.route else "", endpoint, failure.kind
        )
        record.add_try(endpoint, f"{failure.kind}: {failure.detail}")
        record.flag = "upstream_" + failure.kind
        if self.tunnel:
            self.channel.close()
            self._complete(101)
            self.channel.response_end(False)
            return
        replacement = self.replacement
        if replacement is not None:  # the upstream's response was being dropped anyway
            self.status = 0
            self._send_local(replacement)
            return
        if self.status and self.channel.retract():  # its head was still in the cork buffer
            self.status = 0
            record.bytes_out = 0
        if self.status:  # part of the response is out: the client sees a cut connection
            record.flag += "_mid_response"
            self.channel.close()
            self._complete(self.status)
            return
        request = self.request
        if (
            failure.retryable
            and failure.kind == "reset"
            and not self.retried
            and not request.has_body
            and request.method in _RETRY_SAFE
            and pool is not None
        ):
            self.retried = True  # a pooled connection the app had closed: once more on a new one
            record.flag = ""
            self.pending = []
            self.services.spawn(self._connect(pool))
            return
        route = self.route
        if route is not None and route.on_upstream_failure:
            ctx = self.ctx
            assert ctx is not None
            for flt in route.on_upstream_failure:
                answer = flt.on_upstream_failure(request, failure.kind, ctx)
                if answer is not None:
                    self._send_local(answer)
                    return
        self._send_local(error_response(failure.status, failure.kind, failure.detail))

    # -- endings -------------------------------------------------------------------------------

    def _switch_protocols(self, response: ParsedResponse) -> None:
        """A 101 to an Upgrade request: the client and the upstream connection become a tunnel."""
        upstream = self.upstream
        request = self.request
        if not request.upgrade or upstream is None:
            self.upstream_failed(UpstreamFailure("protocol_error", 502, "101 without an Upgrade request"))
            return
        upgrade = response.upgrade or request.upgrade
        added = self.view.via_line + self.request_id_line
        tunnel = self.channel.switch_protocols(response.reason, response.headers, upgrade, added, upstream)
        if tunnel is None:  # the client is gone
            self.upstream_failed(UpstreamFailure("protocol_error", 502, "101 without an Upgrade request"))
            return
        self.tunnel = True
        self.status = 101
        route = self.route
        assert route is not None
        upstream.start_tunnel(tunnel, route.idle_timeout)
        tunnel.start()
        self.services.metrics.streams_active += 1

    def _answer(self, response: LocalResponse | ReadyResponse) -> None:
        """Answer locally now if the request is fully read, else once its body has been read."""
        request = self.request
        length = request.content_length
        if self.request_done or not request.has_body or response.close or request.expect_continue:
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
            self.channel.close()
            self._complete(self.status)
        else:
            self._send_local(response)

    def _send_local(self, response: LocalResponse | ReadyResponse) -> None:
        """Answer with a response made here (the connection frames it and decides keep-alive)."""
        self.status = response.status
        self.record.bytes_out = 0 if self.request.method == b"HEAD" else len(response.body)
        self._complete(response.status)
        self.channel.local_answer(response, self.request_id, request_read=self.request_done)

    def _complete(self, status: int) -> None:
        """The exchange is over: ``on_log`` filters, then the sealed record to the recorder.
        Ending the response on the channel is the caller's (it knows how the response ended)."""
        self.finished = True
        self.status = status
        # The recorder remembers finished requests (explain): nothing bulky stays with them.
        self.pending = self.outbox = None
        route = self.route
        services = self.services
        record = self.record
        ctx = self.ctx
        record.seal(
            self.request,
            status,
            route=route,
            ctx=ctx,
            pool=self.pool,
            view=self.view,
            ended_at=services.clock(),
        )
        if route is not None and route.on_log:
            assert ctx is not None
            ctx.status = status
            for flt in route.on_log:
                flt.on_log(self.request, ctx)
        metrics = services.metrics
        metrics.requests_active -= 1
        if self.tunnel:
            metrics.streams_active -= 1
        services.recorder.finished(record)


def _describe(head: ParsedRequest) -> str:
    host = head.host.decode("latin-1")
    return f"{head.method.decode('latin-1')} {host}{head.path.decode('latin-1')}"

"""L4: the phase loop of one request, from routed head to the last response byte.

Theory of operation
-------------------
:class:`Proxy` is the inbound connection's request handler. For each request head it makes an
:class:`~sidegate.request.exchange.Exchange`, which

1. takes the current :class:`View` (snapshot, live clusters, metric children) once: a reload
   never changes a request mid-flight;
2. routes the head and runs the route's ``on_request`` filters (any may answer on its own);
3. builds the upstream request head as bytes and borrows a keep-alive connection from the
   chosen endpoint's pool (opening one only when none is idle);
4. streams the request body up and the response back, re-framing both (Content-Length kept,
   chunked re-chunked, close-delimited turned into chunked for HTTP/1.1 clients), with
   backpressure both ways: a side that cannot write pauses the side that reads;
5. after a ``101`` for an Upgrade request, joins the two sockets into a tunnel;
6. ends with metrics and ``on_log`` filters, gives the upstream connection back when it is
   reusable, and tells the inbound connection whether the client connection stays open.

Failures become JSON answers with the status the error vocabulary gives (502/503/504), or a
closed client connection when part of the response was already sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from sidegate.config.snapshot import ObservabilitySpec, Snapshot
from sidegate.forwarding import ClientAddresses, ForwardingCache
from sidegate.observe.access_log import AccessLogWriter
from sidegate.observe.trace_context import Sampler, sampler_from_env
from sidegate.observe.tracing import Tracer
from sidegate.request.background import lend_to_cache
from sidegate.request.exchange import Exchange
from sidegate.request.outcome import Finished, access_line, rejected_line, span_of
from sidegate.request.plan import RoutePlan
from sidegate.server.inbound import RequestHandler

if TYPE_CHECKING:
    from sidegate.http.request_head import ParsedRequest
    from sidegate.observe.metrics import Metrics
    from sidegate.server.inbound import InboundConnection
    from sidegate.upstream.cluster import Cluster


class View:
    """What a request runs on: one snapshot with the clusters and metric children built for it."""

    __slots__ = (
        "client_addresses",
        "clusters",
        "forwarding",
        "no_route_stats",
        "plans",
        "router",
        "snapshot",
        "via",
        "via_line",
    )

    def __init__(
        self,
        snapshot: Snapshot,
        clusters: dict[str, Cluster],
        metrics: Metrics,
    ) -> None:
        self.snapshot = snapshot
        self.router = snapshot.router
        self.clusters = clusters
        self.no_route_stats = metrics.route("(none)")
        endpoint_stats = {
            pool: metrics.upstream(name, str(pool.endpoint))
            for name, cluster in clusters.items()
            for pool in cluster.pools
        }
        self.plans = {
            route: RoutePlan(
                route,
                clusters[route.upstream],
                metrics.route(route.name),
                endpoint_stats,
                snapshot.observability,
            )
            for route in snapshot.routes
        }
        for plan in self.plans.values():  # the configured consumers' label children, made now
            if plan.filters:
                for consumer in snapshot.consumers:
                    plan.stats.for_consumer(consumer.name, consumer.tenant)
        forwarded = snapshot.forwarded
        # Trusted front proxies configured: requests with forwarding headers find their real client.
        self.client_addresses = (
            ClientAddresses(forwarded) if forwarded.trusted or forwarded.trusted_hops else None
        )
        self.forwarding = ForwardingCache(forwarded, self.client_addresses)
        for plan in self.plans.values():  # cache revalidations go upstream as this view's requests do
            lend_to_cache(plan, self.forwarding)
        self.via = via = snapshot.forwarded.via
        self.via_line = b"Via: " + via + b"\r\n" if via else b""


log = logging.getLogger("sidegate.request.proxy")


class Proxy(RequestHandler):
    """The request handler given to every inbound connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: Metrics, view: View) -> None:
        self.loop = loop
        self.metrics = metrics
        self.view = view
        # Request timings: uvloop's loop.time() only moves in whole milliseconds, too coarse for
        # a sub-millisecond hop. Deadlines (timers) stay on loop.time().
        self.clock = time.perf_counter
        self.loop_time = loop.time
        self.wall_offset = time.time() - time.perf_counter()  # clock() + this = Unix time
        self.rid_prefix = os.urandom(4).hex().encode()  # request ids: per-process prefix + counter
        self.rid_count = 0
        self._tasks: set[asyncio.Task[None]] = set()  # connects in progress (kept from the GC)
        # What finished requests are told to (see configure()).
        self.sampler: Sampler | None = None  # tracing on: each request gets a trace context
        self.tracer: Tracer | None = None
        self.access_log: AccessLogWriter | None = None
        self.log_lines: list[bytes] | None = None  # the access log's queue, when there is one
        self.log_max = 0
        self.log_dropped = 0  # lines dropped because the queue was full
        self.recent: list[Finished | None] = []  # a ring of what explain needs of finished requests
        self.recent_next = 0
        self.observability = ObservabilitySpec()  # what configure() last applied
        self.configure(view.snapshot.observability, first=True)

    def begin(self, conn: InboundConnection, head: ParsedRequest) -> Exchange:
        exchange = Exchange(self, conn, head)
        exchange.start()
        return exchange

    def configure(self, spec: ObservabilitySpec, *, first: bool = False) -> None:
        """Apply the ``observability`` section (at start and on every reload): only what changed
        is rebuilt, so a reload keeps the access log's queue and the recent traces."""
        old, self.observability = self.observability, spec
        if spec.recent_requests != len(self.recent):
            kept = [e for e in self.recent[self.recent_next :] + self.recent[: self.recent_next] if e]
            kept = kept[-spec.recent_requests :] if spec.recent_requests else []
            self.recent = kept + [None] * (spec.recent_requests - len(kept))
            self.recent_next = len(kept) % spec.recent_requests if spec.recent_requests else 0
        log_changed = (spec.access_log, spec.access_log_path) != (old.access_log, old.access_log_path)
        if log_changed or spec.access_log_buffer != old.access_log_buffer:
            if self.access_log is not None:
                self.access_log.close()
                self.access_log = self.log_lines = None
            if spec.access_log:
                try:
                    self.access_log = AccessLogWriter(spec.access_log_path, spec.access_log_buffer)
                except OSError as exc:
                    log.error("access log: cannot open %s: %s; no access log", spec.access_log_path, exc)
                else:
                    self.log_lines = self.access_log.lines
                    self.log_max = self.access_log.max_lines
        tracing = (spec.tracing, spec.sample_ratio, spec.recent_traces)
        if first or tracing != (old.tracing, old.sample_ratio, old.recent_traces):
            if self.tracer is not None:
                self.tracer.close()
            self.sampler = self.tracer = None
            if spec.tracing:
                from sidegate.observe.otlp import OtlpExporter, settings_from_env  # http.client: only now

                sampler, problem = sampler_from_env(spec.sample_ratio)
                settings, problems = settings_from_env()
                for text in [problem, *problems]:
                    if text:
                        log.warning("tracing: %s", text)
                self.sampler = sampler
                self.tracer = Tracer(spec.recent_traces, OtlpExporter(settings) if settings else None)

    def record(self, exchange: Exchange) -> None:
        """A request is over: remember it for explain, log it, finish its span."""
        recent = self.recent
        if recent:
            index = self.recent_next
            recent[index] = Finished(exchange)
            index += 1
            self.recent_next = index if index < len(recent) else 0
        log_lines = self.log_lines
        if log_lines is not None:  # the access log's queue (see AccessLogWriter), inline
            if len(log_lines) < self.log_max:
                log_lines.append(access_line(exchange, self.wall_offset))
            else:
                self.log_dropped += 1
        trace = exchange.trace
        if trace is not None and trace.sampled:
            tracer = self.tracer
            if tracer is not None:
                tracer.finish(span_of(exchange, self.wall_offset))

    def rejected(self, conn: InboundConnection, status: int, reason: str, request_id: bytes) -> None:
        log_lines = self.log_lines
        if log_lines is not None and len(log_lines) < self.log_max:
            now = self.wall_offset + self.clock()
            log_lines.append(rejected_line(request_id, conn.client_ip, status, reason, now))

    def find(self, request_id: bytes) -> Finished | None:
        """The most recent finished request with this request id, if still remembered."""
        recent = self.recent
        for offset in range(1, len(recent) + 1):
            done = recent[self.recent_next - offset]  # newest first (negative indexes wrap)
            if done is None:
                return None
            if done.request_id == request_id:
                return done
        return None

    def close(self) -> None:
        """Flush the access log and the span exporter (at exit)."""
        if self.access_log is not None:
            self.access_log.close()
            self.access_log = self.log_lines = None
        if self.tracer is not None:
            self.tracer.close()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def request_id(self) -> bytes:
        """16 hex digits: this process's random prefix and a 32-bit counter. Built from a table of
        hex pairs: bytes %-formatting costs several times as much, on every request."""
        self.rid_count = n = (self.rid_count + 1) & 0xFFFFFFFF
        return b"".join(
            (self.rid_prefix, _HEX[n >> 24], _HEX[(n >> 16) & 255], _HEX[(n >> 8) & 255], _HEX[n & 255])
        )


_HEX: Final = tuple(b"%02x" % i for i in range(256))

"""L4: the observability sink: where every finished request's record goes.

:class:`Recorder` reads a sealed :class:`~sidegate.request.record.RequestRecord` once, when the
request ends: it feeds the per-route and per-endpoint metrics, remembers the record for explain
(a ring), queues the access line and finishes the trace span. It is configured from the
``observability`` section and reconfigured on reload, keeping the log queue and recent traces.
Apart from the request handler (:class:`~sidegate.request.proxy.Proxy`) so that what answers
requests and what reports on them can change on their own.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sidegate.config.snapshot import ObservabilitySpec
from sidegate.observe.access_log import AccessLogWriter
from sidegate.observe.trace_context import Sampler, sampler_from_env
from sidegate.observe.tracing import Tracer
from sidegate.request.outcome import access_line, rejected_line, span_of

if TYPE_CHECKING:
    from sidegate.observe.metrics import Metrics
    from sidegate.request.record import RequestRecord

log = logging.getLogger("sidegate.request.proxy")


class Recorder:
    """Metrics, the explain ring, the access log and the tracer (see the module's docstring)."""

    def __init__(self, metrics: Metrics, spec: ObservabilitySpec) -> None:
        self.metrics = metrics
        # Request timings are perf_counter() readings (uvloop's loop.time() only moves in whole
        # milliseconds, too coarse for a sub-millisecond hop): this turns them into Unix time.
        self.wall_offset = time.time() - time.perf_counter()
        self.sampler: Sampler | None = None  # tracing on: each request gets a trace context
        self.tracer: Tracer | None = None
        self.access_log: AccessLogWriter | None = None
        self.log_lines: list[bytes] | None = None  # the access log's queue, when there is one
        self.log_max = 0
        self.log_dropped = 0  # lines dropped because the queue was full
        self.recent: list[RequestRecord | None] = []  # a ring of the last finished requests
        self.recent_next = 0
        self.observability = ObservabilitySpec()  # what configure() last applied
        self.configure(spec, first=True)

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

    def finished(self, record: RequestRecord) -> None:
        """A request is over: count it, remember it for explain, log it, finish its span."""
        route = record.route
        status = record.status
        ended = record.ended_at
        seconds = ended - record.started_at
        if route is None:
            view = record.view
            if view is not None:
                view.no_route_stats.observe(record.method, status, seconds)
        elif route.metrics:
            ctx = record.ctx
            if ctx is not None and ctx.consumer:
                route.stats.for_consumer(ctx.consumer, ctx.tenant).observe(record.method, status, seconds)
            else:
                route.stats.observe(record.method, status, seconds)
            pool = record.pool
            if pool is not None and record.upstream_at:
                route.endpoint_stats[pool].observe(ended - record.upstream_at, status)
        metrics = self.metrics
        metrics.bytes_received += record.bytes_in
        metrics.bytes_sent += record.bytes_out
        recent = self.recent
        if recent:
            index = self.recent_next
            recent[index] = record
            index += 1
            self.recent_next = index if index < len(recent) else 0
        log_lines = self.log_lines
        if log_lines is not None:  # the access log's queue (see AccessLogWriter), inline
            if len(log_lines) < self.log_max:
                log_lines.append(access_line(record, self.wall_offset))
            else:
                self.log_dropped += 1
        trace = record.trace
        if trace is not None and trace.sampled:
            tracer = self.tracer
            if tracer is not None:
                tracer.finish(span_of(record, self.wall_offset))

    def rejected(self, client_ip: str, status: int, reason: str, request_id: bytes) -> None:
        """The access line of a request the connection refused before it could be read."""
        log_lines = self.log_lines
        if log_lines is not None and len(log_lines) < self.log_max:
            now = self.wall_offset + time.perf_counter()
            log_lines.append(rejected_line(request_id, client_ip, status, reason, now))

    def find(self, request_id: bytes) -> RequestRecord | None:
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

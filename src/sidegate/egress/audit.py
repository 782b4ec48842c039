"""The egress audit trail: one JSON line per outbound request or tunnel, and its counters.

Every call the app makes through the egress listener leaves one line, allowed or not, the way
Smokescreen logs each decision: when, which request, where it wanted to go, where it went (the
checked address actually dialled), what decided and why, what came back, how many bytes each
way and how long it took. ``credential`` is reserved for the *name* of a credential the sidecar
injected (never its value). Lines go to whatever has a ``write(bytes)``: the access-log writer
(:class:`~sidegate.observe.access_log.AccessLogWriter`, which writes off the event loop) in the
gateway, a list in tests.

The counters are ``sidegate_egress_requests_total{destination, decision}`` (``destination``:
the rule that decided).

:meth:`Audit.finish` is the one place a call ends: the line, the counters, the per-destination
histograms, the explain ring and the CLIENT span all read the same record there
(:mod:`sidegate.egress.observe`). Tracing follows the inbound side's pipeline: whoever composes
the gateway sets :attr:`Audit.tracing` to what holds the current sampler and tracer (they change
on reload); :meth:`Audit.begin` gives a call its trace context when its head is read, and the
request then goes out with a ``traceparent`` naming the egress span (:func:`outgoing_traceparent`),
as W3C Trace Context asks of a hop that records a span. Timings are ``time.perf_counter``
readings: uvloop's loop clock moves in whole milliseconds, too coarse for the histogram's
first buckets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from sidegate.egress.observe import EgressStats, RecentCalls, span_of
from sidegate.egress.record import AuditRecord
from sidegate.observe.trace_context import Sampler
from sidegate.observe.tracing import Tracer

__all__ = [
    "Audit",
    "AuditRecord",
    "EgressCounters",
    "LineSink",
    "TracingSource",
    "outgoing_traceparent",
    "traceparent_in",
]


class LineSink(Protocol):
    def write(self, line: bytes) -> None: ...


class TracingSource(Protocol):
    """Where the current sampler and tracer are (the inbound recorder: one pipeline for both)."""

    @property
    def sampler(self) -> Sampler | None: ...
    @property
    def tracer(self) -> Tracer | None: ...


class EgressCounters:
    """``sidegate_egress_requests_total`` by destination and decision (durations are in the
    histogram of :class:`~sidegate.egress.observe.EgressStats`)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}

    def count(self, destination: str, decision: str) -> None:
        key = (destination, decision)
        self.requests[key] = self.requests.get(key, 0) + 1

    def rows(self) -> list[list[object]]:
        """``[destination, decision, count]`` rows: the metrics snapshot's table (added across
        workers, rendered as ``sidegate_egress_requests_total``)."""
        return [[destination, decision, n] for (destination, decision), n in sorted(self.requests.items())]


class Audit:
    """Where finished records go: the audit line, the counters, the explain ring and the span."""

    def __init__(
        self, sink: LineSink | None, clock: Callable[[], float] = time.perf_counter, *, recent: int = 2048
    ) -> None:
        self.sink = sink
        self.clock = clock
        self.counters = EgressCounters()
        self.stats = EgressStats()
        self.recent = RecentCalls(recent)
        self.tracing: TracingSource | None = None
        self.wall_offset = time.time() - clock()  # clock readings to Unix time

    def begin(self, record: AuditRecord, traceparent: bytes, app_request_id: bytes = b"") -> None:
        """A call's head is read: note the ``X-Request-Id`` the app sent (it goes on unchanged;
        the audit line and explain show it beside the call's own id, to find the inbound request
        the call was made for), and give the call its trace context when tracing is on: the
        app's span, from its ``traceparent``, becomes the egress span's parent; sampled as
        inbound requests are (parent-based)."""
        record.app_request_id = app_request_id
        tracing = self.tracing
        sampler = tracing.sampler if tracing is not None else None
        if sampler is not None:
            record.trace = sampler.start(traceparent)

    def finish(self, record: AuditRecord) -> None:
        """The call is over (answered, refused, its tunnel closed, or the app gone): time it
        once, then count it, remember it for explain, finish its span and write its line."""
        duration = record.duration = max(0.0, self.clock() - record.started)
        record.wall = self.wall_offset + record.started
        self.counters.count(record.rule or "none", record.decision)
        self.stats.observe(record, duration)
        self.recent.add(record)
        trace = record.trace
        if trace is not None and trace.sampled and self.tracing is not None:
            tracer = self.tracing.tracer
            if tracer is not None:
                tracer.finish(span_of(record))
        sink = self.sink
        if sink is not None and getattr(sink, "wanted", True):  # no line made for a log that is off
            sink.write(record.line(duration))


def traceparent_in(headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The ``traceparent`` among raw header fields (a CONNECT head's), or b""."""
    for name, value in headers:
        if name.lower() == b"traceparent":
            return value
    return b""


def outgoing_traceparent(record: AuditRecord, sent: bytes) -> bytes:
    """The ``traceparent`` the destination gets: the egress span's own when the call is traced
    (its sampled flag says whether the span was kept), else what the app ``sent``, unchanged."""
    trace = record.trace
    if trace is None:
        return sent
    flags = b"-01" if trace.sampled else b"-00"
    return b"00-" + trace.trace_id + b"-" + trace.span_id + flags

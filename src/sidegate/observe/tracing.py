"""Finished spans: the local ring of recent traces, and the OTLP exporter they are handed to.

Only sampled requests make a :class:`Span` (the proxy builds it when the request ends). The ring
answers ``GET /traces`` on admin, so a pod can be debugged with no tracing backend at all; when
the standard ``OTEL_EXPORTER_OTLP_*`` variables name a collector, spans also go there
(:mod:`sidegate.observe.otlp`).
"""

from __future__ import annotations

import collections
from typing import Any, Protocol


class Span:
    """One span: a request as Sidegate handled it (``server``), or an outbound call through the
    egress listener (``client``)."""

    __slots__ = (
        "attributes",
        "end",
        "error",
        "kind",
        "name",
        "parent_span_id",
        "span_id",
        "start",
        "trace_id",
    )

    def __init__(
        self,
        *,
        trace_id: str,
        span_id: str,
        parent_span_id: str,
        name: str,
        start: float,
        end: float,
        error: bool,
        attributes: dict[str, str | int | float],
        kind: str = "server",
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.name = name
        self.start = start  # Unix time, seconds
        self.end = end
        self.error = error  # OpenTelemetry status ERROR (a 5xx answer, or a failed upstream)
        self.attributes = attributes
        self.kind = kind  # "server" or "client" (OpenTelemetry SpanKind)

    def as_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id or None,
            "name": self.name,
            "kind": self.kind,
            "start": self.start,
            "duration_ms": round((self.end - self.start) * 1000, 3),
            "status": "error" if self.error else "unset",
            "attributes": self.attributes,
        }


class SpanExporter(Protocol):
    """Where finished spans go besides the ring: :class:`~sidegate.observe.otlp.OtlpExporter`.

    Declared here, beside :class:`Span`, so that the exporter depends on the tracer's types and
    never the other way round."""

    def submit(self, span: Span) -> None:
        """Take a finished span; never blocks (a full queue drops it and counts)."""

    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /traces`` and the metrics: exported, dropped, failed."""

    def close(self) -> None:
        """Send what is queued (within the export timeout) and stop."""


class Tracer:
    """Keeps the last ``recent`` spans and passes each to the exporter, if there is one."""

    def __init__(self, recent: int, exporter: SpanExporter | None = None) -> None:
        self.spans: collections.deque[Span] = collections.deque(maxlen=max(recent, 0))
        self.exporter = exporter
        self.finished = 0

    def finish(self, span: Span) -> None:
        self.finished += 1
        if self.spans.maxlen:
            self.spans.append(span)
        if self.exporter is not None:
            self.exporter.submit(span)

    def recent(self, trace_id: str = "", limit: int = 100) -> list[dict[str, Any]]:
        """The newest spans first, those of ``trace_id`` only when given."""
        out = []
        for span in reversed(self.spans):
            if trace_id and span.trace_id != trace_id:
                continue
            out.append(span.as_dict())
            if len(out) >= limit:
                break
        return out

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"finished": self.finished, "kept": len(self.spans)}
        if self.exporter is not None:
            stats["export"] = self.exporter.stats()
        return stats

    def close(self) -> None:
        if self.exporter is not None:
            self.exporter.close()

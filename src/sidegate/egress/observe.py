"""What the egress side tells an operator besides its audit line: metrics, explain, spans.

Everything here reads the one finished :class:`~sidegate.egress.audit.AuditRecord` that
:meth:`Audit.finish <sidegate.egress.audit.Audit.finish>` hands over, the way the inbound
recorder reads a request record: nothing is measured twice and the proxy does no extra work.

* :class:`EgressStats`: per destination (the rule that decided, the ``destination`` label of
  ``sidegate_egress_requests_total``) a duration histogram with the inbound buckets, bytes
  each way, denials by rule and the error words of the answers Sidegate gave itself. Two dict
  look-ups and a few additions per call; rendered by :mod:`sidegate.observe.egress_metrics`.
* :class:`RecentCalls`: the last ``observability.explain.recent`` finished calls, for
  ``GET /explain/{request-id}``, and the last :data:`RECENT_DENIALS` refusals for the
  dashboard and ``GET /egress`` (kept apart so a busy allowed destination cannot push them out).
* :func:`span_of`: a sampled call as an OpenTelemetry CLIENT span (HTTP client semantic
  conventions), into the same tracer, ring and exporter as the inbound SERVER spans.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Final

from sidegate.egress.record import AuditRecord
from sidegate.observe.metrics import BUCKETS, bucket_of
from sidegate.observe.tracing import Span

#: Refusals kept for the dashboard and ``GET /egress``, newest last.
RECENT_DENIALS: Final = 50
_SLOTS: Final = len(BUCKETS) + 1


class DestinationStats:
    """The numbers of one ``destination`` label: durations, bytes each way."""

    def __init__(self) -> None:
        self.buckets = [0] * _SLOTS
        self.sum = 0.0
        self.sent = 0  # app to destination (request bodies, tunnel bytes up)
        self.received = 0  # destination to app


class EgressStats:
    """Per-destination histograms and counters of finished calls (see the module docstring)."""

    def __init__(self) -> None:
        self.destinations: dict[str, DestinationStats] = {}
        self.denied: dict[str, int] = {}  # rule -> calls it denied
        self.errors: dict[tuple[str, str], int] = {}  # (destination, error word) -> answers

    def observe(self, record: AuditRecord, seconds: float) -> None:
        label = record.rule or "none"
        stats = self.destinations.get(label)
        if stats is None:
            stats = self.destinations[label] = DestinationStats()
        stats.buckets[bucket_of(seconds)] += 1
        stats.sum += seconds
        stats.sent += record.bytes_in
        stats.received += record.bytes_out
        if record.decision != "allow":
            self.denied[label] = self.denied.get(label, 0) + 1
        if record.error:
            key = (label, record.error)
            self.errors[key] = self.errors.get(key, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """JSON-able rows (they cross the worker pipe; :mod:`sidegate.observe.egress_metrics`
        merges and renders them)."""
        return {
            "durations": [
                {"destination": name, "buckets": list(s.buckets), "sum": s.sum}
                for name, s in sorted(self.destinations.items())
            ],
            "bytes": [
                [name, direction, n]
                for name, s in sorted(self.destinations.items())
                for direction, n in (("received", s.received), ("sent", s.sent))
            ],
            "denied": [[rule, n] for rule, n in sorted(self.denied.items())],
            "errors": [[name, error, n] for (name, error), n in sorted(self.errors.items())],
        }


class RecentCalls:
    """The last ``size`` finished calls, and the last :data:`RECENT_DENIALS` refused ones."""

    def __init__(self, size: int) -> None:
        self.calls: collections.deque[AuditRecord] = collections.deque(maxlen=max(size, 0))
        self.denials: collections.deque[AuditRecord] = collections.deque(maxlen=RECENT_DENIALS)

    def resize(self, size: int) -> None:
        """``observability.explain.recent`` changed: keep the newest calls that still fit."""
        if size != self.calls.maxlen:
            self.calls = collections.deque(self.calls, maxlen=max(size, 0))

    def add(self, record: AuditRecord) -> None:
        if self.calls.maxlen:
            self.calls.append(record)
        if record.decision != "allow" or record.error:
            self.denials.append(record)

    def find(self, request_id: str) -> AuditRecord | None:
        """The newest remembered call with this request id."""
        for record in reversed(self.calls):
            if record.request_id == request_id:
                return record
        return None

    def made_for(self, app_request_id: str) -> list[dict[str, Any]]:
        """The remembered calls the app sent with this ``X-Request-Id``, oldest first: the
        outbound calls it made while serving the inbound request of that id."""
        wanted = app_request_id.encode("latin-1", "replace")
        return [
            {
                "request_id": record.request_id,
                "time": record.wall,
                "destination": record.destination,
                "decision": record.decision,
                "rule": record.rule,
                "status": record.status,
                "error": record.error or None,
                "duration_ms": round(record.duration * 1000, 3),
            }
            for record in self.calls
            if record.app_request_id == wanted
        ]

    def recent_denials(self) -> list[dict[str, Any]]:
        """Newest first: when, which call, where to, the rule and why (for the dashboard)."""
        return [
            {
                "time": record.wall,
                "request_id": record.request_id,
                "destination": record.destination,
                "rule": record.rule,
                "reason": record.reason,
                "status": record.status,
                "error": record.error,
            }
            for record in reversed(self.denials)
        ]


def _stamp(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"


def _split(destination: str) -> tuple[str, int]:
    host, _, port = destination.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port) if port.isdigit() else 0


def summary(record: AuditRecord) -> str:
    """One sentence: what happened to the call and what decided it."""
    where = record.destination or "an unreadable request"
    if record.decision != "allow":
        return f"{where}: denied by {record.rule or 'the listener'} ({record.reason})"
    if record.error:
        answer = f"{record.status} {record.error}"
        return f"{where}: allowed by {record.rule}, then answered {answer} ({record.reason})"
    if record.kind == "connect":
        return f"{where}: tunnel allowed by {record.rule} to {record.resolved}"
    return f"{where}: allowed by {record.rule}; {record.resolved} answered {record.status}"


def explain_document(record: AuditRecord) -> dict[str, Any]:
    """``GET /explain/{request-id}`` of an egress call: the decision, its rule and reason, where
    it went, the credential injected (its name, never its value), the answer and the timing."""
    out: dict[str, Any] = {
        "request_id": record.request_id,
        "type": "egress",
        "time": _stamp(record.wall),
        "request": {
            "kind": record.kind,
            "method": record.method,
            "destination": record.destination,
            "path": record.target,
            "client": record.client,
            "app_request_id": record.app_request_id.decode("latin-1") or None,
        },
        "decision": record.decision,
        "rule": record.rule,
        "reason": record.reason,
        "error": record.error or None,
        "resolved": record.resolved or None,
        "credential": record.credential,
        "status": record.status,
        "bytes": {"sent": record.bytes_in, "received": record.bytes_out},
        "timings_ms": {"total": round(record.duration * 1000, 3)},
        "summary": summary(record),
    }
    if record.extra:
        out["notes"] = dict(record.extra)
    trace = record.trace
    if trace is not None:
        out["trace"] = {
            "trace_id": trace.trace_id.decode(),
            "span_id": trace.span_id.decode(),
            "parent_span_id": trace.parent_span_id.decode() or None,
            "sampled": trace.sampled,
        }
    return out


def span_of(record: AuditRecord) -> Span:
    """The CLIENT span of a sampled call (OpenTelemetry HTTP client conventions, plus the
    decision as ``sidegate.egress.*``). An error status for what the app could not use: a
    refusal, a failure, a 4xx or 5xx from the destination."""
    trace = record.trace
    assert trace is not None
    host, port = _split(record.destination)
    attributes: dict[str, str | int | float] = {
        "http.request.method": record.method or "_OTHER",
        "sidegate.request_id": record.request_id,
        "sidegate.egress.kind": record.kind,
        "sidegate.egress.decision": record.decision,
        "sidegate.egress.rule": record.rule,
    }
    if host:
        attributes["server.address"] = host
        attributes["server.port"] = port
    if record.target and record.kind != "connect":
        path, _, query = record.target.partition("?")
        attributes["url.path"] = path
        if query:
            attributes["url.query"] = query
    if record.resolved:
        peer, peer_port = _split(record.resolved)
        attributes["network.peer.address"] = peer
        attributes["network.peer.port"] = peer_port
    if record.status:
        attributes["http.response.status_code"] = record.status
    if record.error:
        attributes["error.type"] = record.error
    if record.credential:
        attributes["sidegate.egress.credential"] = record.credential
    return Span(
        trace_id=trace.trace_id.decode(),
        span_id=trace.span_id.decode(),
        parent_span_id=trace.parent_span_id.decode(),
        name=record.method or "egress",
        start=record.wall,
        end=record.wall + record.duration,
        error=record.status >= 400 or record.status == 0 or record.decision != "allow",
        attributes=attributes,
        kind="client",
    )

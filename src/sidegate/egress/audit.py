"""The egress audit trail: one JSON line per outbound request or tunnel, and its counters.

Every call the app makes through the egress listener leaves one line, allowed or not, the way
Smokescreen logs each decision: when, which request, where it wanted to go, where it went (the
checked address actually dialled), what decided and why, what came back, how many bytes each
way and how long it took. ``credential`` is reserved for the *name* of a credential the sidecar
injected (never its value). Lines go to whatever has a ``write(bytes)``: the access-log writer
(:class:`~sidegate.observe.access_log.AccessLogWriter`, which writes off the event loop) in the
gateway, a list in tests.

The counters are ``sidegate_egress_requests_total{destination, decision}`` (``destination``:
the rule that decided) and, kept for the admin API, a duration sum and count per rule.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class LineSink(Protocol):
    def write(self, line: bytes) -> None: ...


@dataclass(slots=True)
class AuditRecord:
    """What one outbound call leaves in the audit log; filled in as the call goes."""

    request_id: str
    kind: str  # "http" (absolute-form), "named" (Host names a destination) or "connect"
    method: str
    client: str
    started: float  # loop clock
    destination: str = ""  # host:port asked for
    target: str = ""  # the origin-form path (not for tunnels)
    resolved: str = ""  # the checked address dialled, "ip:port"
    decision: str = "deny"  # "allow" or "deny"
    rule: str = ""
    reason: str = ""
    status: int = 0
    bytes_in: int = 0  # from the app (request body; tunnel: app to destination)
    bytes_out: int = 0  # to the app (response body; tunnel: destination to app)
    credential: str | None = None  # reserved: the name of an injected credential
    extra: dict[str, str] = field(default_factory=dict)

    def line(self, duration: float) -> bytes:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "type": "egress",
            "request_id": self.request_id,
            "kind": self.kind,
            "method": self.method,
            "client": self.client,
            "destination": self.destination,
            "path": self.target,
            "resolved": self.resolved,
            "decision": self.decision,
            "rule": self.rule,
            "reason": self.reason,
            "status": self.status,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration": round(duration, 6),
            "credential": self.credential,
            **self.extra,
        }
        return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


class EgressCounters:
    """``sidegate_egress_requests_total`` by destination and decision, and durations."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.duration_sum: dict[str, float] = {}
        self.duration_count: dict[str, int] = {}

    def count(self, destination: str, decision: str, seconds: float) -> None:
        key = (destination, decision)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.duration_sum[destination] = self.duration_sum.get(destination, 0.0) + seconds
        self.duration_count[destination] = self.duration_count.get(destination, 0) + 1

    def rows(self) -> list[list[object]]:
        """``[destination, decision, count]`` rows: the metrics snapshot's table (added across
        workers, rendered as ``sidegate_egress_requests_total``)."""
        return [[destination, decision, n] for (destination, decision), n in sorted(self.requests.items())]


class Audit:
    """Where finished records go: the audit line and the counters."""

    def __init__(self, sink: LineSink | None, clock: Callable[[], float]) -> None:
        self.sink = sink
        self.clock = clock
        self.counters = EgressCounters()

    def finish(self, record: AuditRecord) -> None:
        duration = max(0.0, self.clock() - record.started)
        self.counters.count(record.rule or "none", record.decision, duration)
        sink = self.sink
        if sink is not None and getattr(sink, "wanted", True):  # no line made for a log that is off
            sink.write(record.line(duration))

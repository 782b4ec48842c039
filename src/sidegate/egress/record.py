"""One outbound call's audit record: filled in as the call goes, finished once by
:meth:`sidegate.egress.audit.Audit.finish`, then read by the audit line, the metrics, explain
and the span (:mod:`sidegate.egress.observe`). A module of its own so that those readers and
the audit trail depend on it and not on one another."""

from __future__ import annotations

import json
import time

from sidegate.observe.trace_context import TraceContext


class AuditRecord:
    """What one outbound call leaves in the audit log; filled in as the call goes. A plain
    class compiled with mypyc (``native.HOT_MODULES``), not a dataclass: one is made per call
    and its fields are set from compiled code, so they are struct fields, not slot look-ups."""

    def __init__(self, request_id: str, kind: str, method: str, client: str, started: float) -> None:
        self.request_id = request_id
        self.kind = kind  # "http" (absolute-form), "named" (Host names a destination) or "connect"
        self.method = method
        self.client = client
        self.started = started  # Audit.clock (time.perf_counter) when the call began
        self.destination = ""  # host:port asked for
        self.target = ""  # the origin-form path (not for tunnels)
        self.resolved = ""  # the checked address dialled, "ip:port"
        self.decision = "deny"  # "allow" or "deny"
        self.rule = ""
        self.reason = ""
        self.status = 0
        self.bytes_in = 0  # from the app (request body; tunnel: app to destination)
        self.bytes_out = 0  # to the app (response body; tunnel: destination to app)
        self.credential: str | None = None  # the name of an injected credential
        self.tls: str | None = None  # "originated" when the sidecar spoke TLS to the destination
        self.tls_server_name: str | None = None  # the name it verified (and sent as SNI unless an IP)
        self.extra: dict[str, str] = {}
        self.error = ""  # the error word of an answer Sidegate gave itself ("egress_denied"...)
        self.trace: TraceContext | None = None  # tracing on: the egress span's context
        self.app_request_id = b""  # the X-Request-Id the app sent (passed on as it came)
        self.duration = 0.0  # seconds, set when the call is finished
        self.wall = 0.0  # Unix time the call began, set when it is finished

    def line(self, duration: float) -> bytes:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "type": "egress",
            "request_id": self.request_id,
            "app_request_id": self.app_request_id.decode("latin-1") or None,
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
            "tls": self.tls,
            "tls_server_name": self.tls_server_name,
            "error": self.error or None,
            "trace_id": self.trace.trace_id.decode() if self.trace is not None else None,
            **self.extra,
        }
        return json.dumps(entry, separators=(",", ":")).encode() + b"\n"

"""The egress audit line and counters, as an operator reads them."""

from __future__ import annotations

import json

from sidegate.egress.audit import Audit, AuditRecord
from sidegate.observe.prometheus import render_prometheus


class Lines:
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, line: bytes) -> None:
        self.lines.append(line)


def test_one_json_line_per_call_with_every_field() -> None:
    now = [10.0]
    sink = Lines()
    audit = Audit(sink, lambda: now[0])
    record = AuditRecord("abc123", "connect", "CONNECT", "127.0.0.1", started=10.0)
    record.destination, record.resolved = "api.partner.com:443", "203.0.113.7:443"
    record.decision, record.rule, record.status, record.bytes_in, record.bytes_out = (
        "allow",
        "partner",
        200,
        5,
        7,
    )
    now[0] = 10.25
    audit.finish(record)
    (line,) = sink.lines
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    entry = json.loads(line)
    assert entry["type"] == "egress" and entry["request_id"] == "abc123"
    assert entry["destination"] == "api.partner.com:443" and entry["resolved"] == "203.0.113.7:443"
    assert (entry["decision"], entry["rule"], entry["status"]) == ("allow", "partner", 200)
    assert (entry["bytes_in"], entry["bytes_out"], entry["duration"]) == (5, 7, 0.25)
    assert entry["credential"] is None and entry["time"].endswith("Z")


def test_counters_reach_the_metrics_page() -> None:
    audit = Audit(None, lambda: 0.0)
    for decision in ("allow", "allow", "deny"):
        record = AuditRecord("r", "http", "GET", "127.0.0.1", started=0.0)
        record.rule, record.decision = "partner", decision
        audit.finish(record)
    text = render_prometheus({"policy": {"egress_requests": audit.counters.rows()}}).decode()
    assert "# TYPE sidegate_egress_requests_total counter" in text
    assert 'sidegate_egress_requests_total{destination="partner",decision="allow"} 2' in text
    assert 'sidegate_egress_requests_total{destination="partner",decision="deny"} 1' in text

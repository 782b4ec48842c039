"""What a finished egress call shows an operator besides its audit line: the ``sidegate_egress_*``
families (parsed with prometheus_client, as a scraper reads them), the explain record, the CLIENT
span and its traceparent, and ``/egress`` merged across workers."""

from __future__ import annotations

from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from sidegate.admin.egress import merge_reports
from sidegate.egress.audit import Audit, AuditRecord, outgoing_traceparent, traceparent_in
from sidegate.egress.observe import RECENT_DENIALS, explain_document
from sidegate.observe.aggregate import merge
from sidegate.observe.otlp import encode
from sidegate.observe.prometheus import render_openmetrics, render_prometheus
from sidegate.observe.trace_context import Sampler
from sidegate.observe.tracing import Tracer

APP_TRACE = "0af7651916cd43dd8448eb211c80319c"
APP_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{APP_TRACE}-{APP_SPAN}-01".encode()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tracing:
    """What the inbound recorder offers the egress side: the sampler and tracer of the day."""

    def __init__(self, ratio: float = 1.0) -> None:
        self.sampler: Sampler | None = Sampler(ratio)
        self.tracer: Tracer | None = Tracer(16)


def call(
    audit: Audit,
    clock: Clock,
    *,
    rule: str = "partner",
    decision: str = "allow",
    seconds: float = 0.003,
    status: int = 200,
    error: str = "",
    sent: int = 0,
    received: int = 0,
    request_id: str = "r1",
) -> AuditRecord:
    record = AuditRecord(request_id, "http", "GET", "127.0.0.1", clock())
    record.destination, record.target, record.resolved = "api.partner.test:80", "/v1/x?q=1", "192.0.2.7:80"
    record.rule, record.decision, record.status, record.error = rule, decision, status, error
    record.bytes_in, record.bytes_out, record.credential = sent, received, "partner-token"
    clock.now += seconds
    audit.finish(record)
    return record


def families(snapshot: dict[str, Any]) -> dict[str, Any]:
    text = render_prometheus(merge([snapshot])).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(family: Any, sample: str, **labels: str) -> float:
    found = [s.value for s in family.samples if s.name == sample and s.labels == labels]
    assert len(found) == 1, (sample, labels, family.samples)
    return float(found[0])


def part(audit: Audit, **gauges: list[list[object]]) -> dict[str, Any]:
    out = audit.stats.snapshot()
    out.update({"connections_active": [], "tunnels_active": [], **gauges})
    out["dns"] = {"cache_hits": 3, "lookups": 2, "failures": 1, "entries": 2}
    return out


def test_durations_bytes_denials_and_errors_are_families_a_scraper_reads() -> None:
    clock = Clock()
    audit = Audit(None, clock)
    call(audit, clock, seconds=0.003, sent=10, received=200)
    call(audit, clock, seconds=0.2, sent=5, received=50)
    call(audit, clock, rule="default_action: deny", decision="deny", status=403, error="egress_denied")
    call(audit, clock, status=502, error="egress_upstream_failed", seconds=1.5)
    got = families(
        {"egress": part(audit, connections_active=[["partner", 1]], tunnels_active=[["partner", 0]])}
    )

    histogram = got["sidegate_egress_request_duration_seconds"]
    assert histogram.type == "histogram" and histogram.documentation
    name = "sidegate_egress_request_duration_seconds"
    assert value(histogram, f"{name}_count", destination="partner") == 3
    assert value(histogram, f"{name}_bucket", destination="partner", le="0.005") == 1
    assert value(histogram, f"{name}_bucket", destination="partner", le="0.25") == 2
    assert value(histogram, f"{name}_bucket", destination="partner", le="2.5") == 3
    assert abs(value(histogram, f"{name}_sum", destination="partner") - 1.703) < 1e-6

    sent = got["sidegate_egress_bytes"]  # the parser names a counter family without _total
    assert sent.type == "counter"
    assert value(sent, "sidegate_egress_bytes_total", destination="partner", direction="sent") == 15
    assert value(sent, "sidegate_egress_bytes_total", destination="partner", direction="received") == 250
    denied = got["sidegate_egress_denied"]
    assert value(denied, "sidegate_egress_denied_total", rule="default_action: deny") == 1
    assert [s.labels["rule"] for s in denied.samples] == ["default_action: deny"]
    errors = got["sidegate_egress_errors"]
    assert (
        value(errors, "sidegate_egress_errors_total", destination="partner", error="egress_upstream_failed")
        == 1
    )
    assert got["sidegate_egress_connections_active"].type == "gauge"
    assert (
        value(
            got["sidegate_egress_connections_active"],
            "sidegate_egress_connections_active",
            destination="partner",
        )
        == 1
    )
    assert (
        value(got["sidegate_egress_dns_lookups"], "sidegate_egress_dns_lookups_total", result="failed") == 1
    )
    assert value(got["sidegate_egress_dns_cache_entries"], "sidegate_egress_dns_cache_entries") == 2


def test_the_families_are_valid_openmetrics_too() -> None:
    clock = Clock()
    audit = Audit(None, clock)
    call(audit, clock, sent=3, received=4)
    call(audit, clock, rule="ssrf_guard", decision="deny", status=403, error="egress_denied")
    text = render_openmetrics(merge([{"egress": part(audit, tunnels_active=[["partner", 2]])}])).decode()
    got = {f.name: f for f in parse_openmetrics(text)}  # strict: names, units, types, # EOF
    assert got["sidegate_egress_bytes"].unit == "bytes"
    assert got["sidegate_egress_request_duration_seconds"].unit == "seconds"
    assert (
        value(got["sidegate_egress_tunnels_active"], "sidegate_egress_tunnels_active", destination="partner")
        == 2
    )
    assert value(got["sidegate_egress_denied"], "sidegate_egress_denied_total", rule="ssrf_guard") == 1


def test_workers_parts_add_up_and_no_egress_means_no_families() -> None:
    clock = Clock()
    one, two = Audit(None, clock), Audit(None, clock)
    call(one, clock, sent=1)
    call(two, clock, sent=2)
    call(two, clock, sent=4)
    snapshots = [
        {"egress": part(one, connections_active=[["partner", 1]])},
        {"egress": part(two, connections_active=[["partner", 2]])},
    ]
    text = render_prometheus(merge(snapshots)).decode()
    got = {f.name: f for f in text_string_to_metric_families(text)}
    name = "sidegate_egress_request_duration_seconds"
    assert value(got[name], f"{name}_count", destination="partner") == 3
    assert (
        value(
            got["sidegate_egress_bytes"],
            "sidegate_egress_bytes_total",
            destination="partner",
            direction="sent",
        )
        == 7
    )
    assert (
        value(
            got["sidegate_egress_connections_active"],
            "sidegate_egress_connections_active",
            destination="partner",
        )
        == 3
    )
    assert value(got["sidegate_egress_dns_cache_hits"], "sidegate_egress_dns_cache_hits_total") == 6
    assert "sidegate_egress" not in render_prometheus(merge([{}])).decode()


def test_explain_names_the_decision_the_credential_and_the_timing() -> None:
    clock = Clock()
    audit = Audit(None, clock)
    call(audit, clock, request_id="allowed-1", seconds=0.25)
    call(
        audit,
        clock,
        request_id="denied-1",
        rule="ssrf_guard",
        decision="deny",
        status=403,
        error="egress_denied",
    )
    found = audit.recent.find("allowed-1")
    assert found is not None
    doc = explain_document(found)
    assert doc["type"] == "egress" and doc["request_id"] == "allowed-1"
    assert (doc["decision"], doc["rule"], doc["status"]) == ("allow", "partner", 200)
    assert doc["resolved"] == "192.0.2.7:80" and doc["credential"] == "partner-token"
    assert doc["request"]["destination"] == "api.partner.test:80" and doc["request"]["path"] == "/v1/x?q=1"
    assert doc["timings_ms"]["total"] == 250.0 and doc["time"].endswith("Z")
    assert "allowed by partner" in doc["summary"]
    denied = audit.recent.find("denied-1")
    assert denied is not None and "denied by ssrf_guard" in explain_document(denied)["summary"]
    assert audit.recent.find("never") is None


def test_the_explain_ring_is_bounded_and_denials_outlive_busy_traffic() -> None:
    clock = Clock()
    audit = Audit(None, clock, recent=3)
    call(audit, clock, request_id="denied", rule="default_action: deny", decision="deny", status=403)
    for n in range(RECENT_DENIALS + 10):
        call(audit, clock, request_id=f"ok-{n}")
    assert audit.recent.find("denied") is None and audit.recent.find("ok-0") is None
    assert audit.recent.find(f"ok-{RECENT_DENIALS + 9}") is not None
    assert [d["request_id"] for d in audit.recent.recent_denials()] == ["denied"]
    audit.recent.resize(1)
    assert audit.recent.find(f"ok-{RECENT_DENIALS + 8}") is None
    assert audit.recent.find(f"ok-{RECENT_DENIALS + 9}") is not None


def test_a_traced_call_is_a_client_span_under_the_apps_and_goes_out_naming_it() -> None:
    clock = Clock()
    audit = Audit(None, clock)
    tracing = audit.tracing = Tracing()
    record = AuditRecord("t1", "http", "POST", "127.0.0.1", clock())
    audit.begin(record, TRACEPARENT)
    assert record.trace is not None
    out = outgoing_traceparent(record, TRACEPARENT).decode()
    assert out == f"00-{APP_TRACE}-{record.trace.span_id.decode()}-01" and APP_SPAN not in out
    record.rule, record.decision, record.status, record.destination = "partner", "allow", 201, "api.test:443"
    record.resolved, record.target = "192.0.2.1:443", "/items"
    clock.now += 0.01
    audit.finish(record)
    assert tracing.tracer is not None
    (span,) = tracing.tracer.recent()
    assert span["kind"] == "client" and span["trace_id"] == APP_TRACE and span["parent_span_id"] == APP_SPAN
    assert span["span_id"] == record.trace.span_id.decode() and span["status"] == "unset"
    assert span["attributes"]["server.address"] == "api.test" and span["attributes"]["server.port"] == 443
    assert span["attributes"]["network.peer.address"] == "192.0.2.1"
    assert span["attributes"]["sidegate.egress.rule"] == "partner" and span["duration_ms"] == 10.0


def test_unsampled_and_untraced_calls() -> None:
    clock = Clock()
    audit = Audit(None, clock)
    record = AuditRecord("t2", "connect", "CONNECT", "127.0.0.1", clock())
    audit.begin(record, TRACEPARENT)  # tracing off: the app's traceparent goes on as it came
    assert record.trace is None and outgoing_traceparent(record, TRACEPARENT) == TRACEPARENT
    tracing = audit.tracing = Tracing(ratio=0.0)
    unsampled = f"00-{APP_TRACE}-{APP_SPAN}-00".encode()
    audit.begin(record, traceparent_in([(b"Host", b"x"), (b"TraceParent", unsampled)]))
    assert record.trace is not None and not record.trace.sampled
    assert outgoing_traceparent(record, b"").endswith(b"-00")  # our span id, not sampled
    audit.finish(record)
    assert tracing.tracer is not None and tracing.tracer.recent() == []


def report(worker_state: str, *, allowed: int, problem: str = "", denial_at: float = 1.0) -> dict[str, Any]:
    return {
        "listener": "127.0.0.1:15001",
        "default_action": "deny",
        "max_body": 100,
        "destinations": [
            {
                "name": "partner",
                "host": "api.partner.test",
                "allowed": allowed,
                "denied": 1,
                "open": 1,
                "tunnels": 0,
            }
        ],
        "rules": [{"rule": "ssrf_guard", "allowed": 0, "denied": 2}],
        "credentials": [
            {
                "destination": "partner",
                "name": "partner-oauth",
                "kind": "oauth2",
                "state": worker_state,
                "problem": problem,
                "expires_in": 30.0 if worker_state == "ok" else 0.0,
                "fetches": 1,
                "last_refresh": 5.0,
            }
        ],
        "resolver": {"servers": "system", "cache_entries": 1, "cache_hits": 2, "lookups": 3, "failures": 0},
        "pools": [
            {
                "address": "192.0.2.7:80",
                "state": "ok",
                "idle": 1,
                "connects": 2,
                "last_failure": None,
                "last_ok": 3.0,
            }
        ],
        "connections": 1,
        "recent_denials": [{"time": denial_at, "request_id": f"d{denial_at}", "rule": "ssrf_guard"}],
    }


def test_egress_reports_of_workers_merge_like_clusters() -> None:
    merged = merge_reports(
        [
            (0, report("ok", allowed=3, denial_at=1.0)),
            (1, report("unavailable", allowed=4, problem="down", denial_at=2.0)),
        ]
    )
    assert merged is not None and merged["workers"] == 2
    (destination,) = merged["destinations"]
    assert (destination["allowed"], destination["denied"], destination["open"]) == (7, 2, 2)
    assert merged["rules"] == [{"rule": "ssrf_guard", "allowed": 0, "denied": 4}]
    (credential,) = merged["credentials"]
    assert (
        credential["state"] == "unavailable"
        and credential["problem"] == "down"
        and credential["fetches"] == 2
    )
    assert [w["state"] for w in credential["workers"]] == ["ok", "unavailable"]
    (pool,) = merged["pools"]
    assert (pool["idle"], pool["connects"]) == (2, 4)
    assert merged["resolver"]["lookups"] == 6 and merged["connections"] == 2
    assert [d["worker"] for d in merged["recent_denials"]] == [1, 0]  # newest first
    assert merge_reports([]) is None
    # A worker that has not used the credential yet does not hide that another's works.
    unused = merge_reports([(0, report("unknown", allowed=0)), (1, report("ok", allowed=1))])
    assert unused is not None and unused["credentials"][0]["state"] == "ok"
    assert unused["credentials"][0]["expires_in"] == 30.0  # the working token's, not the unused 0


def test_a_client_span_is_exported_over_otlp_as_kind_client() -> None:
    clock = Clock()
    audit = Audit(None, clock)
    tracing = audit.tracing = Tracing()
    record = AuditRecord("t3", "connect", "CONNECT", "127.0.0.1", clock())
    audit.begin(record, TRACEPARENT)
    record.rule, record.decision, record.status, record.error = (
        "partner",
        "allow",
        502,
        "egress_connect_failed",
    )
    audit.finish(record)
    assert tracing.tracer is not None
    span = tracing.tracer.spans[0]
    (exported,) = encode([span], {"service.name": "orders"})["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert exported["kind"] == 3 and exported["parentSpanId"] == APP_SPAN  # SPAN_KIND_CLIENT
    assert exported["status"] == {"code": 2}  # a failed call is an error
    attributes = {a["key"]: a["value"] for a in exported["attributes"]}
    assert attributes["error.type"] == {"stringValue": "egress_connect_failed"}

"""Access log, tracing and explain through a real Sidegate, a real app and a real collector."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from support.cache import fetch
from support.gateway import HOST, GatewayFactory, GatewayProcess, free_port, http_get, send_raw

pytestmark = pytest.mark.timeout(60)

KEY = "billing-key-0123456789"
CONSUMERS = [{"name": "billing", "tenant": "acme", "api_keys": [KEY]}]
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def routes() -> list[dict[str, Any]]:
    return [
        {"name": "keyed", "match": {"path_prefix": "/keyed"}, "upstream": "app", "filters": {"api_key": {}}},
        {
            "name": "query-key",
            "match": {"path_prefix": "/q"},
            "upstream": "app",
            "filters": {"api_key": {"header": "", "query": "api_key"}},
        },
        {"name": "dead", "match": {"path_prefix": "/dead"}, "upstream": "dead"},
        {"name": "app", "match": {"path_prefix": "/", "methods": ["GET", "POST"]}, "upstream": "app"},
    ]


def start(gateway: GatewayFactory, observability: dict[str, Any], **options: Any) -> GatewayProcess:
    return gateway(
        routes=routes(),
        upstreams={"dead": {"endpoints": [f"{HOST}:{free_port()}"]}},
        consumers=CONSUMERS,
        observability=observability,
        **options,
    )


def log_lines(path: Path, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The first ``count`` JSON lines of an access log, waiting for the writer thread."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def admin_json(gw: GatewayProcess, path: str) -> tuple[int, Any]:
    status, body = http_get(gw.admin_port, path)
    return status, json.loads(body)


def app_traceparent(response_body: bytes) -> str:
    headers = {name.lower(): value for name, value in json.loads(response_body)["headers"]}
    return headers["traceparent"]


# -- access log ------------------------------------------------------------------------------


def test_every_request_gets_one_json_line_that_says_how_it_ended(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    gw = start(gateway, {"access_log": {"enabled": True, "path": str(log)}})
    sent = [
        fetch(gw, "/hello?secret=s3cr3t"),
        fetch(gw, "/keyed/x", {"X-API-Key": KEY}),
        fetch(gw, "/keyed/x", {"X-API-Key": "wrong-key-0123456789"}),
        fetch(gw, "/dead/y"),
        fetch(gw, "/nowhere", method="DELETE"),
        fetch(gw, "/echo", method="POST", body=b"x" * 1000),
    ]
    lines = log_lines(log, len(sent))
    assert len(lines) == len(sent)
    by_id = {line["request_id"]: line for line in lines}
    ids = [response.headers.get("X-Request-Id") for response in sent]
    assert set(by_id) == set(ids)  # every response's X-Request-Id names its line
    ok, keyed, refused, dead, unrouted, posted = (by_id[i] for i in ids)
    assert (ok["route"], ok["status"], ok["flags"], ok["path"]) == ("app", 200, "", "/hello")
    assert ok["upstream"] == gw.config["upstreams"]["app"]["endpoints"][0]
    assert ok["duration_us"] >= ok["upstream_us"] > 0 and ok["bytes_sent"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ok["time"])
    assert (keyed["consumer"], keyed["tenant"], keyed["status"]) == ("billing", "acme", 200)
    assert (refused["status"], refused["flags"], refused["upstream"]) == (401, "auth_failed", "")
    assert refused["bytes_sent"] == len(sent[2].body) > 0  # Sidegate's own answer counts too
    assert (dead["status"], dead["flags"], dead["route"]) == (503, "upstream_connect_refused", "dead")
    assert (unrouted["status"], unrouted["flags"], unrouted["route"]) == (404, "no_route", None)
    assert (posted["bytes_received"], posted["bytes_sent"]) == (1000, 1000)
    text = log.read_text()
    assert "s3cr3t" not in text and KEY not in text and "wrong-key" not in text  # no credentials
    assert gw.metric("sidegate_access_log_lines_total", result="written") == len(sent)
    assert gw.metric("sidegate_access_log_lines_total", result="dropped") == 0


def test_lines_of_repeated_and_changing_requests_on_one_route_each_tell_their_own(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    # A route reuses the text of its previous line when a request looks the same: every field
    # that can differ must still come out as this request's.
    log = tmp_path / "access.log"
    gw = start(gateway, {"access_log": {"enabled": True, "path": str(log)}})
    # One field changes at a time: the status (the query is not logged), the method, the body size, the path.
    sent = [
        ("GET", "/cache?status=200", b"", 200),
        ("GET", "/cache?status=200", b"", 200),
        ("GET", "/cache?status=404", b"", 404),
        ("POST", "/cache?status=404", b"", 404),
        ("POST", "/cache?status=404", b"x" * 10, 404),
        ("POST", "/cache/b?status=404", b"x" * 10, 404),
    ]
    ids = [
        fetch(gw, path, method=method, body=body).headers.get("X-Request-Id")
        for method, path, body, _ in sent
    ]
    by_id = {line["request_id"]: line for line in log_lines(log, len(sent))}
    told = [
        (by_id[i]["method"], by_id[i]["path"], by_id[i]["status"], by_id[i]["bytes_received"]) for i in ids
    ]
    assert told == [(m, p.partition("?")[0], status, len(b)) for m, p, b, status in sent]
    assert {by_id[i]["route"] for i in ids} == {"app"}
    keyed = [
        fetch(gw, "/keyed/a", {"X-API-Key": KEY}),
        fetch(gw, "/keyed/a"),
        fetch(gw, "/keyed/a", {"X-API-Key": KEY}),
    ]
    lines = {line["request_id"]: line for line in log_lines(log, len(sent) + 3)}
    got = [
        (lines[r.headers.get("X-Request-Id")]["consumer"], lines[r.headers.get("X-Request-Id")]["flags"])
        for r in keyed
    ]
    assert got == [("billing", ""), ("", "auth_failed"), ("billing", "")]


def test_a_key_in_the_query_never_reaches_the_log(gateway: GatewayFactory, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    gw = start(gateway, {"access_log": {"enabled": True, "path": str(log)}})
    assert fetch(gw, f"/q/items?api_key={KEY}").status == 200
    (line,) = log_lines(log, 1)
    assert line["path"] == "/q/items" and line["consumer"] == "billing"
    assert KEY not in log.read_text()


def test_the_log_goes_to_standard_output_by_default(gateway: GatewayFactory) -> None:
    gw = start(gateway, {"access_log": {"enabled": True}})
    response = fetch(gw, '/quote"and\\slash')
    lines = log_lines(gw.log_path, 1)
    assert [line["request_id"] for line in lines] == [response.headers.get("X-Request-Id")]
    assert lines[0]["path"] == '/quote"and\\slash'  # escaped into valid JSON


def test_a_request_refused_before_it_was_read_gets_a_line_too(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    gw = start(gateway, {"access_log": {"enabled": True, "path": str(log)}})
    answer = send_raw(gw.port, b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    request_id = re.search(rb"X-Request-Id: (\S+)", answer, re.IGNORECASE)
    assert request_id is not None
    (line,) = log_lines(log, 1)
    assert (line["status"], line["flags"], line["path"]) == (400, "protocol_error", None)
    assert line["request_id"] == request_id.group(1).decode() and line["reason"]


def test_the_log_can_be_switched_on_by_a_reload(gateway: GatewayFactory, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    gw = start(gateway, {})
    fetch(gw, "/before")
    config = dict(gw.config, observability={"access_log": {"enabled": True, "path": str(log)}})
    gw.write_config(config)
    status, _ = http_get(gw.admin_port, "/reload", method="POST")
    assert status == 200
    fetch(gw, "/after")
    assert [line["path"] for line in log_lines(log, 1)] == ["/after"]


# -- tracing ---------------------------------------------------------------------------------


def test_a_traced_request_has_one_trace_id_in_the_app_the_log_and_the_trace_buffer(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    gw = start(gateway, {"access_log": {"enabled": True, "path": str(log)}, "tracing": {"enabled": True}})
    sent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    response = fetch(gw, "/traced", {"traceparent": sent, "tracestate": "vendor=1"})
    assert response.status == 200
    version, trace_id, our_span, flags = app_traceparent(response.body).split("-")
    assert (version, trace_id, flags) == ("00", CALLER_TRACE, "01")
    assert our_span != CALLER_SPAN  # the app's parent is Sidegate's span, not the caller's
    headers = {name.lower(): value for name, value in json.loads(response.body)["headers"]}
    assert headers["tracestate"] == "vendor=1"
    (line,) = log_lines(log, 1)
    assert line["trace_id"] == CALLER_TRACE
    status, traces = admin_json(gw, f"/traces?trace_id={CALLER_TRACE}")
    assert status == 200
    (span,) = traces["spans"]
    assert (span["span_id"], span["parent_span_id"], span["name"]) == (our_span, CALLER_SPAN, "GET app")
    assert span["attributes"]["http.response.status_code"] == 200
    assert span["attributes"]["sidegate.request_id"] == response.headers.get("X-Request-Id")
    assert gw.metric("sidegate_trace_spans_total", result="recorded") == 1


def test_unsampled_callers_are_propagated_but_not_recorded(gateway: GatewayFactory) -> None:
    gw = start(gateway, {"tracing": {"enabled": True, "sample_ratio": 1.0}})
    response = fetch(gw, "/x", {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"})
    assert app_traceparent(response.body).endswith("-00")  # the caller said: not sampled
    assert admin_json(gw, "/traces")[1]["spans"] == []
    fresh = app_traceparent(fetch(gw, "/y").body)  # no caller: a new trace, sampled at ratio 1
    assert fresh.endswith("-01") and CALLER_TRACE not in fresh
    assert [s["trace_id"] for s in admin_json(gw, "/traces")[1]["spans"]] == [fresh.split("-")[1]]


@pytest.mark.parametrize(
    "bad",
    [
        f"00-{'0' * 32}-{CALLER_SPAN}-01",  # all-zero trace id
        f"00-{CALLER_TRACE.upper()}-{CALLER_SPAN}-01",  # upper-case hex
        f"ff-{CALLER_TRACE}-{CALLER_SPAN}-01",  # version ff
        "garbage",
        "x" * 5000,
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(gateway: GatewayFactory, bad: str) -> None:
    gw = start(gateway, {"tracing": {"enabled": True, "sample_ratio": 0.0}})
    response = fetch(gw, "/x", {"traceparent": bad})
    assert response.status == 200
    value = app_traceparent(response.body)
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", value)
    assert CALLER_TRACE not in value.lower()


def test_with_tracing_off_the_callers_traceparent_goes_on_unchanged(gateway: GatewayFactory) -> None:
    gw = start(gateway, {})
    sent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    assert app_traceparent(fetch(gw, "/x", {"traceparent": sent}).body) == sent


class Collector:
    """A real OTLP/HTTP receiver on loopback that keeps every JSON export request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                collector.requests.append(
                    {"path": self.path, "type": self.headers["Content-Type"], "body": json.loads(body)}
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[dict[str, Any]]:
        return [
            span
            for request in self.requests
            for resource in request["body"]["resourceSpans"]
            for scope in resource["scopeSpans"]
            for span in scope["spans"]
        ]


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    running.server.shutdown()
    running.server.server_close()


def test_spans_are_exported_over_otlp_http_as_the_otel_variables_say(
    gateway: GatewayFactory, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{HOST}:{collector.port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    gw = start(gateway, {"tracing": {"enabled": True, "sample_ratio": 0.0}})
    response = fetch(gw, "/dead/z", {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    assert response.status == 503
    deadline = time.monotonic() + 5
    while not collector.spans():
        assert time.monotonic() < deadline, "no span reached the collector"
        time.sleep(0.05)
    (request,) = collector.requests
    assert (request["path"], request["type"]) == ("/v1/traces", "application/json")
    resource = request["body"]["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "checkout"}} in resource
    (span,) = collector.spans()
    assert (span["traceId"], span["parentSpanId"], span["kind"]) == (CALLER_TRACE, CALLER_SPAN, 2)
    assert span["status"] == {"code": 2}  # a 503 is an error
    attributes = {a["key"]: a["value"] for a in span["attributes"]}
    assert attributes["sidegate.response_flags"] == {"stringValue": "upstream_connect_refused"}
    assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0


# -- explain ---------------------------------------------------------------------------------


def explain(gw: GatewayProcess, request_id: str | None) -> dict[str, Any]:
    assert request_id
    status, record = admin_json(gw, f"/explain/{request_id}")
    assert status == 200, record
    return record


def test_explain_tells_which_route_which_endpoint_and_why_for_a_dead_upstream(
    gateway: GatewayFactory,
) -> None:
    gw = start(gateway, {})
    response = fetch(gw, "/dead/order")
    assert response.status == 503
    record = explain(gw, response.headers.get("X-Request-Id"))
    endpoint = gw.config["upstreams"]["dead"]["endpoints"][0]
    assert (record["route"], record["status"], record["response_flags"]) == (
        "dead",
        503,
        "upstream_connect_refused",
    )
    assert record["upstream"]["cluster"] == "dead"
    (attempt,) = record["upstream"]["tries"]
    assert attempt["endpoint"] == endpoint and attempt["result"].startswith("connect_refused")
    assert endpoint in record["summary"] and "connect" in record["summary"]
    assert record["timings_ms"]["total"] >= 0


def test_explain_tells_why_no_route_matched_and_what_each_filter_decided(gateway: GatewayFactory) -> None:
    gw = start(gateway, {})
    unrouted = explain(gw, fetch(gw, "/anything", method="DELETE").headers.get("X-Request-Id"))
    assert unrouted["route"] is None and unrouted["response_flags"] == "no_route"
    reasons = {row["route"]: row["result"] for row in unrouted["routing"]}
    assert "DELETE" in reasons["app"] and "/keyed" in reasons["keyed"]
    refused = explain(gw, fetch(gw, "/keyed/a").headers.get("X-Request-Id"))
    assert refused["filters"] == [{"filter": "api_key", "decision": "answered 401"}]
    assert refused["upstream"] is None and refused["response_flags"] == "auth_failed"
    passed = explain(gw, fetch(gw, "/keyed/a", {"X-API-Key": KEY}).headers.get("X-Request-Id"))
    assert passed["filters"] == [{"filter": "api_key", "decision": "passed"}]
    assert (passed["consumer"], passed["tenant"]) == ("billing", "acme")
    assert passed["upstream"]["tries"][0]["result"] == "responded 200"


def test_explain_keeps_a_client_request_id_and_forgets_the_oldest(gateway: GatewayFactory) -> None:
    gw = start(gateway, {"explain": {"recent": 3}})
    fetch(gw, "/first", {"X-Request-Id": "my-own-id-1"})
    assert explain(gw, "my-own-id-1")["request"]["path"] == "/first"
    for n in range(3):
        fetch(gw, f"/later{n}")
    status, answer = admin_json(gw, "/explain/my-own-id-1")
    assert status == 404 and "observability.explain.recent" in answer["reason"]
    assert admin_json(gw, "/explain/" + "x" * 300)[0] == 400


def test_explain_and_traces_find_requests_of_every_worker(gateway: GatewayFactory) -> None:
    gw = start(gateway, {"tracing": {"enabled": True, "sample_ratio": 1.0}}, workers=2)
    responses = [fetch(gw, f"/w{n}") for n in range(8)]
    for response in responses:
        record = explain(gw, response.headers.get("X-Request-Id"))
        assert record["worker"] in (0, 1) and record["status"] == 200
    status, traces = admin_json(gw, "/traces")
    assert status == 200 and len(traces["spans"]) == 8 and len(traces["workers"]) == 2

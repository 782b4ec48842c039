"""Metrics registry and its Prometheus exposition, checked with a real Prometheus text parser."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from sidegate.observe import BUCKETS, MAX_CONSUMERS, Metrics, merge, render_prometheus
from sidegate.observe.exposition import escape_label

DURATION = "http_server_request_duration_seconds"


def parse(snapshot: dict[str, object]) -> dict[str, list[Sample]]:
    """Render and parse back: family name -> samples (fails on any format error)."""
    text = render_prometheus(snapshot).decode("utf-8")
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_histogram_counts_sums_and_cumulative_buckets() -> None:
    m = Metrics()
    route = m.route("api")
    for seconds in (0.0003, 0.0005, 0.0007, 0.02, 3.0, 42.0):
        route.observe(b"GET", 200, seconds)
    route.observe(b"POST", 503, 0.001)

    fams = parse(m.snapshot())
    hist = fams[DURATION]
    get200 = {"http_route": "api", "http_request_method": "GET", "http_response_status_code": "200"}
    assert value(hist, f"{DURATION}_count", **get200) == 6
    assert value(hist, f"{DURATION}_sum", **get200) == pytest.approx(0.0003 + 0.0005 + 0.0007 + 0.02 + 3 + 42)
    # le is inclusive: 0.0005 lands in the 0.0005 bucket.
    assert value(hist, f"{DURATION}_bucket", le="0.0005", **get200) == 2
    assert value(hist, f"{DURATION}_bucket", le="0.001", **get200) == 3
    assert value(hist, f"{DURATION}_bucket", le="0.025", **get200) == 4
    assert value(hist, f"{DURATION}_bucket", le="5.0", **get200) == 5
    assert value(hist, f"{DURATION}_bucket", le="10.0", **get200) == 5
    assert value(hist, f"{DURATION}_bucket", le="+Inf", **get200) == 6
    buckets = [
        s.value for s in hist if s.name.endswith("_bucket") and s.labels["http_request_method"] == "GET"
    ]
    assert len(buckets) == len(BUCKETS) + 1
    assert buckets == sorted(buckets)  # cumulative

    totals = fams["http_server_requests"]
    assert value(totals, "http_server_requests_total", **get200) == 6
    assert value(totals, "http_server_requests_total", http_request_method="POST") == 1
    assert value(totals, "http_server_requests_total", http_response_status_code="503") == 1


def test_route_stats_survive_a_reload() -> None:
    m = Metrics()
    m.route("api").observe(b"GET", 200, 0.001)
    m.route("api").observe(b"GET", 200, 0.001)  # the same object comes back: counters go on
    assert m.route("api") is m.route("api")
    assert value(parse(m.snapshot())["http_server_requests"], "http_server_requests_total") == 2


def test_odd_methods_and_statuses_fold_into_other() -> None:
    m = Metrics()
    route = m.route("r")
    for i in range(200):
        route.observe(f"X-METHOD-{i}".encode(), 200, 0.001)
    route.observe(b"get", 200, 0.001)  # methods are case-sensitive
    route.observe(b"GET", 999, 0.001)
    route.observe(b"GET", 42, 0.001)
    route.observe(b"PROPFIND", 700, 0.001)

    rows = m.snapshot()["requests"]
    keys = {(r["method"], r["status"]) for r in rows}
    assert keys == {("_OTHER", "200"), ("GET", "_OTHER"), ("_OTHER", "_OTHER")}
    totals = parse(m.snapshot())["http_server_requests"]
    assert (
        value(
            totals,
            "http_server_requests_total",
            http_request_method="_OTHER",
            http_response_status_code="200",
        )
        == 201
    )
    assert value(totals, "http_server_requests_total", http_request_method="GET") == 2


def test_gauges_counters_and_config_metrics() -> None:
    m = Metrics()
    m.connections_active += 3
    m.connections_active -= 1
    m.requests_active += 1
    m.streams_active += 4
    m.bytes_received += 1000
    m.bytes_sent += 2500
    m.config_version = 7
    m.config_reload(True)
    m.config_reload(False)
    m.upstream("app", "127.0.0.1:3000").requests += 5
    m.upstream_request("app", "127.0.0.1:3000")
    m.upstream_failure("app", "127.0.0.1:3000", "connect")
    m.upstream_failure("app", "127.0.0.1:3000", "connect")
    m.upstream_failure("app", "127.0.0.1:3001", "timeout")

    fams = parse(m.snapshot())
    assert value(fams["sidegate_connections_active"], "sidegate_connections_active") == 2
    assert value(fams["sidegate_requests_active"], "sidegate_requests_active") == 1
    assert value(fams["sidegate_streams_active"], "sidegate_streams_active") == 4
    assert value(fams["sidegate_received_bytes"], "sidegate_received_bytes_total") == 1000
    assert value(fams["sidegate_sent_bytes"], "sidegate_sent_bytes_total") == 2500
    assert value(fams["sidegate_config_version"], "sidegate_config_version") == 7
    assert value(fams["sidegate_config_last_reload_success"], "sidegate_config_last_reload_success") == 0
    reloads = fams["sidegate_config_reloads"]
    assert value(reloads, "sidegate_config_reloads_total", result="ok") == 1
    assert value(reloads, "sidegate_config_reloads_total", result="failed") == 1
    ups = fams["sidegate_upstream_requests"]
    assert value(ups, "sidegate_upstream_requests_total", upstream="app", endpoint="127.0.0.1:3000") == 6
    fails = fams["sidegate_upstream_failures"]
    assert value(fails, "sidegate_upstream_failures_total", endpoint="127.0.0.1:3000", kind="connect") == 2
    assert value(fails, "sidegate_upstream_failures_total", endpoint="127.0.0.1:3001", kind="timeout") == 1
    assert value(fams["process_resident_memory_bytes"], "process_resident_memory_bytes") > 1_000_000
    assert value(fams["process_start_time_seconds"], "process_start_time_seconds") == m.start_time


def test_merge_sums_two_workers() -> None:
    a, b = Metrics(), Metrics()
    a.route("api").observe(b"GET", 200, 0.002)
    b.route("api").observe(b"GET", 200, 0.2)
    b.route("api").observe(b"DELETE", 204, 0.0001)
    b.route("other").observe(b"GET", 404, 0.0001)
    a.connections_active, b.connections_active = 2, 3
    a.bytes_sent, b.bytes_sent = 10, 20
    a.config_version, b.config_version = 3, 4
    b.config_reload(False)
    a.upstream_failure("app", "e:1", "reset")
    b.upstream_failure("app", "e:1", "reset")

    # Snapshots cross process boundaries as JSON.
    merged = merge([json.loads(json.dumps(a.snapshot())), json.loads(json.dumps(b.snapshot()))])
    fams = parse(merged)
    get200 = {"http_route": "api", "http_request_method": "GET", "http_response_status_code": "200"}
    hist = fams[DURATION]
    assert value(hist, f"{DURATION}_count", **get200) == 2
    assert value(hist, f"{DURATION}_sum", **get200) == pytest.approx(0.202)
    assert value(hist, f"{DURATION}_bucket", le="0.0025", **get200) == 1
    assert value(hist, f"{DURATION}_bucket", le="0.25", **get200) == 2
    assert value(hist, f"{DURATION}_count", http_request_method="DELETE") == 1
    assert value(hist, f"{DURATION}_count", http_route="other") == 1
    assert value(fams["sidegate_connections_active"], "sidegate_connections_active") == 5
    assert value(fams["sidegate_sent_bytes"], "sidegate_sent_bytes_total") == 30
    assert value(fams["sidegate_config_version"], "sidegate_config_version") == 4
    assert value(fams["sidegate_config_last_reload_success"], "sidegate_config_last_reload_success") == 0
    assert value(fams["sidegate_upstream_failures"], "sidegate_upstream_failures_total", kind="reset") == 2
    rss = value(fams["process_resident_memory_bytes"], "process_resident_memory_bytes")
    assert rss == merged["process_resident_memory_bytes"]
    assert value(fams["process_start_time_seconds"], "process_start_time_seconds") == min(
        a.start_time, b.start_time
    )
    # Merging does not change its inputs, and a single snapshot merges to itself.
    assert merge([a.snapshot()])["requests"] == a.snapshot()["requests"]


def test_label_values_are_escaped() -> None:
    m = Metrics()
    nasty = 'a"b\\c\nd'
    m.route(nasty).observe(b"GET", 200, 0.001)
    m.upstream_failure("up", "e", nasty)
    fams = parse(m.snapshot())
    assert value(fams["http_server_requests"], "http_server_requests_total")  # parsed at all
    assert {s.labels["http_route"] for s in fams["http_server_requests"]} == {nasty}
    assert escape_label(nasty) == 'a\\"b\\\\c\\nd'


def test_empty_registry_renders_every_family() -> None:
    fams = parse(Metrics().snapshot())
    assert DURATION in fams and fams[DURATION] == []
    assert value(fams["sidegate_config_reloads"], "sidegate_config_reloads_total", result="ok") == 0
    assert value(fams["sidegate_config_last_reload_success"], "sidegate_config_last_reload_success") == 1
    assert value(parse(merge([]))["sidegate_config_version"], "sidegate_config_version") == 0


def test_text_format_shape() -> None:
    m = Metrics()
    m.route("r").observe(b"GET", 200, 0.001)
    text = render_prometheus(m.snapshot()).decode()
    assert text.endswith("\n")
    assert "# TYPE http_server_request_duration_seconds histogram\n" in text
    assert "# TYPE http_server_requests_total counter\n" in text
    labels = 'http_route="r",http_request_method="GET",http_response_status_code="200"'
    assert f'{DURATION}_bucket{{{labels},le="+Inf"}} 1\n' in text
    assert f"{DURATION}_count{{{labels}}} 1\n" in text


def test_merge_rejects_other_buckets() -> None:
    snap = Metrics().snapshot()
    snap["buckets"] = [1.0]
    with pytest.raises(ValueError, match="buckets"):
        merge([snap])


# -- consumers ------------------------------------------------------------------------------------


def test_consumer_children_carry_consumer_and_tenant_labels() -> None:
    m = Metrics()
    route = m.route("api")
    route.observe(b"GET", 200, 0.001)
    billing = route.for_consumer("billing", "acme")
    assert route.for_consumer("billing", "acme") is billing  # kept: the second call finds it
    assert route.for_consumer("", "") is route  # no consumer: the route's own series
    billing.observe(b"GET", 200, 0.001)
    billing.observe(b"POST", 201, 0.002)
    route.for_consumer("reports", "globex").observe(b"GET", 200, 0.001)

    fams = parse(m.snapshot())
    totals = fams["http_server_requests"]
    assert value(totals, "http_server_requests_total", consumer="billing", http_request_method="GET") == 1
    assert value(totals, "http_server_requests_total", consumer="billing", http_request_method="POST") == 1
    assert value(totals, "http_server_requests_total", consumer="reports", tenant="globex") == 1
    anonymous = [s for s in totals if "consumer" not in s.labels]
    assert [(s.labels["http_request_method"], s.value) for s in anonymous] == [("GET", 1)]
    assert "tenant" not in anonymous[0].labels  # absent, not empty
    hist = fams[DURATION]
    assert (
        value(hist, f"{DURATION}_count", consumer="billing", tenant="acme", http_request_method="POST") == 1
    )


def test_consumers_are_bounded_per_route() -> None:
    m = Metrics()
    route = m.route("api")
    for i in range(MAX_CONSUMERS + 50):
        route.for_consumer(f"c{i}", "t").observe(b"GET", 200, 0.001)
    route.for_consumer("c0", "t").observe(b"GET", 200, 0.001)  # an early one keeps its own child
    m.route("other").for_consumer("c149", "t").observe(b"GET", 200, 0.001)  # the cap is per route

    rows = [r for r in m.snapshot()["requests"] if r["route"] == "api"]
    consumers = {r["consumer"] for r in rows}
    assert len(consumers) == MAX_CONSUMERS + 1
    assert "_OTHER" in consumers and "c149" not in consumers
    fams = parse(m.snapshot())["http_server_requests"]
    assert value(fams, "http_server_requests_total", consumer="_OTHER", tenant="_OTHER") == 50
    assert value(fams, "http_server_requests_total", consumer="c0") == 2
    assert value(fams, "http_server_requests_total", http_route="other", consumer="c149") == 1


def test_a_consumer_that_changes_tenant_is_counted_under_each() -> None:
    m = Metrics()
    route = m.route("api")
    route.for_consumer("u", "a").observe(b"GET", 200, 0.001)
    route.for_consumer("u", "b").observe(b"GET", 200, 0.001)
    child = route.for_consumer("u", "a")
    assert child.for_consumer("u", "b") is route.for_consumer("u", "b")  # a child asks its route
    child.observe(b"GET", 200, 0.001)
    fams = parse(m.snapshot())["http_server_requests"]
    assert value(fams, "http_server_requests_total", consumer="u", tenant="a") == 2
    assert value(fams, "http_server_requests_total", consumer="u", tenant="b") == 1


# -- upstreams ------------------------------------------------------------------------------------

CLIENT = "http_client_request_duration_seconds"


def test_upstream_durations_by_endpoint_and_status() -> None:
    m = Metrics()
    ep = m.upstream("app", "127.0.0.1:3000")
    assert m.upstream("app", "127.0.0.1:3000") is ep
    m.upstream("app", "127.0.0.1:3001")  # made at config load: a zero counter before any request
    ep.observe(0.004, 200)
    ep.observe(0.3, 200)
    ep.observe(0.001, 503)
    ep.observe(0.001, 1000)  # no such status: _OTHER
    ep.failure("connect")

    fams = parse(m.snapshot())
    hist = fams[CLIENT]
    ok = {"upstream": "app", "endpoint": "127.0.0.1:3000", "http_response_status_code": "200"}
    assert value(hist, f"{CLIENT}_count", **ok) == 2
    assert value(hist, f"{CLIENT}_sum", **ok) == pytest.approx(0.304)
    assert value(hist, f"{CLIENT}_bucket", le="0.005", **ok) == 1
    assert value(hist, f"{CLIENT}_count", http_response_status_code="503") == 1
    assert value(hist, f"{CLIENT}_count", http_response_status_code="_OTHER") == 1
    ups = fams["sidegate_upstream_requests"]
    assert value(ups, "sidegate_upstream_requests_total", endpoint="127.0.0.1:3000") == 4
    assert value(ups, "sidegate_upstream_requests_total", endpoint="127.0.0.1:3001") == 0
    fails = fams["sidegate_upstream_failures"]
    assert value(fails, "sidegate_upstream_failures_total", kind="connect") == 1


def test_merge_sums_consumers_and_upstream_histograms() -> None:
    a, b = Metrics(), Metrics()
    for m in (a, b):
        m.route("api").for_consumer("billing", "acme").observe(b"GET", 200, 0.01)
        m.upstream("app", "e:1").observe(0.01, 200)
    b.upstream("app", "e:2").observe(0.02, 500)
    merged = merge([json.loads(json.dumps(a.snapshot())), json.loads(json.dumps(b.snapshot()))])
    fams = parse(merged)
    assert value(fams["http_server_requests"], "http_server_requests_total", consumer="billing") == 2
    assert value(fams[CLIENT], f"{CLIENT}_count", endpoint="e:1") == 2
    assert value(fams[CLIENT], f"{CLIENT}_sum", endpoint="e:1") == pytest.approx(0.02)
    assert value(fams[CLIENT], f"{CLIENT}_count", endpoint="e:2", http_response_status_code="500") == 1
    assert value(fams["sidegate_upstream_requests"], "sidegate_upstream_requests_total", endpoint="e:1") == 2


def test_policy_and_cache_tables_render_and_merge() -> None:
    a, b = Metrics().snapshot(), Metrics().snapshot()
    a["policy"] = {"decisions": [["api", "rate_limit", "limited", 2]], "consumers": [["api", "acme", "u", 1]]}
    b["policy"] = {"decisions": [["api", "rate_limit", "limited", 3], ["api", "api_key", "ok", 4]]}
    a["cache"] = {"results": [["api", "hit", 5]], "stored": 1, "stored_bytes": 10, "store_errors": {}}
    fams = parse(merge([a, b]))
    decisions = fams["sidegate_policy_decisions"]
    assert value(decisions, "sidegate_policy_decisions_total", filter="rate_limit", result="limited") == 5
    assert value(decisions, "sidegate_policy_decisions_total", filter="api_key") == 4
    assert value(fams["sidegate_consumer_requests"], "sidegate_consumer_requests_total", consumer="u") == 1
    assert value(fams["sidegate_cache_requests"], "sidegate_cache_requests_total", result="hit") == 5
    assert "sidegate_cache_requests" not in parse(merge([Metrics().snapshot()]))  # no cache: none

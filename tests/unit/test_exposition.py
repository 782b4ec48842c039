"""OpenMetrics rendering, content negotiation and the app's families merged into one exposition,
each checked with prometheus_client's own parsers (the Prometheus text one and the OpenMetrics one)."""

from __future__ import annotations

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from sidegate.observe import Metrics, merge, render, render_openmetrics, wants_openmetrics
from sidegate.observe.app_metrics import AppScrape, translate

DURATION = "http_server_request_duration_seconds"


def busy_snapshot() -> dict[str, object]:
    m = Metrics()
    route = m.route("api")
    route.observe(b"GET", 200, 0.003)
    route.for_consumer("billing", "acme").observe(b"POST", 201, 0.02)
    m.upstream("app", "127.0.0.1:3000").observe(0.002, 200)
    m.upstream("app", "127.0.0.1:3000").failure("timeout")
    m.bytes_sent += 123
    m.config_reload(True)
    snap = merge([m.snapshot()])
    snap["policy"] = {"decisions": [["api", "rate_limit", "limited", 2]]}
    snap["cache"] = {"results": [["api", "hit", 1]], "stored": 1, "stored_bytes": 9, "store_errors": {}}
    snap["cache_store"] = {"entries": 1, "bytes": 9, "evictions": 0, "partitions": {"": 9}}
    return snap


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", False),
        ("*/*", False),
        ("text/plain;version=0.0.4", False),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text; version=0.0.1", True),
        # What Prometheus sends.
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
            "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            True,
        ),
        ("text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=0.5", False),
        ("application/openmetrics-text;q=0", False),
        ("Application/OpenMetrics-Text;version=1.0.0", True),
    ],
)
def test_content_negotiation(accept: str, expected: bool) -> None:
    assert wants_openmetrics(accept) is expected


def test_openmetrics_parses_and_matches_the_text_format() -> None:
    snap = busy_snapshot()
    om_text = render_openmetrics(snap).decode()
    assert om_text.endswith("\n# EOF\n") and om_text.count("# EOF") == 1
    om = {f.name: f for f in parse_openmetrics(om_text)}
    text = {f.name: f for f in parse_text(render(snap).decode())}
    assert set(om) == set(text)
    for name, family in om.items():
        assert family.type == text[name].type, name
        om_samples = sorted((s.name, sorted(s.labels.items()), s.value) for s in family.samples)
        text_samples = sorted((s.name, sorted(s.labels.items()), s.value) for s in text[name].samples)
        assert om_samples == text_samples, name
    assert om[DURATION].unit == "seconds"
    assert om["sidegate_sent_bytes"].unit == "bytes"
    assert "# TYPE sidegate_sent_bytes counter\n" in om_text  # the family has no _total...
    assert "\nsidegate_sent_bytes_total 123\n" in om_text  # ...its sample has
    consumer = [s for s in om["http_server_requests"].samples if s.labels.get("consumer") == "billing"]
    assert [(s.labels["tenant"], s.value) for s in consumer] == [("acme", 1)]


def test_help_text_quotes_are_escaped_in_openmetrics_only() -> None:
    om = translate('# HELP a Say "hi"\n# TYPE a gauge\na 1\n', False, True)
    assert om[0].lines[0] == '# HELP a Say \\"hi\\"'
    text = translate('# HELP a Say \\"hi\\"\n# TYPE a gauge\na 1\n# EOF\n', True, False)
    assert text[0].lines[0] == '# HELP a Say "hi"'


APP_TEXT = """\
# HELP app_jobs_total Jobs done.
# TYPE app_jobs_total counter
app_jobs_total{queue="fast"} 3
app_jobs_total{queue="slow",} 1 1700000000000
# HELP app_latency_seconds Latency.
# TYPE app_latency_seconds histogram
app_latency_seconds_bucket{le="0.1"} 1
app_latency_seconds_bucket{le="+Inf"} 2
app_latency_seconds_sum 0.35
app_latency_seconds_count 2
# A comment the app wrote.
app_untyped{path="/a b}"} 7
app_plain 1
# TYPE http_server_requests_total counter
http_server_requests_total{app="yes"} 99
# TYPE sidegate_app_metrics_scrape_success gauge
sidegate_app_metrics_scrape_success 5
"""

APP_OPENMETRICS = """\
# TYPE app_jobs counter
# HELP app_jobs Jobs done.
app_jobs_total{queue="fast"} 3 # {trace_id="abc"} 1.0 1700000000.5
app_jobs_created{queue="fast"} 1700000000.0
# TYPE app_build info
app_build_info{version="1.2"} 1
# TYPE app_state stateset
app_state{app_state="on"} 1
app_state{app_state="off"} 0
# TYPE app_latency_seconds histogram
# UNIT app_latency_seconds seconds
app_latency_seconds_bucket{le="0.1"} 1
app_latency_seconds_bucket{le="+Inf"} 2
app_latency_seconds_sum 0.35
app_latency_seconds_count 2
app_latency_seconds_created 1700000000.0
# TYPE app_mystery unknown
app_mystery 4 1700000000.25
# EOF
"""


@pytest.mark.parametrize("source_openmetrics", [False, True], ids=["app-text", "app-openmetrics"])
@pytest.mark.parametrize("openmetrics", [False, True], ids=["serve-text", "serve-openmetrics"])
def test_app_families_are_translated_merged_and_parse(source_openmetrics: bool, openmetrics: bool) -> None:
    source = APP_OPENMETRICS if source_openmetrics else APP_TEXT
    app = AppScrape(True, 0.012, tuple(translate(source, source_openmetrics, openmetrics)))
    body = render(busy_snapshot(), openmetrics=openmetrics, app=app).decode()
    parser = parse_openmetrics if openmetrics else parse_text
    families = {f.name: f for f in parser(body)}
    if openmetrics:
        assert body.endswith("\n# EOF\n") and body.count("# EOF") == 1

    jobs = families["app_jobs"]
    assert jobs.type == "counter"
    assert next((s.name, s.labels, s.value) for s in jobs.samples if s.name == "app_jobs_total") == (
        "app_jobs_total",
        {"queue": "fast"},
        3,
    )
    latency = families["app_latency_seconds"]
    assert latency.type == "histogram"
    assert {s.name for s in latency.samples} >= {"app_latency_seconds_bucket", "app_latency_seconds_count"}
    assert [s.value for s in latency.samples if s.name == "app_latency_seconds_count"] == [2]
    assert families["sidegate_app_metrics_scrape_success"].samples[0].value == 1
    assert families["sidegate_app_metrics_scrape_duration_seconds"].samples[0].value == 0.012
    if source_openmetrics:
        build = families["app_build"] if openmetrics else families["app_build_info"]
        assert build.type == ("info" if openmetrics else "gauge")
        assert [(s.name, s.labels["version"]) for s in build.samples] == [("app_build_info", "1.2")]
        assert families["app_mystery"].type == "unknown"
        mystery = families["app_mystery"].samples[0]
        assert mystery.timestamp is not None and float(mystery.timestamp) == pytest.approx(1700000000.25)
        dropped = 0
    else:
        assert families["app_untyped"].samples[0].labels == {"path": "/a b}"}
        slow = next(s for s in jobs.samples if s.labels.get("queue") == "slow")
        assert slow.timestamp is not None and float(slow.timestamp) == pytest.approx(1_700_000_000)
        # Sidegate's names win: the app's http_server_requests_total and scrape gauge are left out.
        assert [s.value for s in families["sidegate_app_metrics_scrape_success"].samples] == [1]
        assert all(s.labels.get("app") != "yes" for s in families["http_server_requests"].samples)
        dropped = 2
    assert families["sidegate_app_metrics_dropped_families"].samples[0].value == dropped


def test_a_failed_app_scrape_only_adds_its_gauges() -> None:
    body = render(busy_snapshot(), openmetrics=True, app=AppScrape(False, 1.0, error="refused")).decode()
    families = {f.name: f for f in parse_openmetrics(body)}
    assert families["sidegate_app_metrics_scrape_success"].samples[0].value == 0
    assert families["sidegate_app_metrics_scrape_duration_seconds"].samples[0].value == 1.0
    assert not any(name.startswith("app_") for name in families)


def test_a_family_written_twice_by_the_app_is_written_once() -> None:
    text = '# TYPE a gauge\na{x="1"} 1\n# TYPE b gauge\nb 2\n# TYPE a gauge\na{x="2"} 3\n'
    families = translate(text, False, True)
    assert [f.name for f in families] == ["a", "b"]
    body = render(Metrics().snapshot(), openmetrics=True, app=AppScrape(True, 0.0, tuple(families)))
    a = {f.name: f for f in parse_openmetrics(body.decode())}["a"]
    assert [s.value for s in a.samples] == [1, 3]


def test_a_broken_label_set_fails_the_translation() -> None:
    with pytest.raises(ValueError, match="label"):
        translate('a{x="1} 1\n', False, False)

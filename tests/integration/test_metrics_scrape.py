"""Admin ``/metrics`` through a real Sidegate and a real app: a known mix of requests is sent, the
scrape is parsed with prometheus_client's parsers (Prometheus text and OpenMetrics) and its
numbers must match exactly; the app's own metrics are merged in, a dead app never breaks the
scrape, and ``workers: 2`` adds its workers up."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from support.gateway import HOST, GatewayFactory, GatewayProcess, OriginProcess, free_port

pytestmark = pytest.mark.timeout(90)

KEY = "billing-key-0123456789"
CONSUMERS = [{"name": "billing", "tenant": "acme", "api_keys": [KEY]}]
ROUTES = [
    {"name": "keyed", "match": {"path_prefix": "/keyed"}, "upstream": "app", "filters": {"api_key": {}}},
    {"name": "status", "match": {"path_prefix": "/status"}, "upstream": "app"},
    {"name": "open", "match": {"path_prefix": "/"}, "upstream": "app"},
]
DURATION = "http_server_request_duration_seconds"
CLIENT = "http_client_request_duration_seconds"
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"

# (method, path, with the key) -> how many; and the (route, method, status, consumer) each gives.
TRAFFIC: list[tuple[str, str, bool, int, tuple[str, str, str, str]]] = [
    ("GET", "/", False, 5, ("open", "GET", "200", "")),
    ("POST", "/echo", False, 3, ("open", "POST", "200", "")),
    ("GET", "/status/404", False, 2, ("status", "GET", "404", "")),
    ("GET", "/status/503", False, 4, ("status", "GET", "503", "")),
    ("DELETE", "/status/204", False, 1, ("status", "DELETE", "204", "")),
    ("GET", "/keyed/a", True, 3, ("keyed", "GET", "200", "billing")),
    ("GET", "/keyed/a", False, 2, ("keyed", "GET", "401", "")),
]
FORWARDED = sum(n for _, _, _, n, (_, _, status, _) in TRAFFIC if status != "401")


def send(port: int, method: str, path: str, key: bool = False) -> int:
    """One request on a new connection; the response status."""
    body = b"hello" if method == "POST" else None
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", data=body, method=method)
    if key:
        req.add_header("X-API-Key", KEY)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as err:
        err.read()
        return err.code


def send_traffic(gw: GatewayProcess) -> None:
    for method, path, key, count, (_, _, status, _) in TRAFFIC:
        for _ in range(count):
            assert send(gw.port, method, path, key) == int(status), (method, path)


def scrape(gw: GatewayProcess, accept: str | None = None) -> tuple[str, str, dict[str, Metric]]:
    """GET /metrics: (content type, body, families parsed with the parser of that format)."""
    req = urllib.request.Request(gw.admin_url("/metrics"))
    if accept is not None:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        ctype, body = resp.headers["Content-Type"], resp.read().decode()
    parser = parse_openmetrics if ctype.startswith("application/openmetrics-text") else parse_text
    families: dict[str, Metric] = {}
    for family in parser(body):
        assert family.name not in families, f"{family.name} written twice"
        families[family.name] = family
    return ctype, body, families


def values(family: Metric, sample: str, *keys: str) -> Counter[tuple[str, ...]]:
    """Sample values of ``sample`` by the given label values (absent labels read as "")."""
    out: Counter[tuple[str, ...]] = Counter()
    for s in family.samples:
        if s.name == sample:
            out[tuple(s.labels.get(k, "") for k in keys)] += int(s.value)
    return out


def expected() -> Counter[tuple[str, ...]]:
    want: Counter[tuple[str, ...]] = Counter()
    for *_, count, labels in TRAFFIC:
        want[labels] += count
    return want


def check_requests(families: dict[str, Metric], times: int = 1) -> None:
    keys = ("http_route", "http_request_method", "http_response_status_code", "consumer")
    want = Counter({k: v * times for k, v in expected().items()})
    assert values(families["http_server_requests"], "http_server_requests_total", *keys) == want
    hist = families[DURATION]
    assert values(hist, f"{DURATION}_count", *keys) == want
    inf = Counter(
        {k: v for k, v in values(hist, f"{DURATION}_bucket", *keys, "le").items() if k[-1] == "+Inf"}
    )
    assert inf == Counter({(*k, "+Inf"): v for k, v in want.items()})
    tenants = {s.labels.get("tenant") for s in families["http_server_requests"].samples}
    assert tenants == {None, "acme"}  # only the consumer's requests carry consumer and tenant


def check_upstream(families: dict[str, Metric], origin: OriginProcess, times: int = 1) -> None:
    endpoint = (origin.address,)
    ups = values(families["sidegate_upstream_requests"], "sidegate_upstream_requests_total", "endpoint")
    assert ups == {endpoint: FORWARDED * times}
    by_status = values(families[CLIENT], f"{CLIENT}_count", "endpoint", "http_response_status_code")
    assert sum(by_status.values()) == FORWARDED * times
    assert by_status[(origin.address, "503")] == 4 * times


def test_a_scrape_matches_the_requests_sent(gateway: GatewayFactory, origin: OriginProcess) -> None:
    gw = gateway(routes=ROUTES, consumers=CONSUMERS)
    send_traffic(gw)
    ctype, body, families = scrape(gw)
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    check_requests(families)
    check_upstream(families, origin)
    for name in (
        "sidegate_connections_active",
        "sidegate_requests_active",
        "sidegate_streams_active",
        "sidegate_received_bytes",
        "sidegate_sent_bytes",
        "sidegate_config_version",
        "sidegate_upstream_failures",
        "sidegate_policy_decisions",
        "sidegate_consumer_requests",
    ):
        assert name in families, name
    decisions = values(families["sidegate_policy_decisions"], "sidegate_policy_decisions_total", "result")
    assert decisions[("ok",)] == 3 and decisions[("missing",)] == 2
    assert "sidegate_app_metrics_scrape_success" not in families  # no app metrics configured

    # The same numbers in OpenMetrics, asked the way Prometheus asks.
    ctype, body, om = scrape(gw, OPENMETRICS)
    assert ctype == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert body.endswith("\n# EOF\n")
    check_requests(om)
    check_upstream(om, origin)
    assert om[DURATION].unit == "seconds"


def test_config_reloads_and_version(gateway: GatewayFactory) -> None:
    gw = gateway(routes=ROUTES, consumers=CONSUMERS)
    assert admin_post(gw, "/reload") == 200
    gw.write_config({**gw.config, "routes": "not a list"})
    assert admin_post(gw, "/reload") == 400
    _, _, families = scrape(gw)
    reloads = values(families["sidegate_config_reloads"], "sidegate_config_reloads_total", "result")
    assert reloads[("ok",)] == 1
    assert reloads[("failed",)] >= 1  # the POST's, and the file watcher's if it saw the change first
    assert families["sidegate_config_version"].samples[0].value == 2
    assert families["sidegate_config_last_reload_success"].samples[0].value == 0


def admin_post(gw: GatewayProcess, path: str) -> int:
    req = urllib.request.Request(gw.admin_url(path), method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def app_metrics(url: str, timeout: str = "1s") -> dict[str, Any]:
    return {"app_metrics": {"url": url, "timeout": timeout}}


@pytest.mark.parametrize("accept", [None, OPENMETRICS], ids=["text", "openmetrics"])
def test_the_apps_metrics_are_merged(
    gateway: GatewayFactory, origin: OriginProcess, accept: str | None
) -> None:
    gw = gateway(observability=app_metrics(f"http://127.0.0.1:{origin.port}/metrics"))
    for _ in range(7):
        assert send(gw.port, "GET", "/") == 200
    _, body, families = scrape(gw, accept)
    assert families["sidegate_app_metrics_scrape_success"].samples[0].value == 1
    assert 0 < families["sidegate_app_metrics_scrape_duration_seconds"].samples[0].value < 1
    # The app's own numbers, next to Sidegate's: it saw the 7 requests Sidegate forwarded.
    assert [s.value for s in families["origin_requests"].samples if s.name == "origin_requests_total"] == [7]
    assert ("origin_build" if accept else "origin_build_info") in families
    assert values(families["http_server_requests"], "http_server_requests_total", "http_route") == {
        ("all",): 7
    }
    # The app's http_server_requests_total clashes with Sidegate's: left out, and counted.
    assert 'app="origin"' not in body
    assert families["sidegate_app_metrics_dropped_families"].samples[0].value == 1
    if accept:
        assert body.count("# EOF") == 1 and body.endswith("\n# EOF\n")


def test_a_dead_app_still_gives_a_scrape(gateway: GatewayFactory) -> None:
    gw = gateway(observability=app_metrics(f"http://127.0.0.1:{free_port()}/metrics"))
    assert send(gw.port, "GET", "/") == 200
    for accept in (None, OPENMETRICS):
        _, _, families = scrape(gw, accept)
        assert families["sidegate_app_metrics_scrape_success"].samples[0].value == 0
        assert values(families["http_server_requests"], "http_server_requests_total") == {(): 1}


def test_a_silent_app_is_given_up_on_after_its_timeout(gateway: GatewayFactory) -> None:
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen(8)  # connections are accepted by the kernel, never answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/metrics"
        gw = gateway(observability=app_metrics(url, timeout="300ms"))
        started = time.monotonic()
        _, _, families = scrape(gw)
        assert time.monotonic() - started < 2.0
    assert families["sidegate_app_metrics_scrape_success"].samples[0].value == 0
    assert families["sidegate_app_metrics_scrape_duration_seconds"].samples[0].value >= 0.29


def test_workers_are_added_up(gateway: GatewayFactory, origin: OriginProcess) -> None:
    gw = gateway(
        routes=ROUTES,
        consumers=CONSUMERS,
        workers=2,
        observability=app_metrics(f"http://127.0.0.1:{origin.port}/metrics"),
    )
    send_traffic(gw)
    send_traffic(gw)  # new connections each time: the kernel spreads them over both workers
    for accept in (None, OPENMETRICS):
        _, body, families = scrape(gw, accept)
        check_requests(families, times=2)
        check_upstream(families, origin, times=2)
        # The supervisor scrapes the app once: its families appear once.
        assert body.count("\norigin_requests_total ") == 1
        assert families["sidegate_app_metrics_scrape_success"].samples[0].value == 1

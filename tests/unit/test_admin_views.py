"""The admin JSON views (``/stats``, ``/routes``, ``/clusters``) built from known parts."""

from __future__ import annotations

from typing import Any

from sidegate.admin.stats import (
    StatsParts,
    clusters_document,
    merge_upstreams,
    routes_document,
    stats_document,
)

BUCKETS = [0.01, 0.1, 1.0]


def row(route: str, method: str, status: str, buckets: list[int], total: float) -> dict[str, Any]:
    return {"route": route, "method": method, "status": status, "buckets": buckets, "sum": total}


def endpoint(address: str, state: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "address": address,
        "state": state,
        "idle": 0,
        "connects": 0,
        "last_failure": None,
        "last_ok": None,
    }
    return {**base, **extra}


def parts(**metrics: Any) -> StatsParts:
    snapshot: dict[str, Any] = {
        "buckets": BUCKETS,
        "requests": [
            row("api", "GET", "200", [3, 1, 0, 0], 0.2),
            row("api", "POST", "201", [0, 1, 0, 0], 0.05),
            row("api", "GET", "503", [1, 0, 0, 0], 0.001),
            row("web", "GET", "404", [0, 0, 2, 0], 1.0),
            row("(none)", "GET", "404", [1, 0, 0, 0], 0.0),
        ],
        "upstream_requests": [{"upstream": "app", "endpoint": "127.0.0.1:1", "count": 6}],
        "upstream_failures": [
            {"upstream": "app", "endpoint": "127.0.0.1:2", "kind": "connect_refused", "count": 2}
        ],
        "bytes_received": 100,
        "bytes_sent": 2000,
        "connections_active": 1,
        "config_version": 2,
        "process_start_time_seconds": 1000.0,
        "cache": {"results": [["api", "HIT", 6], ["api", "MISS", 2], ["api", "BYPASS", 5]]},
        "policy": {
            "decisions": [
                ["web", "rate_limit", "allowed", 3],
                ["web", "rate_limit", "limited", 1],
                ["web", "api_key", "ok", 4],
            ]
        },
        **metrics,
    }
    upstreams = [
        {
            "name": "app",
            "balancer": "round_robin",
            "endpoints": [
                endpoint("127.0.0.1:1", "ok", connects=2, idle=1),
                endpoint("127.0.0.1:2", "failing", last_failure={"kind": "connect_refused", "at": 1005.0}),
            ],
        }
    ]
    config = {
        "version": 2,
        "config": {
            "routes": [
                {
                    "name": "web",
                    "match": {"path_prefix": "/web"},
                    "upstream": "app",
                    "timeouts": {"connect": 2.0},
                    "filters": {"rate_limit": {}, "api_key": {}},
                },
                {"name": "api", "match": {"path_prefix": "/"}, "upstream": "app", "filters": {}},
            ]
        },
    }
    return StatsParts(snapshot, upstreams, config)


def test_stats_sums_routes_over_method_and_status() -> None:
    doc = stats_document(parts(), now=1010.0)
    assert doc["uptime"] == 10.0 and doc["config_version"] == 2
    assert doc["totals"] == {"requests": 9, "status": {"2xx": 5, "5xx": 1, "4xx": 3}}
    assert [r["name"] for r in doc["routes"]] == ["web", "api", "(none)"]  # config order, then others
    api = doc["routes"][1]
    assert api["requests"] == 6 and api["status"] == {"2xx": 5, "5xx": 1}
    assert api["codes"] == {"200": 4, "201": 1, "503": 1}
    assert api["buckets"] == [4, 2, 0, 0] and abs(api["sum"] - 0.251) < 1e-9
    assert doc["buckets"] == BUCKETS
    assert doc["bytes"] == {"received": 100, "sent": 2000}


def test_stats_cache_ratio_and_rate_limits() -> None:
    doc = stats_document(parts(), now=1010.0)
    assert doc["cache"]["hits"] == 6 and doc["cache"]["misses"] == 2 and doc["cache"]["ratio"] == 0.75
    assert doc["rate_limit"] == {"allowed": 3, "rejected": 1}
    web = doc["routes"][0]
    assert web["rate_limit"] == {"allowed": 3, "rejected": 1} and web["cache"] is None
    empty = stats_document(parts(cache=None, policy=None, requests=[]), now=1010.0)
    assert empty["cache"]["ratio"] is None and empty["totals"]["requests"] == 0
    assert all(r["requests"] == 0 and r["buckets"] == [0, 0, 0, 0] for r in empty["routes"])


def test_routes_in_match_order_with_totals() -> None:
    doc = routes_document(parts())
    assert [r["name"] for r in doc["routes"]] == ["web", "api"]
    web = doc["routes"][0]
    assert web["filters"] == ["rate_limit", "api_key"] and web["timeouts"] == {"connect": 2.0}
    assert web["requests"] == 2 and web["status"] == {"4xx": 2}
    assert doc["unmatched_requests"] == 1 and doc["version"] == 2


def test_clusters_join_state_and_counters() -> None:
    doc = clusters_document(parts())
    ok, failing = doc["upstreams"][0]["endpoints"]
    assert (ok["state"], ok["requests"], ok["failures"], ok["idle"]) == ("ok", 6, {}, 1)
    assert failing["state"] == "failing" and failing["failures"] == {"connect_refused": 2}
    assert failing["last_failure"]["kind"] == "connect_refused"


def test_merging_workers_endpoints() -> None:
    def report(*endpoints: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"name": "app", "balancer": "round_robin", "endpoints": list(endpoints)}]

    failed = {"kind": "connect_refused", "at": 100.0}
    merged = merge_upstreams(
        [
            report(endpoint("a:1", "ok", idle=2, connects=3), endpoint("b:1", "unknown")),
            report(endpoint("a:1", "failing", connects=1, last_failure=failed), endpoint("b:1", "unknown")),
        ]
    )
    a, b = merged[0]["endpoints"]
    assert (a["state"], a["idle"], a["connects"], a["last_failure"]) == ("failing", 2, 4, failed)
    assert b["state"] == "unknown"
    recovered = merge_upstreams(
        [
            report(endpoint("a:1", "ok", last_ok=101.0)),
            report(endpoint("a:1", "failing", last_failure=failed)),
        ]
    )
    assert recovered[0]["endpoints"][0]["state"] == "ok"  # a connection came back after the failure

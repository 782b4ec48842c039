"""The admin API's JSON views of a running gateway: ``GET /stats``, ``GET /routes``, ``GET /clusters``.

Theory of operation
-------------------
The backend (one process, or a supervisor asking its workers) hands over :class:`StatsParts`: the
metrics snapshot merged across workers (:func:`sidegate.observe.metrics.merge`), the upstream
report (``ClusterSet.report()`` per worker, combined with :func:`merge_upstreams`) and the config
dump. Everything here is a pure function of those parts, so a test can check the documents
without a server. Nothing is computed per request on the data plane: these run when asked.

``/stats`` is what the dashboard polls: counters only (never rates), and per-route histogram
buckets summed over method and status, so a client computes rates and percentiles over its own
poll interval from the difference of two documents. The shapes are documented in README.md.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sidegate.admin.app import AdminBackend, AdminRequest, AdminResponse, Handler

#: Cache results counted as served from the cache, and as a miss (BYPASS is neither).
CACHE_HITS = ("HIT", "STALE", "REVALIDATED")
CACHE_MISSES = ("MISS",)
#: The route name the data plane counts requests that matched no route under.
UNMATCHED = "(none)"


@dataclass(frozen=True, slots=True)
class StatsParts:
    """What the views are made of (plain JSON-able values, as they crossed a worker pipe)."""

    metrics: dict[str, Any]  # a merged metrics snapshot
    upstreams: list[dict[str, Any]]  # [{"name", "balancer", "endpoints": [...]}], merged
    config: dict[str, Any]  # the backend's config_dump(): {"version", "config": {...}, ...}
    workers: int = 1


class StatsBackend(AdminBackend, Protocol):
    """An admin backend that can also gather :class:`StatsParts` (awaitable with workers)."""

    def stats_parts(self) -> StatsParts | Awaitable[StatsParts]: ...


# -- merging workers' upstream reports -------------------------------------------------------------


def merge_upstreams(reports: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Workers' ``ClusterSet.report()`` lists combined into one.

    Idle and opened connections are summed; the last failure is the most recent one; the state is
    ``failing`` when some worker's last attempt failed and no worker has given a connection back
    since that failure, ``ok`` when some worker saw success, else ``unknown``.
    """
    upstreams: dict[str, dict[str, Any]] = {}
    endpoints: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for report in reports:
        for upstream in report:
            upstreams.setdefault(upstream["name"], {**upstream, "endpoints": []})
            for endpoint in upstream["endpoints"]:
                rows = endpoints.setdefault((upstream["name"], endpoint["address"]), [])
                if not rows:
                    upstreams[upstream["name"]]["endpoints"].append(endpoint["address"])
                rows.append(endpoint)
    out = []
    for name, upstream in upstreams.items():
        merged = [_merge_endpoint(endpoints[(name, address)]) for address in upstream["endpoints"]]
        out.append({**upstream, "endpoints": merged})
    return out


def _merge_endpoint(rows: list[dict[str, Any]]) -> dict[str, Any]:
    failures = [r["last_failure"] for r in rows if r.get("last_failure")]
    last_failure = max(failures, key=lambda f: float(f["at"]), default=None)
    oks = [float(r["last_ok"]) for r in rows if r.get("last_ok")]
    last_ok = max(oks, default=None)
    states = {r["state"] for r in rows}
    state = "unknown"
    if "failing" in states:
        failed_at = max(float(r["last_failure"]["at"]) for r in rows if r["state"] == "failing")
        state = "ok" if last_ok is not None and last_ok > failed_at else "failing"
    elif "ok" in states:
        state = "ok"
    return {
        "address": rows[0]["address"],
        "state": state,
        "idle": sum(int(r["idle"]) for r in rows),
        "connects": sum(int(r["connects"]) for r in rows),
        "last_failure": last_failure,
        "last_ok": last_ok,
    }


# -- the documents ---------------------------------------------------------------------------------


def _status_class(status: str) -> str:
    return f"{status[0]}xx" if status.isdigit() and len(status) == 3 else "other"


def _per_route(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Route name -> requests, by class and code, and the histogram summed over method and status."""
    slots = len(metrics.get("buckets", ())) + 1
    routes: dict[str, dict[str, Any]] = {}
    for row in metrics.get("requests", ()):
        route = routes.setdefault(
            str(row["route"]),
            {"requests": 0, "status": {}, "codes": {}, "buckets": [0] * slots, "sum": 0.0},
        )
        count = sum(row["buckets"])
        status = str(row["status"])
        route["requests"] += count
        route["status"][_status_class(status)] = route["status"].get(_status_class(status), 0) + count
        route["codes"][status] = route["codes"].get(status, 0) + count
        route["buckets"] = [a + b for a, b in zip(route["buckets"], row["buckets"], strict=True)]
        route["sum"] += float(row["sum"])
    return routes


def _cache(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    by_route: dict[str, dict[str, int]] = {}
    for route, result, count in (metrics.get("cache") or {}).get("results", ()):
        by_route.setdefault(route, {})[result] = int(count)
    hits = sum(n for r in by_route.values() for k, n in r.items() if k in CACHE_HITS)
    misses = sum(n for r in by_route.values() for k, n in r.items() if k in CACHE_MISSES)
    results: dict[str, int] = {}
    for counts in by_route.values():
        for result, n in counts.items():
            results[result] = results.get(result, 0) + n
    ratio = hits / (hits + misses) if hits + misses else None
    return {"hits": hits, "misses": misses, "ratio": ratio, "results": results}, by_route


def _rate_limit(metrics: dict[str, Any]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Rate-limit decisions (``allowed``/``limited`` rows of the policy table), in total and by route."""
    by_route: dict[str, dict[str, int]] = {}
    for route, _filter, result, count in (metrics.get("policy") or {}).get("decisions", ()):
        if result in ("allowed", "limited"):
            counts = by_route.setdefault(route, {"allowed": 0, "rejected": 0})
            counts["allowed" if result == "allowed" else "rejected"] += int(count)
    total = {
        "allowed": sum(r["allowed"] for r in by_route.values()),
        "rejected": sum(r["rejected"] for r in by_route.values()),
    }
    return total, by_route


def _upstream_counts(metrics: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    counts: dict[tuple[str, str], dict[str, Any]] = {}
    for row in metrics.get("upstream_requests", ()):
        key = (row["upstream"], row["endpoint"])
        counts.setdefault(key, {"requests": 0, "failures": {}})["requests"] += int(row["count"])
    for row in metrics.get("upstream_failures", ()):
        key = (row["upstream"], row["endpoint"])
        failures = counts.setdefault(key, {"requests": 0, "failures": {}})["failures"]
        failures[row["kind"]] = failures.get(row["kind"], 0) + int(row["count"])
    return counts


def clusters_document(parts: StatsParts) -> dict[str, Any]:
    """``GET /clusters``: each upstream with its endpoints, their state and counters."""
    counts = _upstream_counts(parts.metrics)
    upstreams = []
    for upstream in parts.upstreams:
        endpoints = []
        for endpoint in upstream["endpoints"]:
            c = counts.get((upstream["name"], endpoint["address"]), {"requests": 0, "failures": {}})
            endpoints.append({**endpoint, "requests": c["requests"], "failures": c["failures"]})
        upstreams.append({**upstream, "endpoints": endpoints})
    return {"version": parts.config.get("version"), "workers": parts.workers, "upstreams": upstreams}


def routes_document(parts: StatsParts) -> dict[str, Any]:
    """``GET /routes``: the running routes in match order, as configured (redacted), with totals."""
    totals = _per_route(parts.metrics)
    routes = []
    for route in parts.config.get("config", {}).get("routes", ()):
        seen = totals.get(route["name"], {"requests": 0, "status": {}})
        routes.append(
            {
                "name": route["name"],
                "match": route.get("match", {}),
                "upstream": route.get("upstream"),
                "filters": list(route.get("filters") or {}),
                "timeouts": route.get("timeouts", {}),
                "rewrite": route.get("rewrite"),
                "max_body": route.get("max_body"),
                "requests": seen["requests"],
                "status": seen["status"],
            }
        )
    unmatched = totals.get(UNMATCHED, {}).get("requests", 0)
    return {"version": parts.config.get("version"), "routes": routes, "unmatched_requests": unmatched}


def stats_document(parts: StatsParts, now: float | None = None) -> dict[str, Any]:
    """``GET /stats``: every counter the dashboard draws, in one document."""
    now = time.time() if now is None else now
    metrics = parts.metrics
    per_route = _per_route(metrics)
    cache, cache_by_route = _cache(metrics)
    limits, limits_by_route = _rate_limit(metrics)
    configured = [r["name"] for r in parts.config.get("config", {}).get("routes", ())]
    names = configured + sorted(n for n in per_route if n not in configured)  # then removed, (none)
    slots = len(metrics.get("buckets", ())) + 1
    routes = []
    for name in names:
        seen = per_route.get(name) or {
            "requests": 0,
            "status": {},
            "codes": {},
            "buckets": [0] * slots,
            "sum": 0.0,
        }
        route = {"name": name, "configured": name in configured, **seen}
        route["cache"] = cache_by_route.get(name)
        route["rate_limit"] = limits_by_route.get(name)
        routes.append(route)
    status: dict[str, int] = {}
    for route in per_route.values():
        for cls, n in route["status"].items():
            status[cls] = status.get(cls, 0) + n
    started = metrics.get("process_start_time_seconds")
    return {
        "time": now,
        "uptime": now - float(started) if started else None,
        "config_version": metrics.get("config_version"),
        "workers": parts.workers,
        "totals": {"requests": sum(r["requests"] for r in per_route.values()), "status": status},
        "buckets": metrics.get("buckets", []),
        "routes": routes,
        "gauges": {
            key: metrics.get(key, 0) for key in ("connections_active", "requests_active", "streams_active")
        },
        "bytes": {"received": metrics.get("bytes_received", 0), "sent": metrics.get("bytes_sent", 0)},
        "upstreams": clusters_document(parts)["upstreams"],
        "cache": cache,
        "rate_limit": limits,
    }


def stats_routes(backend: StatsBackend) -> dict[tuple[str, str], Handler]:
    """Admin routes: ``GET /stats``, ``GET /routes``, ``GET /clusters``."""

    async def parts() -> StatsParts:
        got = backend.stats_parts()
        return await got if inspect.isawaitable(got) else got

    async def stats(_: AdminRequest) -> AdminResponse:
        return AdminResponse.json(200, stats_document(await parts()))

    async def routes(_: AdminRequest) -> AdminResponse:
        return AdminResponse.json(200, routes_document(await parts()), pretty=True)

    async def clusters(_: AdminRequest) -> AdminResponse:
        return AdminResponse.json(200, clusters_document(await parts()), pretty=True)

    return {("GET", "/stats"): stats, ("GET", "/routes"): routes, ("GET", "/clusters"): clusters}

"""Worker snapshots added into one, so a single scrape sees the whole pod.

A supervisor asks each worker for :meth:`~sidegate.observe.metrics.Metrics.snapshot` (JSON over a
pipe) and :func:`merge` sums them: counters and histograms slot by slot, gauges as totals, with
a few values that are not sums (config version, last reload, start time) documented on
:func:`merge`. Off the hot path: it runs once per scrape.
"""

from __future__ import annotations

from typing import Any

from sidegate.observe.egress_metrics import merge_egress
from sidegate.observe.metrics import BUCKETS, SNAPSHOT_FORMAT

_SUMMED = (
    "connections_active",
    "requests_active",
    "streams_active",
    "bytes_received",
    "bytes_sent",
    "fields_dropped",
    "client_send_timeouts",
)


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Add worker snapshots into one: counters, histograms and gauges are summed.

    ``config_version`` takes the highest value, ``config_last_reload_success`` the lowest (1 only if
    every worker's last reload succeeded), ``process_start_time_seconds`` the earliest, and
    ``process_resident_memory_bytes`` the total of the workers that reported one.
    """
    requests: dict[tuple[str, ...], dict[str, Any]] = {}
    durations: dict[tuple[str, ...], dict[str, Any]] = {}
    up_requests: dict[tuple[str, str], int] = {}
    up_failures: dict[tuple[str, str, str], int] = {}
    out: dict[str, Any] = {"format": SNAPSHOT_FORMAT, "buckets": list(BUCKETS)}
    for key in _SUMMED:
        out[key] = sum(int(s.get(key, 0)) for s in snapshots)
    out["config_reloads"] = {
        result: sum(int(s.get("config_reloads", {}).get(result, 0)) for s in snapshots)
        for result in ("ok", "failed")
    }
    out["config_version"] = max((int(s.get("config_version", 0)) for s in snapshots), default=0)
    out["config_last_reload_success"] = min(
        (int(s.get("config_last_reload_success", 1)) for s in snapshots), default=1
    )
    rss = [
        int(s["process_resident_memory_bytes"]) for s in snapshots if s.get("process_resident_memory_bytes")
    ]
    out["process_resident_memory_bytes"] = sum(rss) if rss else None
    starts = [
        float(s["process_start_time_seconds"]) for s in snapshots if s.get("process_start_time_seconds")
    ]
    out["process_start_time_seconds"] = min(starts) if starts else None

    for snap in snapshots:
        if list(snap.get("buckets", BUCKETS)) != list(BUCKETS):
            raise ValueError("cannot merge snapshots with different histogram buckets")
        for row in snap.get("requests", ()):
            _add_series(requests, row, ("route", "method", "status", "consumer", "tenant"))
        for row in snap.get("upstream_durations", ()):
            _add_series(durations, row, ("upstream", "endpoint", "status"))
        for row in snap.get("upstream_requests", ()):
            ukey = (row["upstream"], row["endpoint"])
            up_requests[ukey] = up_requests.get(ukey, 0) + int(row["count"])
        for row in snap.get("upstream_failures", ()):
            fkey = (row["upstream"], row["endpoint"], row["kind"])
            up_failures[fkey] = up_failures.get(fkey, 0) + int(row["count"])

    caches = [s["cache"] for s in snapshots if s.get("cache")]
    out["cache"] = merge_cache(caches) if caches else None  # no route caches: no cache families
    out["policy"] = merge_rows([s["policy"] for s in snapshots if s.get("policy")])
    # Health checks run in one process of the pod (the supervisor with workers): not summed.
    out["health"] = [row for s in snapshots for row in s.get("health") or ()]
    out["egress"] = merge_egress([s["egress"] for s in snapshots if s.get("egress")])
    out["telemetry"] = merge_rows([s["telemetry"] for s in snapshots if s.get("telemetry")])
    stores = [s["cache_store"] for s in snapshots if s.get("cache_store")]
    out["cache_store"] = stores[-1] if stores else None  # one store shared by every worker

    out["requests"] = list(requests.values())
    out["upstream_durations"] = list(durations.values())
    out["upstream_requests"] = [
        {"upstream": u, "endpoint": e, "count": n} for (u, e), n in up_requests.items()
    ]
    out["upstream_failures"] = [
        {"upstream": u, "endpoint": e, "kind": k, "count": n} for (u, e, k), n in up_failures.items()
    ]
    return out


def _add_series(
    acc: dict[tuple[str, ...], dict[str, Any]], row: dict[str, Any], keys: tuple[str, ...]
) -> None:
    """Add one histogram row into ``acc``, keyed by the row's label values (absent ones are "")."""
    key = tuple(str(row.get(k, "")) for k in keys)
    found = acc.get(key)
    if found is None:
        acc[key] = {**dict(zip(keys, key, strict=True)), "buckets": list(row["buckets"]), "sum": row["sum"]}
    else:
        found["sum"] += row["sum"]
        found["buckets"] = [a + b for a, b in zip(found["buckets"], row["buckets"], strict=True)]


def merge_rows(snapshots: list[dict[str, Any]]) -> dict[str, list[list[Any]]]:
    """Tables of ``[label..., count]`` rows (``sidegate.filters.counters``) added together."""
    out: dict[str, dict[tuple[Any, ...], int]] = {}
    for snap in snapshots:
        for table, rows in snap.items():
            acc = out.setdefault(table, {})
            for *labels, count in rows:
                acc[tuple(labels)] = acc.get(tuple(labels), 0) + int(count)
    return {table: [[*k, n] for k, n in sorted(acc.items())] for table, acc in out.items()}


def merge_cache(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Workers' cache counters (``sidegate.cache.counters``) added together."""
    results: dict[tuple[str, str], int] = {}
    errors: dict[str, int] = {}
    for snap in snapshots:
        for route, result, count in snap.get("results", ()):
            results[(route, result)] = results.get((route, result), 0) + int(count)
        for reason, count in snap.get("store_errors", {}).items():
            errors[reason] = errors.get(reason, 0) + int(count)
    return {
        "results": [[route, result, n] for (route, result), n in sorted(results.items())],
        "stored": sum(int(s.get("stored", 0)) for s in snapshots),
        "stored_bytes": sum(int(s.get("stored_bytes", 0)) for s in snapshots),
        "store_errors": errors,
    }

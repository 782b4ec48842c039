"""Prometheus text exposition (format 0.0.4) of a metrics snapshot.

Theory of operation
-------------------
Rendering is off the hot path: it runs once per scrape, on a snapshot (one worker's, or several
merged with :func:`sidegate.observe.metrics.merge`). Each family is written as ``# HELP`` and
``# TYPE`` lines followed by its samples, sorted by labels so scrapes are stable and diffable.
Histogram buckets are stored per slot and made cumulative here; ``_count`` is the ``+Inf`` bucket.
Names follow the OpenTelemetry HTTP semantic conventions in base units (seconds, bytes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sidegate.observe.metrics import BUCKETS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_Labels = tuple[tuple[str, str], ...]


def escape_label(value: str) -> str:
    """Escape a label value: backslash, double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it (integers without a decimal point, Go-style infinities)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _labels(labels: _Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels) + "}"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: _Labels, value: float) -> None:
        self.lines.append(f"{name}{_labels(labels)} {format_value(value)}")

    def simple(self, name: str, kind: str, help_text: str, value: float | None) -> None:
        """A family with one unlabelled sample (left out entirely when the value is unknown)."""
        if value is None:
            return
        self.family(name, kind, help_text)
        self.sample(name, (), value)

    def text(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode("utf-8")


# Bucket bounds as label values, written the way Prometheus clients do ("0.0005", "1.0", "+Inf").
_LE = (*(repr(float(b)) for b in BUCKETS), "+Inf")

# Unlabelled families: (name, type, snapshot key, default when absent, help).
_SIMPLE: tuple[tuple[str, str, str, float | None, str], ...] = (
    ("sidegate_connections_active", "gauge", "connections_active", 0, "Inbound client connections open."),
    ("sidegate_requests_active", "gauge", "requests_active", 0, "Requests in flight."),
    ("sidegate_streams_active", "gauge", "streams_active", 0, "Upgraded tunnels and event streams open."),
    ("sidegate_config_version", "gauge", "config_version", 0, "Version of the configuration being served."),
    (
        "sidegate_config_last_reload_success",
        "gauge",
        "config_last_reload_success",
        1,
        "1 if the last configuration reload succeeded, else 0.",
    ),
    ("sidegate_received_bytes_total", "counter", "bytes_received", 0, "Bytes received from clients."),
    ("sidegate_sent_bytes_total", "counter", "bytes_sent", 0, "Bytes sent to clients."),
    (
        "process_resident_memory_bytes",
        "gauge",
        "process_resident_memory_bytes",
        None,
        "Resident memory size in bytes.",
    ),
    (
        "process_start_time_seconds",
        "gauge",
        "process_start_time_seconds",
        None,
        "Start time of the process since unix epoch in seconds.",
    ),
)


def _request_rows(snapshot: dict[str, Any]) -> list[tuple[_Labels, list[int], float]]:
    rows: list[tuple[_Labels, list[int], float]] = []
    for row in snapshot.get("requests", ()):
        labels = (
            ("http_route", str(row["route"])),
            ("http_request_method", str(row["method"])),
            ("http_response_status_code", str(row["status"])),
        )
        rows.append((labels, list(row["buckets"]), float(row["sum"])))
    rows.sort(key=lambda r: r[0])
    return rows


def _histogram(w: _Writer, rows: Iterable[tuple[_Labels, list[int], float]]) -> None:
    name = "http_server_request_duration_seconds"
    w.family(name, "histogram", "Duration of HTTP server requests, from request head to response end.")
    for labels, buckets, total in rows:
        running = 0
        for le, n in zip(_LE, buckets, strict=True):
            running += n
            w.sample(f"{name}_bucket", (*labels, ("le", le)), running)
        w.sample(f"{name}_sum", labels, total)
        w.sample(f"{name}_count", labels, running)


def render_prometheus(snapshot: dict[str, Any]) -> bytes:
    """Render a snapshot (from :meth:`Metrics.snapshot` or :func:`merge`) as Prometheus text."""
    if list(snapshot.get("buckets", BUCKETS)) != list(BUCKETS):
        raise ValueError("snapshot uses different histogram buckets")
    w = _Writer()
    rows = _request_rows(snapshot)
    _histogram(w, rows)

    w.family("http_server_requests_total", "counter", "HTTP server requests finished.")
    for labels, buckets, _ in rows:
        w.sample("http_server_requests_total", labels, sum(buckets))

    up = sorted(
        ((("upstream", str(r["upstream"])), ("endpoint", str(r["endpoint"]))), int(r["count"]))
        for r in snapshot.get("upstream_requests", ())
    )
    w.family("sidegate_upstream_requests_total", "counter", "Requests sent to upstream endpoints.")
    for labels, count in up:
        w.sample("sidegate_upstream_requests_total", labels, count)
    failures = sorted(
        (
            (("upstream", str(r["upstream"])), ("endpoint", str(r["endpoint"])), ("kind", str(r["kind"]))),
            int(r["count"]),
        )
        for r in snapshot.get("upstream_failures", ())
    )
    w.family("sidegate_upstream_failures_total", "counter", "Failed upstream attempts, by kind of failure.")
    for flabels, count in failures:
        w.sample("sidegate_upstream_failures_total", flabels, count)

    reloads = snapshot.get("config_reloads", {})
    w.family("sidegate_config_reloads_total", "counter", "Configuration reload attempts, by result.")
    for result in ("failed", "ok"):
        w.sample("sidegate_config_reloads_total", (("result", result),), int(reloads.get(result, 0)))
    for name, kind, key, default, help_text in _SIMPLE:
        w.simple(name, kind, help_text, snapshot.get(key, default))
    _cache(w, snapshot.get("cache"), snapshot.get("cache_store"))
    _policy(w, snapshot.get("policy") or {})
    return w.text()


_POLICY_FAMILIES = (
    ("decisions", "sidegate_policy_decisions_total", ("http_route", "filter", "result"),
     "Decisions of the policy filters (authentication, access, CORS, rate limits), by result."),
    ("consumers", "sidegate_consumer_requests_total", ("http_route", "tenant", "consumer"),
     "Authenticated requests by consumer and tenant (names not configured count as _other)."),
    ("quotas", "sidegate_quota_requests_total", ("http_route", "limit", "tenant", "result"),
     "Requests under tenant-keyed limits (quotas), by tenant and result."),
)  # fmt: skip


def _policy(w: _Writer, tables: dict[str, Any]) -> None:
    for table, name, label_names, help_text in _POLICY_FAMILIES:
        rows = tables.get(table)
        if not rows:
            continue
        w.family(name, "counter", help_text)
        for *labels, count in rows:
            w.sample(name, tuple(zip(label_names, map(str, labels), strict=True)), count)


def _cache(w: _Writer, counters: dict[str, Any] | None, store: dict[str, Any] | None) -> None:
    """The shared cache's families: outcomes per route from the workers, sizes from the store."""
    if not counters and not store:
        return  # no route caches: no cache families at all
    counters = counters or {}
    w.family("sidegate_cache_requests_total", "counter", "Requests looked up in the cache, by outcome.")
    for route, result, count in counters.get("results", ()):
        w.sample(
            "sidegate_cache_requests_total", (("http_route", str(route)), ("result", str(result))), count
        )
    w.simple(
        "sidegate_cache_stored_total", "counter", "Responses written to the cache.", counters.get("stored", 0)
    )
    w.simple(
        "sidegate_cache_stored_bytes_total",
        "counter",
        "Bytes of responses written to the cache.",
        counters.get("stored_bytes", 0),
    )
    w.family("sidegate_cache_store_errors_total", "counter", "Store failures, each served uncached.")
    for reason, count in sorted(counters.get("store_errors", {}).items()):
        w.sample("sidegate_cache_store_errors_total", (("reason", str(reason)),), count)
    if store:
        w.simple("sidegate_cache_entries", "gauge", "Entries in the shared cache.", store.get("entries"))
        w.simple("sidegate_cache_bytes", "gauge", "Bytes held by the shared cache.", store.get("bytes"))
        w.simple(
            "sidegate_cache_evictions_total",
            "counter",
            "Entries evicted to stay within max_size or a partition quota.",
            store.get("evictions"),
        )
        w.family("sidegate_cache_partition_bytes", "gauge", "Bytes held per cache partition.")
        for name, size in sorted((store.get("partitions") or {}).items()):
            w.sample("sidegate_cache_partition_bytes", (("partition", str(name) or "default"),), size)

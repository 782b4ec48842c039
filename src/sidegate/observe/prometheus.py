"""Prometheus text (format 0.0.4) and OpenMetrics 1.0 exposition of a metrics snapshot.

Theory of operation
-------------------
Rendering is off the hot path: it runs once per scrape, on a snapshot (one worker's, or several
merged with :func:`sidegate.observe.aggregate.merge`). Each family is written as ``# HELP`` and
``# TYPE`` lines followed by its samples, sorted by labels so scrapes are stable and diffable.
Histogram buckets are stored per slot and made cumulative here; ``_count`` is the ``+Inf`` bucket.
Names follow the OpenTelemetry HTTP semantic conventions in base units (seconds, bytes).

The two formats differ only in framing, so one writer does both: in OpenMetrics a counter's
family is named without its ``_total`` suffix (its samples keep it), families in seconds or bytes
get a ``# UNIT`` line, a help text escapes double quotes, and the exposition ends with ``# EOF``.
:func:`wants_openmetrics` reads the scraper's ``Accept`` header. The app's own families, scraped by
:mod:`sidegate.observe.app_metrics`, are appended after Sidegate's; one whose name Sidegate
already uses is left out and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sidegate.observe.egress_metrics import egress_families
from sidegate.observe.exposition import escape_help, escape_label, format_value
from sidegate.observe.metrics import BUCKETS

if TYPE_CHECKING:
    from sidegate.observe.app_metrics import AppScrape

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_Labels = tuple[tuple[str, str], ...]
_Row = tuple[_Labels, list[int], float]


def wants_openmetrics(accept: str) -> bool:
    """True if an ``Accept`` header asks for OpenMetrics (any version) at least as much as for
    plain text; ``*/*`` alone, or no header, means the Prometheus text format."""
    openmetrics = text = 0.0
    for part in accept.split(","):
        media, *params = part.split(";")
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.strip().lower()
        if media == "application/openmetrics-text":
            openmetrics = max(openmetrics, q)
        elif media == "text/plain":
            text = max(text, q)
    return openmetrics > 0 and openmetrics >= text


def _labels(labels: _Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels) + "}"


def _unit(family: str) -> str:
    for unit in ("seconds", "bytes"):
        if family.endswith("_" + unit):
            return unit
    return ""


class _Writer:
    def __init__(self, openmetrics: bool) -> None:
        self.openmetrics = openmetrics
        self.lines: list[str] = []
        self.names: set[str] = set()  # every family and sample name written, for app clashes

    def family(self, name: str, kind: str, help_text: str) -> None:
        family = name.removesuffix("_total") if self.openmetrics and kind == "counter" else name
        self.names.update((name, family))
        self.lines.append(f"# HELP {family} {escape_help(help_text, openmetrics=self.openmetrics)}")
        self.lines.append(f"# TYPE {family} {kind}")
        if self.openmetrics and _unit(family):
            self.lines.append(f"# UNIT {family} {_unit(family)}")

    def sample(self, name: str, labels: _Labels, value: float) -> None:
        self.names.add(name)
        self.lines.append(f"{name}{_labels(labels)} {format_value(value)}")

    def simple(self, name: str, kind: str, help_text: str, value: float | None) -> None:
        """A family with one unlabelled sample (left out entirely when the value is unknown)."""
        if value is None:
            return
        self.family(name, kind, help_text)
        self.sample(name, (), value)

    def text(self) -> bytes:
        if self.openmetrics:
            self.lines.append("# EOF")
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
        "sidegate_request_fields_dropped_total",
        "counter",
        "fields_dropped",
        0,
        "Request header fields dropped for an underscore in the name (listeners.inbound.underscore_headers).",
    ),
    (
        "sidegate_client_send_timeouts_total",
        "counter",
        "client_send_timeouts",
        0,
        "Client connections cut for taking no byte for send_timeout.",
    ),
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


def _request_rows(snapshot: dict[str, Any]) -> list[_Row]:
    rows: list[_Row] = []
    for row in snapshot.get("requests", ()):
        labels: _Labels = (
            ("http_route", str(row["route"])),
            ("http_request_method", str(row["method"])),
            ("http_response_status_code", str(row["status"])),
        )
        # Only requests of a known consumer carry these (absent and empty are the same to Prometheus).
        if row.get("consumer") or row.get("tenant"):
            labels += (("consumer", str(row.get("consumer", ""))), ("tenant", str(row.get("tenant", ""))))
        rows.append((labels, list(row["buckets"]), float(row["sum"])))
    rows.sort(key=lambda r: r[0])
    return rows


def _upstream_rows(snapshot: dict[str, Any]) -> list[_Row]:
    rows: list[_Row] = [
        (
            (
                ("upstream", str(row["upstream"])),
                ("endpoint", str(row["endpoint"])),
                ("http_response_status_code", str(row["status"])),
            ),
            list(row["buckets"]),
            float(row["sum"]),
        )
        for row in snapshot.get("upstream_durations", ())
    ]
    rows.sort(key=lambda r: r[0])
    return rows


def _histogram(w: _Writer, name: str, help_text: str, rows: Iterable[_Row]) -> None:
    w.family(name, "histogram", help_text)
    for labels, buckets, total in rows:
        running = 0
        for le, n in zip(_LE, buckets, strict=True):
            running += n
            w.sample(f"{name}_bucket", (*labels, ("le", le)), running)
        w.sample(f"{name}_sum", labels, total)
        w.sample(f"{name}_count", labels, running)


def render_prometheus(snapshot: dict[str, Any]) -> bytes:
    """Render a snapshot (from :meth:`Metrics.snapshot` or :func:`merge`) as Prometheus text."""
    return render(snapshot)


def render_openmetrics(snapshot: dict[str, Any]) -> bytes:
    """Render a snapshot as OpenMetrics 1.0 text (ending with ``# EOF``)."""
    return render(snapshot, openmetrics=True)


def render(snapshot: dict[str, Any], *, openmetrics: bool = False, app: AppScrape | None = None) -> bytes:
    """Render a snapshot in either format, followed by the app's families when ``app`` is given."""
    if list(snapshot.get("buckets", BUCKETS)) != list(BUCKETS):
        raise ValueError("snapshot uses different histogram buckets")
    w = _Writer(openmetrics)
    rows = _request_rows(snapshot)
    _histogram(
        w,
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests, from request head to response end.",
        rows,
    )
    w.family("http_server_requests_total", "counter", "HTTP server requests finished.")
    for labels, buckets, _ in rows:
        w.sample("http_server_requests_total", labels, sum(buckets))

    _histogram(
        w,
        "http_client_request_duration_seconds",
        "Duration of requests to upstream endpoints, from sending the request to the response end.",
        _upstream_rows(snapshot),
    )
    up = sorted(
        ((("upstream", str(r["upstream"])), ("endpoint", str(r["endpoint"]))), int(r["count"]))
        for r in snapshot.get("upstream_requests", ())
    )
    w.family("sidegate_upstream_requests_total", "counter", "Requests answered by upstream endpoints.")
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
    if snapshot.get("egress"):
        _egress(w, snapshot["egress"])
    _telemetry(w, snapshot.get("telemetry") or {})
    _health(w, snapshot.get("health") or [])
    if app is not None:
        _app(w, app)
    return w.text()


_APP_GAUGES = (
    ("sidegate_app_metrics_scrape_success", "1 if the last scrape of the app's metrics succeeded, else 0."),
    ("sidegate_app_metrics_scrape_duration_seconds", "Time the last scrape of the app's metrics took."),
    ("sidegate_app_metrics_dropped_families", "App metric families left out: Sidegate uses their names."),
)


def _app(w: _Writer, app: AppScrape) -> None:
    """The scrape's own gauges, then every app family whose names Sidegate does not use."""
    ours = w.names | {name for name, _ in _APP_GAUGES}
    kept = [f for f in app.families if ours.isdisjoint(f.names)]
    values = (int(app.success), app.seconds, len(app.families) - len(kept))
    for (name, help_text), value in zip(_APP_GAUGES, values, strict=True):
        w.simple(name, "gauge", help_text, value)
    for family in kept:
        w.lines.extend(family.lines)


_POLICY_FAMILIES = (
    ("decisions", "sidegate_policy_decisions_total", ("http_route", "filter", "result"),
     "Decisions of the policy filters (authentication, access, CORS, rate limits), by result."),
    ("consumers", "sidegate_consumer_requests_total", ("http_route", "tenant", "consumer"),
     "Authenticated requests by consumer and tenant (names not configured count as _other)."),
    ("quotas", "sidegate_quota_requests_total", ("http_route", "limit", "tenant", "result"),
     "Requests under tenant-keyed limits (quotas), by tenant and result."),
    ("egress_requests", "sidegate_egress_requests_total", ("destination", "decision"),
     "Outbound requests and tunnels through the egress listener, by the rule that decided and the decision."),
)  # fmt: skip


_TELEMETRY = (
    ("access_log", "sidegate_access_log_lines_total", "Access log lines, written or dropped."),
    ("spans", "sidegate_trace_spans_total", "Sampled spans recorded, and exported or lost on the way out."),
)


def _telemetry(w: _Writer, tables: dict[str, Any]) -> None:
    """Access log and span counters, present while the feature is on."""
    for table, name, help_text in _TELEMETRY:
        rows = tables.get(table)
        if rows:
            w.family(name, "counter", help_text)
            for result, count in rows:
                w.sample(name, (("result", str(result)),), int(count))


def _egress(w: _Writer, part: dict[str, Any]) -> None:
    """The egress listener's families (:mod:`sidegate.observe.egress_metrics`), when it is on."""
    for name, kind, help_text, samples in egress_families(part):
        w.family(name, kind, help_text)
        for sample, labels, value in samples:
            w.sample(sample or name, labels, value)


def _health(w: _Writer, rows: list[dict[str, Any]]) -> None:
    """Active health checks, present when an upstream has a ``health_check``."""
    if not rows:
        return
    labelled = [((("upstream", str(r["upstream"])), ("endpoint", str(r["endpoint"]))), r) for r in rows]
    w.family(
        "sidegate_upstream_endpoint_healthy",
        "gauge",
        "1 if the endpoint passes its active health checks, else 0 (pending or unhealthy).",
    )
    for labels, row in labelled:
        w.sample("sidegate_upstream_endpoint_healthy", labels, int(row["healthy"]))
    w.family("sidegate_upstream_health_checks_total", "counter", "Active health checks, by result.")
    for labels, row in labelled:
        for result in ("failure", "success"):
            w.sample("sidegate_upstream_health_checks_total", (*labels, ("result", result)), int(row[result]))


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

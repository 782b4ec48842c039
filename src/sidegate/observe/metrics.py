"""Process-local metrics, cheap enough to record once per request on the hot path.

Theory of operation
-------------------
One :class:`Metrics` object lives in each worker process. Everything in it is a plain Python
number in a slot, mutated in place by the event loop thread: there are no locks (asyncio runs
one callback at a time) and no per-request allocation once a series exists.

* Per-route request stats live in a :class:`RouteStats`, created when a config is loaded
  (:meth:`Metrics.route`) and kept across reloads, so counters never reset. Its
  :meth:`RouteStats.observe` does two dict look-ups (method, then status), one ``bisect`` over a
  precomputed tuple of bucket bounds and two in-place increments (about 0.2 us on CPython 3.11).
  The request count is not stored: it is the sum of the bucket slots, computed at render time,
  as are the cumulative bucket values Prometheus wants.
* Cardinality is bounded: methods outside the standard nine fold into ``_OTHER`` and status codes
  outside 100..599 into ``_OTHER``; only well-formed keys are cached on the fast path.
* Gauges and byte counters are plain attributes that the server increments directly
  (``metrics.connections_active += 1``): an attribute write is the cheapest thing Python does.

:meth:`Metrics.snapshot` turns the state into a JSON-able dict so a supervisor can collect one per
worker; :func:`merge` adds snapshots together and :func:`sidegate.observe.prometheus.render_prometheus`
writes the text exposition format.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

#: Upper bounds (seconds) of the request duration histogram; a final +Inf bucket is implied.
BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_NSLOTS = len(BUCKETS) + 1  # + the +Inf slot

#: Methods kept as their own label value; anything else is counted as ``_OTHER``.
STANDARD_METHODS: frozenset[bytes] = frozenset(
    {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"CONNECT", b"TRACE"}
)
OTHER = "_OTHER"
#: Route label for requests that matched no route (OpenTelemetry leaves ``http.route`` unset).
UNMATCHED_ROUTE = ""

SNAPSHOT_FORMAT = 1


class _Series:
    """Duration histogram of one (route, method, status): a sum and one count per bucket."""

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.sum = 0.0
        self.buckets = [0] * _NSLOTS


class RouteStats:
    """Request counts and durations of one route, by method and status code."""

    __slots__ = ("_fast", "_series", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        # method bytes -> status -> series; only standard methods and valid statuses go in here.
        self._fast: dict[bytes, dict[int, _Series]] = {}
        # (method label, status label) -> series: every series, including the folded ones.
        self._series: dict[tuple[str, str], _Series] = {}

    def observe(self, method: bytes, status: int, seconds: float) -> None:
        """Record one finished request: its method, response status and duration in seconds."""
        try:
            series = self._fast[method][status]
        except KeyError:
            series = self._slow_series(method, status)
        series.sum += seconds
        series.buckets[bisect_left(BUCKETS, seconds)] += 1

    def _slow_series(self, method: bytes, status: int) -> _Series:
        standard = method in STANDARD_METHODS
        valid = 100 <= status <= 599
        key = (method.decode("ascii") if standard else OTHER, str(status) if valid else OTHER)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        if standard and valid:
            self._fast.setdefault(method, {})[status] = series
        return series

    def export(self) -> list[dict[str, Any]]:
        """The route's series as JSON-able rows (see :meth:`Metrics.snapshot`)."""
        return [
            {"route": self.name, "method": m, "status": s, "buckets": list(x.buckets), "sum": x.sum}
            for (m, s), x in self._series.items()
        ]


class UpstreamStats:
    """Requests sent to one endpoint of one upstream, and failures by kind.

    Hold one per endpoint (from :meth:`Metrics.upstream`) and bump ``requests`` directly.
    """

    __slots__ = ("endpoint", "failures", "requests", "upstream")

    def __init__(self, upstream: str, endpoint: str) -> None:
        self.upstream = upstream
        self.endpoint = endpoint
        self.requests = 0
        self.failures: dict[str, int] = {}

    def failure(self, kind: str) -> None:
        """Count one failed attempt; ``kind`` is a short fixed word (``connect``, ``timeout``...)."""
        self.failures[kind] = self.failures.get(kind, 0) + 1


class Metrics:
    """All the metrics of one process. Gauges and byte counters are plain, writable attributes."""

    __slots__ = (
        "_reloads_failed",
        "_reloads_ok",
        "_routes",
        "_upstreams",
        "bytes_received",
        "bytes_sent",
        "config_last_reload_success",
        "config_version",
        "connections_active",
        "requests_active",
        "start_time",
        "streams_active",
    )

    def __init__(self) -> None:
        self._routes: dict[str, RouteStats] = {}
        self._upstreams: dict[tuple[str, str], UpstreamStats] = {}
        self._reloads_ok = 0
        self._reloads_failed = 0
        self.connections_active = 0  # inbound client connections open now
        self.requests_active = 0  # requests between head received and response finished
        self.streams_active = 0  # upgraded tunnels (WebSocket, CONNECT) and event streams open now
        self.bytes_received = 0  # from clients
        self.bytes_sent = 0  # to clients
        self.config_version = 0
        self.config_last_reload_success = 1
        self.start_time = time.time()

    def route(self, name: str) -> RouteStats:
        """The stats of route ``name``, created on first use and kept for the process lifetime."""
        stats = self._routes.get(name)
        if stats is None:
            stats = self._routes[name] = RouteStats(name)
        return stats

    def upstream(self, upstream: str, endpoint: str) -> UpstreamStats:
        """The counters of one upstream endpoint (``"host:port"``), created on first use."""
        key = (upstream, endpoint)
        stats = self._upstreams.get(key)
        if stats is None:
            stats = self._upstreams[key] = UpstreamStats(upstream, endpoint)
        return stats

    def upstream_request(self, upstream: str, endpoint: str) -> None:
        """Count one request sent upstream (prefer holding :meth:`upstream` and ``.requests += 1``)."""
        self.upstream(upstream, endpoint).requests += 1

    def upstream_failure(self, upstream: str, endpoint: str, kind: str) -> None:
        """Count one failed upstream attempt of the given kind."""
        self.upstream(upstream, endpoint).failure(kind)

    def config_reload(self, ok: bool) -> None:
        """Record the outcome of a config reload attempt (the version is set separately)."""
        if ok:
            self._reloads_ok += 1
        else:
            self._reloads_failed += 1
        self.config_last_reload_success = 1 if ok else 0

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of every value, for merging across workers and rendering."""
        series: list[dict[str, Any]] = []
        for stats in self._routes.values():
            series.extend(stats.export())
        upstream_requests = [
            {"upstream": u.upstream, "endpoint": u.endpoint, "count": u.requests}
            for u in self._upstreams.values()
        ]
        upstream_failures = [
            {"upstream": u.upstream, "endpoint": u.endpoint, "kind": kind, "count": n}
            for u in self._upstreams.values()
            for kind, n in u.failures.items()
        ]
        return {
            "format": SNAPSHOT_FORMAT,
            "buckets": list(BUCKETS),
            "requests": series,
            "upstream_requests": upstream_requests,
            "upstream_failures": upstream_failures,
            "connections_active": self.connections_active,
            "requests_active": self.requests_active,
            "streams_active": self.streams_active,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "config_reloads": {"ok": self._reloads_ok, "failed": self._reloads_failed},
            "config_version": self.config_version,
            "config_last_reload_success": self.config_last_reload_success,
            "process_resident_memory_bytes": resident_memory_bytes(),
            "process_start_time_seconds": self.start_time,
        }


_SUMMED = ("connections_active", "requests_active", "streams_active", "bytes_received", "bytes_sent")


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Add worker snapshots into one: counters, histograms and gauges are summed.

    ``config_version`` takes the highest value, ``config_last_reload_success`` the lowest (1 only if
    every worker's last reload succeeded), ``process_start_time_seconds`` the earliest, and
    ``process_resident_memory_bytes`` the total of the workers that reported one.
    """
    requests: dict[tuple[str, str, str], dict[str, Any]] = {}
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
            rkey = (str(row["route"]), str(row["method"]), str(row["status"]))
            acc = requests.get(rkey)
            if acc is None:
                requests[rkey] = {**row, "buckets": list(row["buckets"])}
            else:
                acc["sum"] += row["sum"]
                acc["buckets"] = [a + b for a, b in zip(acc["buckets"], row["buckets"], strict=True)]
        for row in snap.get("upstream_requests", ()):
            ukey = (row["upstream"], row["endpoint"])
            up_requests[ukey] = up_requests.get(ukey, 0) + int(row["count"])
        for row in snap.get("upstream_failures", ()):
            fkey = (row["upstream"], row["endpoint"], row["kind"])
            up_failures[fkey] = up_failures.get(fkey, 0) + int(row["count"])

    out["cache"] = merge_cache([s["cache"] for s in snapshots if s.get("cache")])
    out["policy"] = merge_rows([s["policy"] for s in snapshots if s.get("policy")])
    stores = [s["cache_store"] for s in snapshots if s.get("cache_store")]
    out["cache_store"] = stores[-1] if stores else None  # one store shared by every worker

    out["requests"] = list(requests.values())
    out["upstream_requests"] = [
        {"upstream": u, "endpoint": e, "count": n} for (u, e), n in up_requests.items()
    ]
    out["upstream_failures"] = [
        {"upstream": u, "endpoint": e, "kind": k, "count": n} for (u, e, k), n in up_failures.items()
    ]
    return out


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


def resident_memory_bytes() -> int | None:
    """This process's resident set size from ``/proc/self/status`` (None where there is no procfs)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        return None
    return None

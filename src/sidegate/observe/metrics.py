"""Process-local metrics, cheap enough to record once per request on the hot path.

Theory of operation
-------------------
One :class:`Metrics` object lives in each worker process. Everything in it is a plain Python
number in a slot, mutated in place by the event loop thread: there are no locks (asyncio runs
one callback at a time) and no per-request allocation once a series exists.

* Per-route request stats live in a :class:`RouteStats`, created when a config is loaded
  (:meth:`Metrics.route`) and kept across reloads, so counters never reset. Its
  :meth:`RouteStats.observe` does two dict look-ups (method, then status), a short scan over a
  precomputed tuple of bucket bounds and two in-place increments (about 0.2 us on CPython 3.11).
  The request count is not stored: it is the sum of the bucket slots, computed at render time,
  as are the cumulative bucket values Prometheus wants.
* Cardinality is bounded: methods outside the standard nine fold into ``_OTHER`` and status codes
  outside 100..599 into ``_OTHER``; only well-formed keys are cached on the fast path.
* Requests of a known consumer are counted in a child :class:`RouteStats` of the route, labelled
  with the consumer and its tenant: :meth:`RouteStats.for_consumer` finds it with one dict look-up
  once it exists. At most :data:`MAX_CONSUMERS` children per route; later consumers share one
  child labelled ``_OTHER``. Requests without a consumer stay in the route's own series (which
  carry no consumer labels: in Prometheus an absent label and an empty one are the same).
* Per-endpoint upstream stats live in an :class:`UpstreamStats` (:meth:`Metrics.upstream`, made
  when a config is loaded): requests and a duration histogram by status, and failures by kind.
* Gauges and byte counters are plain attributes that the server increments directly
  (``metrics.connections_active += 1``): an attribute write is the cheapest thing Python does.

:meth:`Metrics.snapshot` turns the state into a JSON-able dict so a supervisor can collect one per
worker; :func:`sidegate.observe.aggregate.merge` adds snapshots together and
:mod:`sidegate.observe.prometheus` writes the text exposition formats.
"""

from __future__ import annotations

import time
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

#: Distinct consumers (with their tenants) counted separately per route; more go to ``_OTHER``.
MAX_CONSUMERS = 100
_FAST_CONSUMERS = 1000  # consumer names remembered for the one-look-up path (memory bound)

SNAPSHOT_FORMAT = 1


def bucket_of(seconds: float) -> int:
    """The histogram slot of ``seconds``: the first bound at or above it (``bisect_left``), found by
    a scan from the smallest bound. Compiled, this is a few native comparisons for the sub-
    millisecond durations a sidecar mostly sees, where a call to ``bisect`` boxes the float."""
    index = 0
    bounds = BUCKETS
    last = len(bounds)
    while index < last and bounds[index] < seconds:
        index += 1
    return index


class _Series:
    """Duration histogram of one (route, method, status): a sum and one count per bucket."""

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.sum = 0.0
        self.buckets = [0] * _NSLOTS


class RouteStats:
    """Request counts and durations of one route, by method and status code.

    A route's own instance counts requests without a consumer; :meth:`for_consumer` gives the
    child that counts one consumer's requests (``consumer`` and ``tenant`` are set on children).
    """

    __slots__ = (
        "_by_consumer",
        "_children",
        "_fast",
        "_other",
        "_owner",
        "_series",
        "consumer",
        "name",
        "tenant",
    )

    def __init__(
        self, name: str, consumer: str = "", tenant: str = "", owner: RouteStats | None = None
    ) -> None:
        self.name = name
        self.consumer = consumer
        self.tenant = tenant
        self._owner = owner  # the route's own instance, for a consumer child
        # method bytes -> status -> series; only standard methods and valid statuses go in here.
        self._fast: dict[bytes, dict[int, _Series]] = {}
        # (method label, status label) -> series: every series, including the folded ones.
        self._series: dict[tuple[str, str], _Series] = {}
        # consumer -> (tenant, child): the one-look-up path of for_consumer.
        self._by_consumer: dict[str, tuple[str, RouteStats]] = {}
        # (consumer, tenant) -> child: every named child (at most MAX_CONSUMERS), then _other.
        self._children: dict[tuple[str, str], RouteStats] = {}
        self._other: RouteStats | None = None

    def observe(self, method: bytes, status: int, seconds: float) -> None:
        """Record one finished request: its method, response status and duration in seconds."""
        try:
            series = self._fast[method][status]
        except KeyError:
            series = self._slow_series(method, status)
        series.sum += seconds
        series.buckets[bucket_of(seconds)] += 1

    def for_consumer(self, consumer: str, tenant: str) -> RouteStats:
        """The stats that count this consumer's requests on this route (call ``observe`` on them).

        ``("", "")`` (no consumer) answers the route's own stats. One dict look-up once the
        child exists; the first request of a consumer makes it (at most :data:`MAX_CONSUMERS`
        per route, then the shared ``_OTHER`` child).
        """
        entry = self._by_consumer.get(consumer)
        if entry is not None and entry[0] == tenant:
            return entry[1]
        return self._consumer_child(consumer, tenant)

    def _consumer_child(self, consumer: str, tenant: str) -> RouteStats:
        owner = self._owner
        if owner is not None:  # asked of a child: the route's own instance keeps the children
            return owner.for_consumer(consumer, tenant)
        if not consumer and not tenant:
            child = self
        else:
            found = self._children.get((consumer, tenant))
            if found is not None:
                child = found
            elif len(self._children) < MAX_CONSUMERS:
                child = self._children[(consumer, tenant)] = RouteStats(self.name, consumer, tenant, self)
            else:
                other = self._other
                if other is None:
                    other = self._other = RouteStats(self.name, OTHER, OTHER, self)
                child = other
        if len(self._by_consumer) < _FAST_CONSUMERS or consumer in self._by_consumer:
            self._by_consumer[consumer] = (tenant, child)
        return child

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
        """The route's series, its consumers' included, as JSON-able rows (see :meth:`Metrics.snapshot`)."""
        rows = [
            {
                "route": self.name,
                "method": m,
                "status": s,
                "consumer": self.consumer,
                "tenant": self.tenant,
                "buckets": list(x.buckets),
                "sum": x.sum,
            }
            for (m, s), x in self._series.items()
        ]
        children = list(self._children.values())
        if self._other is not None:
            children.append(self._other)
        for child in children:
            rows.extend(child.export())
        return rows


class UpstreamStats:
    """Requests sent to one endpoint of one upstream: a duration histogram by status, and
    failures by kind. Hold one per endpoint (from :meth:`Metrics.upstream`, at config load)."""

    __slots__ = ("_fast", "_series", "endpoint", "failures", "requests", "upstream")

    def __init__(self, upstream: str, endpoint: str) -> None:
        self.upstream = upstream
        self.endpoint = endpoint
        self.requests = 0
        self.failures: dict[str, int] = {}
        self._fast: dict[int, _Series] = {}  # valid statuses only
        self._series: dict[str, _Series] = {}  # status label -> series (invalid ones as _OTHER)

    def observe(self, seconds: float, status: int) -> None:
        """Count one request the endpoint answered: its duration in seconds and response status."""
        self.requests += 1
        series = self._fast.get(status)
        if series is None:
            series = self._slow_series(status)
        series.sum += seconds
        series.buckets[bucket_of(seconds)] += 1

    def _slow_series(self, status: int) -> _Series:
        valid = 100 <= status <= 599
        key = str(status) if valid else OTHER
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        if valid:
            self._fast[status] = series
        return series

    def failure(self, kind: str) -> None:
        """Count one failed attempt; ``kind`` is a short fixed word (``connect``, ``timeout``...)."""
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def export(self) -> list[dict[str, Any]]:
        """The duration series as JSON-able rows (see :meth:`Metrics.snapshot`)."""
        return [
            {
                "upstream": self.upstream,
                "endpoint": self.endpoint,
                "status": status,
                "buckets": list(x.buckets),
                "sum": x.sum,
            }
            for status, x in self._series.items()
        ]


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
        "fields_dropped",
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
        self.fields_dropped = 0  # request header fields dropped (an underscore in the name)
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
        """Count one request sent upstream without its duration (prefer :meth:`UpstreamStats.observe`)."""
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
        upstream_durations: list[dict[str, Any]] = []
        for u in self._upstreams.values():
            upstream_durations.extend(u.export())
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
            "upstream_durations": upstream_durations,
            "upstream_failures": upstream_failures,
            "connections_active": self.connections_active,
            "requests_active": self.requests_active,
            "streams_active": self.streams_active,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "fields_dropped": self.fields_dropped,
            "config_reloads": {"ok": self._reloads_ok, "failed": self._reloads_failed},
            "config_version": self.config_version,
            "config_last_reload_success": self.config_last_reload_success,
            "process_resident_memory_bytes": resident_memory_bytes(),
            "process_start_time_seconds": self.start_time,
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

"""L4: a route's hot fields, copied once per snapshot into a compiled object the exchange reads.

It exists for mypyc, and it pays: ``Route`` is an interpreted dataclass, and compiled code reading
its attributes pays a generic look-up each time (plus two dict look-ups for the cluster and the
metric child); reading them from this native object saved ~2,000 instructions a request when it
was introduced (docs/architecture.md, the per-request cost table). The
:class:`~sidegate.request.view.View` builds one plan per route and config snapshot (so a reload
starts fresh plans), with the route's cluster, its single pool when it has one, its metric
children and its access log memo already made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidegate.config.snapshot import ObservabilitySpec, Route
from sidegate.request.access_text import LineMemo

if TYPE_CHECKING:
    from sidegate.observe.metrics import RouteStats, UpstreamStats
    from sidegate.upstream.cluster import Cluster
    from sidegate.upstream.pool import EndpointPool


class RoutePlan:
    """One route of one snapshot, as the exchange reads it (see the module's docstring)."""

    def __init__(
        self,
        route: Route,
        cluster: Cluster,
        stats: RouteStats,
        endpoint_stats: dict[EndpointPool, UpstreamStats],
        observability: ObservabilitySpec,
    ) -> None:
        self.route = route
        self.name = route.name
        self.upstream = route.upstream
        self.cluster = cluster
        pools = cluster.pools
        self.single_pool: EndpointPool | None = pools[0] if len(pools) == 1 else None
        self.stats = stats
        self.metrics = observability.metrics  # False: no per-request metrics (to measure their cost)
        self.endpoint_stats = endpoint_stats  # each pool of the cluster -> its upstream metrics
        self.max_body = route.max_body
        self.filters = bool(route.filters)
        self.on_request = route.on_request
        self.on_response = route.on_response
        self.on_response_body = route.on_response_body
        self.on_response_end = route.on_response_end
        self.on_upstream_failure = route.on_upstream_failure
        self.on_log = route.on_log
        # The cache filter, whose result the access log reports (None when the route has none).
        self.cache_filter = next((f for f in route.filters if f.name == "cache"), None)
        self.log_memo = LineMemo(route.name)  # the route's last access line (see outcome.access_line)
        self.rewrite = route.rewrite
        self.request_headers = route.request_headers
        self.response_headers = route.response_headers
        timeouts = route.timeouts
        self.connect_timeout = timeouts.connect
        self.response_timeout = timeouts.response
        self.idle_timeout = timeouts.idle
        self.send_timeout = timeouts.send

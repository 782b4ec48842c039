"""L4: what a request runs on: one config snapshot with the clusters, route plans and metric
children built for it. A reload builds a new :class:`View` and swaps the reference; a request
keeps the view it started with, so a reload never changes it mid-flight."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidegate.config.snapshot import Snapshot
from sidegate.forwarding import ClientAddresses, ForwardingCache
from sidegate.request.background import lend_to_cache
from sidegate.request.plan import RoutePlan

if TYPE_CHECKING:
    from sidegate.observe.metrics import Metrics
    from sidegate.upstream.cluster import Cluster


class View:
    """What a request runs on: one snapshot with the clusters and metric children built for it."""

    __slots__ = (
        "client_addresses",
        "clusters",
        "forwarding",
        "no_route_stats",
        "plans",
        "router",
        "snapshot",
        "via",
        "via_line",
    )

    def __init__(
        self,
        snapshot: Snapshot,
        clusters: dict[str, Cluster],
        metrics: Metrics,
    ) -> None:
        self.snapshot = snapshot
        self.router = snapshot.router
        self.clusters = clusters
        self.no_route_stats = metrics.route("(none)")
        endpoint_stats = {
            pool: metrics.upstream(name, str(pool.endpoint))
            for name, cluster in clusters.items()
            for pool in cluster.pools
        }
        self.plans = {
            route: RoutePlan(
                route,
                clusters[route.upstream],
                metrics.route(route.name),
                endpoint_stats,
                snapshot.observability,
            )
            for route in snapshot.routes
        }
        for plan in self.plans.values():  # the configured consumers' label children, made now
            if plan.filters:
                for consumer in snapshot.consumers:
                    plan.stats.for_consumer(consumer.name, consumer.tenant)
        forwarded = snapshot.forwarded
        # Trusted front proxies configured: requests with forwarding headers find their real client.
        self.client_addresses = (
            ClientAddresses(forwarded) if forwarded.trusted or forwarded.trusted_hops else None
        )
        self.forwarding = ForwardingCache(forwarded, self.client_addresses)
        for plan in self.plans.values():  # cache revalidations go upstream as this view's requests do
            lend_to_cache(plan, self.forwarding)
        self.via = via = snapshot.forwarded.via
        self.via_line = b"Via: " + via + b"\r\n" if via else b""

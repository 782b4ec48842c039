"""A named cluster of endpoints and the balancer that picks one per request."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from sidegate.config.snapshot import UpstreamSpec
from sidegate.server.timers import Sweeper
from sidegate.upstream.pool import EndpointPool

HealthTable = dict[str, dict[str, bool]]  # upstream -> endpoint ("host:port") -> healthy


class Cluster:
    """Endpoints of one upstream with their pools; ``pick`` is round-robin over the healthy ones.

    With active health checks (:mod:`sidegate.upstream.health`) ``pick`` skips endpoints found
    unhealthy while another is healthy; when none is healthy it sends to all of them (Envoy's
    panic routing). A single endpoint is always used (requests take ``RoutePlan.single_pool``).
    """

    __slots__ = ("_choice", "_next", "name", "pools", "spec", "unhealthy")

    def __init__(self, spec: UpstreamSpec, pools: tuple[EndpointPool, ...]) -> None:
        self.spec = spec
        self.name = spec.name
        self.pools = pools
        self._choice = pools  # what pick() rotates over: the healthy pools, or all in panic
        self.unhealthy: frozenset[str] = frozenset()  # endpoints ("host:port") found unhealthy
        self._next = 0

    def pick(self) -> EndpointPool:
        pools = self._choice
        if len(pools) == 1:
            return pools[0]
        index = self._next % len(pools)
        self._next = index + 1
        return pools[index]

    def set_health(self, healthy: Mapping[str, bool]) -> None:
        """Which endpoints the checks found healthy (an endpoint not named is taken as healthy)."""
        self.unhealthy = frozenset(
            str(p.endpoint) for p in self.pools if not healthy.get(str(p.endpoint), True)
        )
        usable = tuple(p for p in self.pools if str(p.endpoint) not in self.unhealthy)
        self._choice = usable or self.pools

    def retire(self) -> None:
        for pool in self.pools:
            pool.retire()


class ClusterSet:
    """The clusters of the running config, carried across reloads.

    A reload reuses the cluster (and its warm connections) when an upstream's spec is unchanged,
    builds a new one when it changed, and retires clusters that are gone.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sweeper: Sweeper,
        buffer_high_water: int,
        chunk_line: int = 4096,
    ) -> None:
        self._loop = loop
        self._sweeper = sweeper
        self._buffer = buffer_high_water
        self._chunk_line = chunk_line
        self.clusters: dict[str, Cluster] = {}

    def update(self, specs: Mapping[str, UpstreamSpec]) -> dict[str, Cluster]:
        new: dict[str, Cluster] = {}
        for name, spec in specs.items():
            old = self.clusters.get(name)
            if old is not None and old.spec == spec:
                new[name] = old
                continue
            pools = tuple(
                EndpointPool(
                    self._loop,
                    endpoint,
                    self._sweeper,
                    max_idle=spec.max_idle,
                    idle_timeout=spec.idle_timeout,
                    buffer_high_water=self._buffer,
                    chunk_line=self._chunk_line,
                )
                for endpoint in spec.endpoints
            )
            new[name] = Cluster(spec, pools)
        for name, old in self.clusters.items():
            if new.get(name) is not old:
                old.retire()
        self.clusters = new
        return new

    def set_health(self, table: Mapping[str, Mapping[str, bool]]) -> None:
        """What the health checks found (:mod:`sidegate.upstream.health`): each cluster's
        balancer skips its unhealthy endpoints (an endpoint not in ``table`` is healthy)."""
        for name, cluster in self.clusters.items():
            cluster.set_health(table.get(name, {}))

    def report(self) -> list[dict[str, Any]]:
        """Each upstream of the running config with its endpoints' state, for the admin API:
        ``[{"name", "balancer", "endpoints": [EndpointPool.report(), ...]}]``."""
        return [
            {
                "name": name,
                "balancer": cluster.spec.balancer,
                "endpoints": [pool.report() for pool in cluster.pools],
            }
            for name, cluster in self.clusters.items()
        ]

    def close(self) -> None:
        for cluster in self.clusters.values():
            cluster.retire()

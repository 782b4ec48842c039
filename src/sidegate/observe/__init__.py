"""Observability: per-process metrics, their merging across workers and Prometheus exposition."""

from sidegate.observe.aggregate import merge
from sidegate.observe.metrics import (
    BUCKETS,
    MAX_CONSUMERS,
    UNMATCHED_ROUTE,
    Metrics,
    RouteStats,
    UpstreamStats,
)
from sidegate.observe.prometheus import (
    CONTENT_TYPE,
    OPENMETRICS_CONTENT_TYPE,
    render,
    render_openmetrics,
    render_prometheus,
    wants_openmetrics,
)

__all__ = [
    "BUCKETS",
    "CONTENT_TYPE",
    "MAX_CONSUMERS",
    "OPENMETRICS_CONTENT_TYPE",
    "UNMATCHED_ROUTE",
    "Metrics",
    "RouteStats",
    "UpstreamStats",
    "merge",
    "render",
    "render_openmetrics",
    "render_prometheus",
    "wants_openmetrics",
]

"""Observability: per-process metrics, their merging across workers and Prometheus exposition."""

from sidegate.observe.metrics import (
    BUCKETS,
    UNMATCHED_ROUTE,
    Metrics,
    RouteStats,
    UpstreamStats,
    merge,
)
from sidegate.observe.prometheus import CONTENT_TYPE, render_prometheus

__all__ = [
    "BUCKETS",
    "CONTENT_TYPE",
    "UNMATCHED_ROUTE",
    "Metrics",
    "RouteStats",
    "UpstreamStats",
    "merge",
    "render_prometheus",
]

"""The ``observability:`` section of the config: access log, tracing, explain and app metrics.

Checked by pydantic in the config checker only (like :mod:`sidegate.config.model`, which imports
it); the serving process gets :class:`~sidegate.config.snapshot.ObservabilitySpec` from the
compiler.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sidegate.config.fields import Duration


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestMetrics(_Model):
    """Per-request metrics (request counts and durations, upstream durations)."""

    enabled: bool = Field(
        default=True, description="record request metrics (off: only to measure what they cost)"
    )


class AccessLog(_Model):
    """One JSON line per request, written by a background thread; never blocks a request."""

    enabled: bool = Field(default=False, description="write an access log line for every request")
    path: str = Field(
        default="-", min_length=1, description='"-" for standard output, else a file opened for appending'
    )
    buffer_lines: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="lines held while the sink is slow; more are dropped (and counted), never waited for",
    )


class Tracing(_Model):
    """W3C trace context: honoured, propagated with Sidegate's own span, sampled parent-based."""

    enabled: bool = Field(
        default=False,
        description="take part in traces: a span per request, traceparent sent to the app",
    )
    sample_ratio: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="share of new traces (no traceparent) sampled; OTEL_TRACES_SAMPLER_ARG overrides",
    )
    recent: int = Field(
        default=256, ge=0, le=100_000, description="sampled spans kept for GET /traces on admin"
    )


class Explain(_Model):
    """Decision records of recent requests, for GET /explain/{request-id} on admin."""

    recent: int = Field(
        default=2048, ge=0, le=1_000_000, description="requests remembered (a ring: the oldest goes first)"
    )


_LOOPBACK_URL = re.compile(r"http://(127\.0\.0\.1|localhost|\[::1\])(:\d{1,5})?/\S*")


def _loopback_url(value: str) -> str:
    if value and not _LOOPBACK_URL.fullmatch(value):
        raise ValueError(
            "the app is scraped on loopback only: give http://127.0.0.1:PORT/PATH "
            "(or localhost, [::1]), e.g. http://127.0.0.1:3000/metrics"
        )
    return value


class AppMetrics(_Model):
    """The app's own Prometheus endpoint, scraped and served together with Sidegate's."""

    url: Annotated[str, AfterValidator(_loopback_url)] = Field(
        default="",
        description='the app\'s metrics on loopback, "http://127.0.0.1:3000/metrics" ("" = none)',
    )
    timeout: Duration = Field(default=1.0, gt=0, description="most a scrape of the app may take")


class Observability(_Model):
    """What Sidegate tells about the requests it sees."""

    metrics: RequestMetrics = Field(default_factory=RequestMetrics, description="request metrics")
    access_log: AccessLog = Field(default_factory=AccessLog, description="JSON access log")
    tracing: Tracing = Field(default_factory=Tracing, description="distributed tracing (W3C, OTLP)")
    explain: Explain = Field(default_factory=Explain, description="recent decision records")
    app_metrics: AppMetrics = Field(default_factory=AppMetrics, description="merge the app's /metrics")

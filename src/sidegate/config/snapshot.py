"""The compiled, immutable configuration that the data plane runs on.

A :class:`Snapshot` is built once per (re)load by :mod:`sidegate.config.compile` from a validated
config, and then only read. Every value here is plain (bytes, numbers, tuples, compiled regexes),
ready for the hot path: nothing is parsed, looked up by name or formatted per request.

A request takes the current snapshot once, when its head arrives, and keeps it to the end; a
reload builds a new snapshot and swaps one reference, so nothing in flight ever sees a mix.

Defaults belong to the config model (:mod:`sidegate.config.model`), and the compiler passes every
value: what only the compiler builds (the snapshot, its limits, cache and upstreams) has no
defaults here. The few values that code also builds as placeholders before a config is applied
(route timeouts, forwarding, identity, Redis, observability) keep defaults, and a test checks that
they are the model's (``tests/unit/test_config_defaults.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: the hooks module imports nothing of the config, nor does the router
    from sidegate.config.egress_spec import EgressSpec
    from sidegate.filters.hooks import FilterHooks
    from sidegate.routing.router import Router


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-route upstream timeouts, in seconds; 0 means no limit."""

    connect: float = 2.0
    response: float = 15.0  # until the response head arrives
    idle: float = 60.0  # between body bytes once the response streams; also for upgraded tunnels
    send: float = 60.0  # the app accepting no byte of what Sidegate has for it (upload, tunnel)


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    """Header changes applied to a message, prepared as bytes.

    ``remove`` holds lower-case names; ``set`` replaces any header of that name; ``add`` appends.
    ``drop`` (derived) is every lower-case name whose incoming copies go; ``block`` (derived) is
    the ready-to-write ``Name: value\\r\\n`` lines of ``set`` and ``add``.
    """

    set: tuple[tuple[bytes, bytes], ...] = ()
    add: tuple[tuple[bytes, bytes], ...] = ()
    remove: frozenset[bytes] = frozenset()
    drop: frozenset[bytes] = field(init=False)
    block: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "drop", self.remove | {name.lower() for name, _ in self.set})
        lines = b"".join(name + b": " + value + b"\r\n" for name, value in self.set + self.add)
        object.__setattr__(self, "block", lines)

    def apply(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """``headers`` without the dropped names (the caller writes ``block`` after them)."""
        drop = self.drop
        return [(n, v) for n, v in headers if n.lower() not in drop] if drop else headers


@dataclass(frozen=True, slots=True)
class Rewrite:
    """How a route rewrites the request path before it goes upstream (one of the three)."""

    strip_prefix: bytes | None = None
    path: bytes | None = None
    regex: re.Pattern[bytes] | None = None
    replacement: bytes = b""

    def apply(self, path: bytes) -> bytes:
        if self.path is not None:
            return self.path
        if self.strip_prefix is not None:
            if path.startswith(self.strip_prefix):
                rest = path[len(self.strip_prefix) :]
                return rest if rest.startswith(b"/") else b"/" + rest
            return path
        if self.regex is not None:
            return self.regex.sub(self.replacement, path, count=1)
        return path


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """A compiled route: where matching requests go and what happens on the way."""

    name: str
    upstream: str
    timeouts: Timeouts = field(default_factory=Timeouts)
    rewrite: Rewrite | None = None
    request_headers: HeaderEdits | None = None
    response_headers: HeaderEdits | None = None
    max_body: int = 10 * 1024 * 1024
    filters: tuple[FilterHooks, ...] = ()
    # Only the filters that implement each hook, in chain order (decided at compile time).
    on_request: tuple[FilterHooks, ...] = ()
    on_response: tuple[FilterHooks, ...] = ()
    on_response_body: tuple[FilterHooks, ...] = ()
    on_response_end: tuple[FilterHooks, ...] = ()
    on_upstream_failure: tuple[FilterHooks, ...] = ()
    on_log: tuple[FilterHooks, ...] = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HealthCheckSpec:
    """Active checks of each endpoint of an upstream: ``GET path`` every ``interval``."""

    path: str
    interval: float
    timeout: float
    healthy_threshold: int
    unhealthy_threshold: int


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """A named cluster of endpoints and how connections to it are pooled."""

    name: str
    endpoints: tuple[Endpoint, ...]
    balancer: str
    max_idle: int  # idle keep-alive connections kept per endpoint
    idle_timeout: float  # an idle pooled connection is closed after this
    health_check: HealthCheckSpec | None = None


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class InboundLimits:
    """Limits that protect the pod (DESIGN.md, "Defaults that protect the pod")."""

    head_size: int
    header_count: int
    head_timeout: float
    body_idle: float
    keepalive_idle: float
    buffer_high_water: int
    send_timeout: float  # the client accepting no byte of what Sidegate has for it
    # Request fields always removed from what clients send (lower-case): the identity headers
    # Sidegate itself sets, so that no client can claim to be a consumer.
    drop_fields: frozenset[bytes]
    chunk_line: int  # a chunk-size line with its extensions (400 above it; 502 upstream)
    # Request fields whose name has an underscore: drop_managed, drop, reject or allow; "managed"
    # means a name, "_" read as "-", that Sidegate sets or strips: the special fields, the identity
    # headers and the names in managed_fields (lower-case: the routes' request header edits).
    underscore_headers: str
    managed_fields: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class ForwardedSpec:
    """Which forwarding headers Sidegate adds to requests.

    ``mode``: ``x-forwarded`` (X-Forwarded-For/-Proto/-Host), ``forwarded`` (RFC 7239), ``off``.
    ``trust_incoming``: keep what a trusted front proxy already set (the proto and host it saw, the
    client chain); when false, client-sent copies are replaced.
    ``trusted`` (CIDR ranges, normalised) or ``trusted_hops``: the front proxies whose chain names
    the real client (see :mod:`sidegate.forwarding`); with either set, incoming forwarding headers
    are kept only from a trusted peer.
    """

    mode: str = "x-forwarded"
    trust_incoming: bool = True
    via: bytes = b"1.1 sidegate"  # empty: no Via header
    trusted: tuple[str, ...] = ()
    trusted_hops: int = 0


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The pod's shared response cache (top-level ``cache:``); routes opt in with the cache filter."""

    dir: str
    max_size: int  # bytes of keys and values, least recently used evicted above
    max_entry_size: int  # a larger response streams through uncached
    quotas: Mapping[str, int]  # partition (tenant) -> its own max bytes


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A consumer of the API (top-level ``consumers:``): who a credential belongs to."""

    name: str
    tenant: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    api_key_hashes: tuple[bytes, ...] = ()  # SHA-256 digests of its API keys


@dataclass(frozen=True, slots=True)
class IdentitySpec:
    """Headers that tell the app who called (top-level ``identity:``); empty: not sent."""

    consumer_header: bytes = b"X-Consumer"
    tenant_header: bytes = b"X-Tenant"


@dataclass(frozen=True, slots=True)
class RedisTls:
    """TLS to Redis (``redis.tls``, for a ``rediss://`` URL): PEM files, "" when not given."""

    ca_file: str = ""  # "": the system trust store
    cert_file: str = ""  # a client certificate, for a Redis that requires one
    key_file: str = ""  # "": the key is in cert_file
    server_name: str = ""  # the name the certificate must be for (and SNI); "": the URL's host


@dataclass(frozen=True, slots=True)
class RedisSpec:
    """The Redis shared by every pod for global rate limits (top-level ``redis:``)."""

    url: str = ""
    timeout: float = 0.05
    connect_timeout: float = 0.5
    password: str = field(default="", repr=False)
    tls: RedisTls | None = None  # set exactly when the URL is rediss://


@dataclass(frozen=True, slots=True)
class ObservabilitySpec:
    """Access log, tracing, explain and app metrics (top-level ``observability:``)."""

    metrics: bool = True  # per-request metrics (off only to measure their cost)
    access_log: bool = False
    access_log_path: str = "-"  # "-": standard output
    access_log_buffer: int = 10_000  # lines held while the sink is slow; more are dropped
    tracing: bool = False
    sample_ratio: float = 0.01  # of new traces (no parent); OTEL_TRACES_SAMPLER_ARG overrides
    recent_traces: int = 256
    recent_requests: int = 2048  # decision records kept for explain
    app_metrics_url: str = ""
    app_metrics_timeout: float = 1.0


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Everything the running gateway needs, compiled from one config file."""

    router: Router[Route]
    upstreams: Mapping[str, UpstreamSpec]
    inbound: ListenerSpec
    admin: ListenerSpec
    health: ListenerSpec | None  # None: `listeners.health.address: off`
    admin_token_file: str | None  # every admin request needs the bearer token in this file
    limits: InboundLimits
    forwarded: ForwardedSpec
    workers: int
    drain_timeout: float
    routes: tuple[Route, ...]
    cache: CacheSettings
    consumers: tuple[ConsumerSpec, ...]
    identity: IdentitySpec
    redis: RedisSpec
    observability: ObservabilitySpec
    dump: Mapping[str, Any]  # normalised config, secrets redacted
    source: str
    egress: EgressSpec | None = None  # None: no egress section, no egress listener
    drain_delay: float = 5.0  # SIGTERM: serve on (not ready, Connection: close) this long first

"""``rate_limit``: how often a caller may use a route, in this pod or across every pod.

    filters:
      api_key: {}
      rate_limit: {requests: 100, per: 1s, burst: 20, key: consumer}          # one limit
      # or several, e.g. a per-second limit here and a daily tenant quota in Redis:
      rate_limit:
        limits:
          - {requests: 20, per: 1s, key: ip}
          - {requests: 100000, per: 1d, key: tenant, store: redis}
        on_redis_failure: local     # local (a per-pod limit meanwhile) | open | closed

Each limit is a GCRA (:mod:`sidegate.policy.gcra`): ``requests`` per ``per`` on average, with
``burst`` (default: ``requests``) allowed at once. ``key`` says whose requests count together:
``ip``, ``consumer``, ``tenant`` (from an authentication filter earlier in the chain; a request
without one counts under its client address), ``header:NAME`` or ``route``. ``store: local``
counts in a table shared by every worker of the pod; ``store: redis`` keeps one count across
every pod (top-level ``redis:``), one atomic round trip per decision, bounded by ``redis.timeout``:
when Redis is slow or down the route falls back as ``on_redis_failure`` says, and never waits longer.

A refused request gets 429 with ``Retry-After`` and ``RateLimit-Policy``/``RateLimit`` headers
(draft-ietf-httpapi-ratelimit-headers); allowed responses carry the tightest limit's headers too.

Each limit is kept by a store (:mod:`sidegate.ratelimit.store`: the pod's table or Redis, one
interface). When every limit of a route is local (the common case), the filter's hooks are those
of a compiled :class:`~sidegate.filters.fastpath.LimitPath`, which comes back here only to build a
refusal; its state for one request is in the request's context (``ctx.limit*``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import replace as _dc_replace
from typing import TYPE_CHECKING, Annotated, Final, Literal

from annotated_types import Ge

from sidegate.config.snapshot import RedisSpec
from sidegate.filters.base import (
    Answer,
    ConfigPath,
    ConfigValueError,
    Filter,
    FilterConfig,
    FilterServices,
    RequestContext,
    Wait,
)
from sidegate.filters.counters import POLICY
from sidegate.filters.fastpath import LimitPath
from sidegate.filters.identity import OTHER
from sidegate.filters.registry import register
from sidegate.http.messages import LocalResponse, RequestHead, ResponseHead
from sidegate.http.writer import error_response
from sidegate.policy.gcra import Decision, Gcra
from sidegate.ratelimit.local import LocalLimit, LocalLimits
from sidegate.units import parse_duration

if TYPE_CHECKING:
    from sidegate.ratelimit.store import LimitStore, LocalStore

_KEYS: Final = ("ip", "consumer", "tenant", "route")


@dataclass(frozen=True, slots=True)
class LimitConfig:
    requests: Annotated[int, Ge(1)]
    """requests allowed per `per`, on average"""
    per: str = "1s"
    """the window: 500ms, 1s, 1m, 1h, 1d"""
    key: str = "ip"
    """whose requests count together: ip, consumer, tenant, route or header:NAME"""
    burst: Annotated[int, Ge(1)] | None = None
    """requests allowed at once (default: requests)"""
    store: Literal["local", "redis"] = "local"
    """local: shared by the pod's workers; redis: shared by every pod"""
    name: str = ""
    """name in headers and metrics (default: the limit's place in the list)"""


@dataclass(frozen=True, slots=True)
class RateLimitConfig(FilterConfig):
    requests: Annotated[int, Ge(1)] | None = None
    """one limit: requests per `per` (or give `limits`)"""
    per: str = "1s"
    """the window of the one limit"""
    key: str = "ip"
    """the key of the one limit"""
    burst: Annotated[int, Ge(1)] | None = None
    """the burst of the one limit"""
    store: Literal["local", "redis"] = "local"
    """the store of the one limit"""
    limits: tuple[LimitConfig, ...] = ()
    """several limits, all of which must allow a request"""
    on_redis_failure: Literal["local", "open", "closed"] = "local"
    """when Redis cannot answer in time: count locally, allow, or refuse (503)"""
    headers: bool = True
    """add RateLimit-Policy and RateLimit headers to responses"""


def parse_window(text: str) -> float:
    try:
        seconds = parse_duration(text)  # the config's one duration parser
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise ValueError(f"per: {text!r} is not a window; write 500ms, 1s, 1m, 1h or 1d")
    return seconds


@dataclass(frozen=True, slots=True)
class _Limit:
    index: int
    name: str
    gcra: Gcra
    requests: int
    per: float
    burst: int
    key: str
    redis: bool
    policy: bytes  # RateLimit-Policy item
    quota: bool = False  # keyed by tenant: counted per tenant in metrics
    keyer: LocalLimit | None = None  # derives its keys in the table (set when bound to a route)
    route: str = ""
    allowed_key: tuple[str, str, str] = ("", "rate_limit", "allowed")  # metric rows, made once
    limited_key: tuple[str, str, str] = ("", "rate_limit", "limited")


@register
class RateLimit(Filter):
    name = "rate_limit"
    answer_flags = {429: "rate_limited", 503: "rate_limit_unavailable"}
    config_model = RateLimitConfig
    header_alternatives = {
        "consumer": "use key: consumer (after api_key or jwt)",
        "tenant": "use key: tenant (after api_key or jwt)",
        "client": "use key: ip",
        "host": "give each host its own route",
    }

    @classmethod
    def request_headers(cls, config: FilterConfig) -> Iterable[tuple[ConfigPath, str]]:
        assert isinstance(config, RateLimitConfig)
        for path, limit in _placed(config):
            if limit.key.startswith("header:"):
                yield (*path, "key"), limit.key.removeprefix("header:").strip()

    @classmethod
    def caller_needed(cls, config: FilterConfig) -> Iterable[ConfigPath]:
        assert isinstance(config, RateLimitConfig)
        return [(*path, "key") for path, limit in _placed(config) if limit.key in ("consumer", "tenant")]

    def __init__(self, config: RateLimitConfig) -> None:
        super().__init__(config)
        limits = _placed(config)
        if not limits:
            raise ValueError("give requests (and per, key) or a list of limits")
        self.cfg = config
        compiled: list[_Limit] = []
        problems: list[tuple[ConfigPath, str]] = []
        for i, (path, limit) in enumerate(limits):
            try:
                compiled.append(_compile(i, limit, path))
            except ConfigValueError as exc:  # every limit's mistakes, not only the first
                problems += exc.problems
        if problems:
            raise ConfigValueError(*problems[0], *problems[1:])
        self.limits = tuple(compiled)
        self.route = ""
        self.redis_spec = RedisSpec()

    def bind(self, services: FilterServices) -> None:
        self.route = services.route
        self.redis_spec = services.redis
        if any(limit.redis for limit in self.limits) and not services.redis.url:
            raise ValueError("a limit has store: redis but the top-level redis.url is not set")
        prefix = services.route.encode() + b"\x1f"
        self.limits = tuple(
            _replace(limit, prefix=prefix + b"%d\x1f" % limit.index, route=services.route)
            for limit in self.limits
        )
        self.stores: tuple[LimitStore, ...] = ()  # each limit's store, found on first use
        # The compiled side: every limit local -> it decides in one call; in any case it makes
        # the RateLimit fields of a decision (for an allowed response and for a refusal alike).
        self.fast = LimitPath(
            self._local,
            self._refused_at,
            [limit.name for limit in self.limits],
            [limit.policy for limit in self.limits],
            headers=self.cfg.headers,
        )
        self.all_local = not any(limit.redis for limit in self.limits)
        if self.all_local:
            self.delegate("on_request", self.fast.on_request)
        self.delegate("on_response", self.fast.on_response)

    def on_request(self, request: RequestHead, ctx: RequestContext) -> Answer | Wait | None:
        """Every limit local: the compiled :class:`LimitPath` decides (bound to a route, it is
        this hook). With a limit in Redis: in order, parking the request while Redis decides."""
        if self.all_local:
            return self.fast.on_request(request, ctx)
        return self._general(request, ctx)

    def on_response(self, request: RequestHead, response: ResponseHead, ctx: RequestContext) -> None:
        """The tightest limit's RateLimit fields (made by the compiled :class:`LimitPath`)."""
        self.fast.on_response(request, response, ctx)

    def _local(self) -> LocalLimits:
        return LocalLimits(
            _local_store().table,
            [limit.keyer for limit in self.limits if limit.keyer is not None],
            self.route,
            POLICY.decisions,
            POLICY.quotas,
            tallies=POLICY.decision_tallies,
        )

    def _general(self, request: RequestHead, ctx: RequestContext) -> Answer | Wait | None:
        """Limits that include Redis ones, each asked of its store (progress kept in ``ctx``)."""
        stores = self.stores or self._stores()
        now = time.monotonic()
        for limit in self.limits[ctx.limit_next :]:
            keyer = limit.keyer
            assert keyer is not None, "bind() runs at config load"
            key = keyer.key(request.client_ip, ctx.consumer, ctx.tenant, request.headers)
            pending = ctx.limit_pending
            if pending is not None:  # asked again once the store's decision came (or not)
                ctx.limit_pending = None
                decision = pending.decision
            else:
                taken = stores[limit.index].take(key, limit.gcra, now)
                if taken is not None and not isinstance(taken, Decision):
                    ctx.limit_pending = taken
                    return Wait(taken.done, taken.timeout)
                decision = taken
            if decision is None:  # the store could not decide: on_redis_failure says what now
                decision = self._fallback(limit, key, now)
                if decision is None:  # closed
                    POLICY.decisions[(self.route, self.name, "unavailable")] += 1
                    return _unavailable()
            ctx.limit_next = limit.index + 1
            POLICY.decisions[limit.allowed_key if decision.allowed else limit.limited_key] += 1
            if limit.quota:
                result = "allowed" if decision.allowed else "limited"
                POLICY.quotas[(self.route, limit.name, ctx.tenant or OTHER, result)] += 1
            if not decision.allowed:
                return self._refused(limit, decision)
            if self.cfg.headers and (ctx.limit is None or decision.remaining < ctx.limit.remaining):
                ctx.limit = decision
                ctx.limit_index = limit.index
        return None

    def _stores(self) -> tuple[LimitStore, ...]:
        from sidegate.ratelimit.pod import redis_store

        self.stores = tuple(
            redis_store(self.redis_spec) if limit.redis else _local_store() for limit in self.limits
        )
        return self.stores

    def _fallback(self, limit: _Limit, key: bytes, now: float) -> Decision | None:
        mode = self.cfg.on_redis_failure
        POLICY.decisions[(self.route, self.name, "redis_" + mode)] += 1
        if mode == "open":
            return Decision(True, limit.requests, limit.requests, 0.0, 0.0)
        if mode == "closed":
            return None
        return _local_store().take(key, limit.gcra, now)

    def _refused_at(self, index: int, decision: Decision) -> LocalResponse:
        return self._refused(self.limits[index], decision)

    def _refused(self, limit: _Limit, decision: Decision) -> LocalResponse:
        retry = max(1, math.ceil(decision.retry_after))
        body = error_response(429, "rate_limited", f"limit {limit.name}: retry in {retry} s").body
        fields = self.fast.fields(limit.index, decision) if self.cfg.headers else ()
        return LocalResponse(status=429, body=body, headers=((b"Retry-After", b"%d" % retry), *fields))


# sidegate.ratelimit.pod is imported on first use: it needs asyncio, and `sidegate validate` loads
# every filter without serving (it must not import the runtime).


def _local_store() -> LocalStore:
    from sidegate.ratelimit.pod import local_store

    return local_store()


def _placed(config: RateLimitConfig) -> list[tuple[ConfigPath, LimitConfig]]:
    """The limits of ``config``, each with where it is written (the one limit is at the top)."""
    placed: list[tuple[ConfigPath, LimitConfig]] = [
        (("limits", i), lim) for i, lim in enumerate(config.limits)
    ]
    if config.requests is not None:
        one = LimitConfig(config.requests, config.per, config.key, config.burst, config.store)
        placed.insert(0, ((), one))
    return placed


def _compile(index: int, limit: LimitConfig, path: ConfigPath = ()) -> _Limit:
    try:
        per = parse_window(limit.per)
    except ValueError as exc:
        raise ConfigValueError((*path, "per"), str(exc).removeprefix("per: ")) from None
    key = limit.key
    if key.startswith("header:"):
        if not key.removeprefix("header:").strip():
            raise ConfigValueError((*path, "key"), "key header:NAME needs a header name")
    elif key not in _KEYS:
        msg = f"unknown key {key!r}: use one of ip, consumer, tenant, route, header:NAME"
        raise ConfigValueError((*path, "key"), msg)
    burst = limit.burst or limit.requests
    name = limit.name or str(index)
    window = max(1, round(per))
    policy = b'"%s";q=%d;w=%d' % (name.encode(), limit.requests, window)
    return _Limit(
        index,
        name,
        Gcra(limit.requests, per, burst),
        limit.requests,
        per,
        burst,
        key,
        limit.store == "redis",
        policy,
        quota=key == "tenant",
    )


def _replace(limit: _Limit, *, prefix: bytes, route: str) -> _Limit:
    """The limit as bound to ``route``: its key prefix and metric rows ready."""
    return _dc_replace(
        limit,
        keyer=LocalLimit(prefix, limit.key, limit.gcra, quota_name=limit.name if limit.quota else ""),
        route=route,
        allowed_key=(route, "rate_limit", "allowed"),
        limited_key=(route, "rate_limit", "limited"),
    )


def _unavailable() -> LocalResponse:
    detail = "the shared rate limit store did not answer in time"
    body = error_response(503, "rate_limit_unavailable", detail).body
    return LocalResponse(status=503, body=body, headers=((b"Retry-After", b"1"),))

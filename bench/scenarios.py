"""The table of benchmark scenarios, and how to bring up the path each one measures.

A scenario is a named path from wrk to the origin: straight to it, through nginx, or through Sidegate with
some config. A new case (an authenticated route, say) is one more row: a Sidegate config file under
bench/configs/, the request path and headers wrk sends, and what the origin's answer must be.

The cache-hit case is three rows run only on request (`--cache`, or by name with `--only`): the origin's
cacheable path directly, through nginx's `proxy_cache` and through Sidegate's cache filter, the last two
compared with each other and with the first rather than with the plain `nginx` and `direct` rows.

The authenticated case (`--auth`) is two Sidegate rows whose route checks a bearer token and a rate limit,
kept locally or in a redis-server the harness starts for the row; both are compared with the plain
`sidegate` row as well (their `baseline`): the difference is what the checks cost.

The egress row (issue 16) is Sidegate's other face: wrk sends absolute-form requests
(`GET http://127.0.0.1:<origin>/ HTTP/1.1`, set by a wrk Lua script) to the egress listener, which
decides, checks and forwards them to the same origin; it is compared with the inbound `sidegate`
row (its `baseline`). The CONNECT tunnel's bulk throughput is not a wrk row: see bench/bulk.py.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from http.client import HTTPMessage
from pathlib import Path
from typing import Literal

from auth import Credentials
from gateway import start_sidegate
from nginx import CACHEABLE_PATH, ORIGIN_BODY, cache_proxy_conf, proxy_conf, start_nginx
from procs import BenchError, Proc, ProcessGroup, free_port, http_get_full, wait_ready
from redis_server import script_calls, start_redis
from report import Compare

CONFIGS = Path(__file__).resolve().parent / "configs"
FLOOR = Path(__file__).resolve().parent / "floor.py"
# A cache may store a response just after answering it: the preflight looks for a HIT on this many
# requests after the first, CACHE_HIT_PAUSE apart, before it calls the cache broken.
CACHE_HIT_ATTEMPTS = 5
CACHE_HIT_PAUSE = 0.1
PLAIN_REFS = Compare()  # against the `nginx` and `direct` rows
# A Redis-backed limit: requests the preflight tries, REDIS_PAUSE apart, until Redis has decided one.
REDIS_ATTEMPTS = 10
REDIS_PAUSE = 0.2


@dataclass(frozen=True)
class Scenario:
    name: str
    proxy: Literal["none", "nginx", "nginx-cache", "sidegate", "floor"]
    description: str
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    sidegate_config: Path | None = None  # None: the minimal one-route config (or --config)
    expect_status: int = 200
    expect_body: bytes | None = ORIGIN_BODY
    # A cache in the path: after the first request, the preflight wants this header to say HIT (so a
    # cache that never hits, and so measures the origin behind it, cannot pass for a fast cache).
    expect_cache_hit_header: str | None = None
    compare: Compare = PLAIN_REFS  # the rows its `vs nginx` / `vs direct` ratios are taken against
    default: bool = True  # run without --only
    # An authenticated route: wrk and the preflight send the run's bearer token (bench/auth.py), and the
    # preflight also wants a request without it refused with 401 (a gateway that does not check tokens
    # must not look fast).
    bearer_token: bool = False
    # Headers the preflight's answer must carry (RateLimit-Policy: the rate limit is in the path).
    expect_headers: tuple[str, ...] = ()
    # A redis-server of its own, started with the scenario (pinned to the load CPU) and stopped with it;
    # its URL goes into the config's `redis.url`. The preflight wants its requests decided in Redis.
    redis: bool = False
    # Through the egress listener as an HTTP proxy: wrk sends the path in absolute-form to the origin.
    egress: bool = False


_CACHE_REFS = Compare(nginx="nginx-cache", direct="direct-cacheable")

# The cache-hit case (issue 3), added by `--cache`: every request after the first is answered from the
# proxy's cache. Target: Sidegate's hits at least 2x nginx's hits and 0.8x the direct app, same run.
CACHE_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "direct-cacheable",
        "none",
        f"wrk -> app {CACHEABLE_PATH} (Cache-Control: public, max-age=3600)",
        path=CACHEABLE_PATH,
        compare=_CACHE_REFS,
        default=False,
    ),
    Scenario(
        "nginx-cache",
        "nginx-cache",
        "wrk -> nginx (1 worker, proxy_cache, upstream keepalive), answered from its cache",
        path=CACHEABLE_PATH,
        expect_cache_hit_header="X-Cache",
        compare=_CACHE_REFS,
        default=False,
    ),
    Scenario(
        "sidegate-cache",
        "sidegate",
        "wrk -> Sidegate (1 worker, cache filter), answered from its cache",
        path=CACHEABLE_PATH,
        sidegate_config=CONFIGS / "cache.yaml",
        expect_cache_hit_header="X-Cache",
        compare=Compare("nginx-cache", "direct-cacheable", min_rps_vs_nginx=2.0, min_rps_vs_direct=0.8),
        default=False,
    ),
)

# The authenticated, rate-limited route (issue 4), added by `--auth`: a JWT check (RS256, one token sent
# over and over: the filter's verified-token cache is the steady state) and a limit too high to refuse, so
# what is measured is the cost of checking. Target: jwt + local limit at least 0.75x the plain `sidegate`
# row's throughput, same run; the Redis-backed limit (one round trip per request) is reported only.
AUTH_BASELINE = "sidegate"
AUTH_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "sidegate-auth",
        "sidegate",
        "wrk -> Sidegate (1 worker, jwt RS256 + local rate_limit) -> app",
        sidegate_config=CONFIGS / "auth.yaml",
        bearer_token=True,
        expect_headers=("RateLimit-Policy",),
        compare=Compare(baseline=AUTH_BASELINE, min_rps_vs_baseline=0.75),
        default=False,
    ),
    Scenario(
        "sidegate-auth-redis",
        "sidegate",
        "wrk -> Sidegate (1 worker, jwt RS256 + rate_limit in Redis) -> app; redis-server on the load CPU",
        sidegate_config=CONFIGS / "auth-redis.yaml",
        bearer_token=True,
        expect_headers=("RateLimit-Policy",),
        redis=True,
        compare=Compare(baseline=AUTH_BASELINE),
        default=False,
    ),
)

# What observing costs (issue 5), added by `--observe`: Sidegate with metrics, a JSON access log and
# tracing (unsampled) all off, all on, and on with each one switched off in turn. Target: all on at least
# 0.85x all off, same run.
OBSERVE_BASELINE = "sidegate-observe-off"
_OBSERVE_ROWS = (
    ("off", "metrics, access log, tracing and explain all off"),
    ("on", "metrics + JSON access log to stdout + tracing (unsampled) + explain ring"),
    ("no-metrics", "as `on` without request metrics"),
    ("no-log", "as `on` without the access log"),
    ("no-tracing", "as `on` without tracing"),
)
OBSERVE_SCENARIOS: tuple[Scenario, ...] = tuple(
    Scenario(
        f"sidegate-observe-{suffix}",
        "sidegate",
        f"wrk -> Sidegate (1 worker, {what}) -> app",
        sidegate_config=CONFIGS / f"observe-{suffix}.yaml",
        compare=Compare(baseline=OBSERVE_BASELINE, min_rps_vs_baseline=0.85 if suffix == "on" else None),
        default=False,
    )
    for suffix, what in _OBSERVE_ROWS
)

# The egress target (issue 16): absolute-form requests through the egress listener at least 0.8x the
# inbound proxy path's throughput, same run.
EGRESS_SCENARIO = Scenario(
    "egress",
    "sidegate",
    "wrk -> Sidegate egress listener (1 worker, absolute-form, allow-listed origin) -> app",
    sidegate_config=CONFIGS / "egress.yaml",
    egress=True,
    compare=Compare(baseline=AUTH_BASELINE, min_rps_vs_baseline=0.8),
)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("direct", "none", "wrk -> app"),
    Scenario("nginx", "nginx", "wrk -> nginx (1 worker, upstream keepalive) -> app"),
    Scenario(AUTH_BASELINE, "sidegate", "wrk -> Sidegate (1 worker, one route) -> app"),
    Scenario("floor", "floor", "wrk -> bench/floor.py (bytes copied, no HTTP: Python + uvloop floor) -> app"),
    EGRESS_SCENARIO,
    *CACHE_SCENARIOS,
    *AUTH_SCENARIOS,
    *OBSERVE_SCENARIOS,
)

BY_NAME = {s.name: s for s in SCENARIOS}


@dataclass(frozen=True)
class Target:
    """A scenario brought up: the port wrk hits, the headers it sends, the proxy process (None for
    direct) and what was started for it besides (a redis-server, and the port it listens on)."""

    port: int
    proxy: Proc | None
    headers: tuple[tuple[str, str], ...] = ()
    helpers: tuple[Proc, ...] = ()
    redis_port: int | None = None
    path: str = ""  # the request target sent, when not the scenario's path (absolute-form to egress)
    wrk_script: str | None = None  # a wrk Lua script that sets it


def start_target(
    group: ProcessGroup,
    scenario: Scenario,
    app_port: int,
    cpus: tuple[int, int],
    config: Path | None,
    *,
    credentials: Credentials | None = None,
) -> Target:
    """Start the scenario's proxy (pinned to the proxy CPU, `cpus[1]`; a redis-server of its own to the
    load CPU, `cpus[0]`) in front of the origin and check it with the preflight."""
    load_cpu, cpu = cpus
    headers = scenario.headers
    if scenario.bearer_token:
        if credentials is None:
            raise BenchError(f"{scenario.name}: needs the run's bearer token, and none was made")
        headers += (credentials.header,)
    if scenario.proxy == "none":
        target = Target(app_port, None, headers)
    elif scenario.proxy in ("nginx", "nginx-cache"):
        port = free_port()
        conf = cache_proxy_conf if scenario.proxy == "nginx-cache" else proxy_conf
        proc = start_nginx(group, scenario.name, port, cpu, lambda prefix: conf(prefix, port, app_port))
        target = Target(port, proc, headers)
    elif scenario.proxy == "floor":
        port = free_port()
        argv = [sys.executable, str(FLOOR), "--port", str(port), "--upstream", f"127.0.0.1:{app_port}"]
        proc = group.start(group.unique(scenario.name), argv, cpu)
        wait_ready(proc, port, "/", 15.0)
        target = Target(port, proc, headers)
    else:
        helpers: tuple[Proc, ...] = ()
        redis_port = None
        if scenario.redis:
            redis, redis_port = start_redis(group, "redis", load_cpu)
            helpers = (redis,)
        proc, port = start_sidegate(
            group,
            scenario.name,
            scenario.sidegate_config or config,
            app_port,
            cpu,
            jwks_file=credentials.jwks_file if scenario.bearer_token and credentials else None,
            redis_url=f"redis://127.0.0.1:{redis_port}" if redis_port is not None else None,
            egress=scenario.egress,
        )
        target = Target(port, proc, headers, helpers, redis_port)
        if scenario.egress:
            path = f"http://127.0.0.1:{app_port}{scenario.path}"
            script = group.workdir / f"{group.unique(scenario.name + '-wrk')}.lua"
            script.write_text(f'wrk.path = "{path}"  -- absolute-form: the egress listener is a proxy\n')
            target = replace(target, path=path, wrk_script=str(script))
    preflight(scenario, target)  # on failure the run ends, and its ProcessGroup stops everything
    return target


def stop_target(group: ProcessGroup, target: Target) -> None:
    """Stop the proxy, then what was started for it."""
    for proc in (target.proxy, *target.helpers):
        if proc is not None:
            group.stop(proc)


def preflight(scenario: Scenario, target: Target) -> None:
    """One request through the path before the load: a proxy answering 502 fast must not look fast.

    With a cache in the path, more requests until one is answered from the cache (`X-Cache: HIT`): a
    cache that never hits would measure the origin behind it. On an authenticated route, one request
    without the token, which must be refused with 401. With the limit in Redis, Redis must have run the
    limit's script for the requests that passed.
    """
    calls_before = script_calls(target.redis_port) if target.redis_port is not None else 0
    _checked_get(scenario, target)
    if target.redis_port is not None:
        _check_redis_decided(scenario, target, target.redis_port, calls_before)
    if scenario.bearer_token:
        _check_refused_without_token(scenario, target)
    if scenario.egress:
        _check_egress_policy(scenario, target)
    header = scenario.expect_cache_hit_header
    if header is None:
        return
    seen: list[str | None] = []
    for _ in range(CACHE_HIT_ATTEMPTS):
        value = _checked_get(scenario, target).get(header)
        if value is not None and value.strip().upper() == "HIT":
            return
        seen.append(value)
        time.sleep(CACHE_HIT_PAUSE)
    raise BenchError(
        f"{scenario.name}: GET {scenario.path} was never answered from the cache: {header} was "
        f"{', '.join(map(str, seen))} on the {len(seen)} requests after the first (expected HIT)"
    )


def _check_refused_without_token(scenario: Scenario, target: Target) -> None:
    """The same request without the bearer token must get 401: a gateway that lets it through (or
    answers anything else) is not checking tokens, and its throughput would mean nothing."""
    headers = {n: v for n, v in target.headers if n.lower() != "authorization"}
    try:
        status, _, body = http_get_full(target.port, scenario.path, headers)
    except OSError as exc:
        raise BenchError(f"{scenario.name}: GET {scenario.path} without a token failed: {exc}") from exc
    if status != 401:
        raise BenchError(
            f"{scenario.name}: GET {scenario.path} without a token answered {status} {body[:200]!r}, "
            "expected 401: the route does not check tokens"
        )


def _check_egress_policy(scenario: Scenario, target: Target) -> None:
    """A destination the config does not allow must get egress's 403: then the listener wrk loads is
    the egress one deciding each request (an inbound route would forward anything to the app)."""
    try:
        status, _, body = http_get_full(target.port, "http://127.0.0.1:1/")
    except OSError as exc:
        raise BenchError(f"{scenario.name}: GET http://127.0.0.1:1/ failed: {exc}") from exc
    if status != 403 or b"egress_denied" not in body:
        raise BenchError(
            f"{scenario.name}: GET http://127.0.0.1:1/ answered {status} {body[:200]!r}, expected 403 "
            "egress_denied: the port under load is not the egress listener"
        )


def _check_redis_decided(scenario: Scenario, target: Target, redis_port: int, calls_before: int) -> None:
    """Redis must have run the limit's script for the preflight's request: a limiter that never reaches
    Redis (and decides from its local fallback) would pass for a fast Redis-backed one. The gateway's
    client connects on first use, and after a failure reconnects with a backoff, so a few more tries."""
    for _ in range(REDIS_ATTEMPTS):
        if script_calls(redis_port) > calls_before:
            return
        time.sleep(REDIS_PAUSE)
        _checked_get(scenario, target)
    raise BenchError(
        f"{scenario.name}: Redis ran no rate-limit script for {REDIS_ATTEMPTS + 1} requests "
        f"{REDIS_PAUSE:g} s apart: the limit is not decided in Redis"
    )


def _checked_get(scenario: Scenario, target: Target) -> HTTPMessage:
    """GET the scenario's path; fail unless the status and body are the expected ones. Returns the headers."""
    path = target.path or scenario.path
    try:
        status, headers, body = http_get_full(target.port, path, dict(target.headers))
    except OSError as exc:
        raise BenchError(f"{scenario.name}: GET {path} failed: {exc}") from exc
    if status != scenario.expect_status or (
        scenario.expect_body is not None and body != scenario.expect_body
    ):
        raise BenchError(
            f"{scenario.name}: GET {scenario.path} answered {status} {body[:200]!r}, "
            f"expected {scenario.expect_status} {scenario.expect_body!r}"
        )
    missing = [name for name in scenario.expect_headers if headers.get(name) is None]
    if missing:
        raise BenchError(
            f"{scenario.name}: GET {scenario.path} answered without {', '.join(missing)} "
            f"(headers: {', '.join(headers.keys())}): a filter of the route is not in the path"
        )
    return headers

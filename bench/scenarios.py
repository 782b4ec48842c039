"""The table of benchmark scenarios, and how to bring up the path each one measures.

A scenario is a named path from wrk to the origin: straight to it, through nginx, or through Sidegate with
some config. A new case (an authenticated route, say) is one more row: a Sidegate config file under
bench/configs/, the request path and headers wrk sends, and what the origin's answer must be.

The cache-hit case is three rows run only on request (`--cache`, or by name with `--only`): the origin's
cacheable path directly, through nginx's `proxy_cache` and through Sidegate's cache filter, the last two
compared with each other and with the first rather than with the plain `nginx` and `direct` rows.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import Literal

from gateway import start_sidegate
from nginx import CACHEABLE_PATH, ORIGIN_BODY, cache_proxy_conf, proxy_conf, start_nginx
from procs import BenchError, Proc, ProcessGroup, free_port, http_get_full, wait_ready
from report import Compare

CONFIGS = Path(__file__).resolve().parent / "configs"
FLOOR = Path(__file__).resolve().parent / "floor.py"
# A cache may store a response just after answering it: the preflight looks for a HIT on this many
# requests after the first, CACHE_HIT_PAUSE apart, before it calls the cache broken.
CACHE_HIT_ATTEMPTS = 5
CACHE_HIT_PAUSE = 0.1
PLAIN_REFS = Compare()  # against the `nginx` and `direct` rows


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

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("direct", "none", "wrk -> app"),
    Scenario("nginx", "nginx", "wrk -> nginx (1 worker, upstream keepalive) -> app"),
    Scenario("sidegate", "sidegate", "wrk -> Sidegate (1 worker, one route) -> app"),
    Scenario("floor", "floor", "wrk -> bench/floor.py (bytes copied, no HTTP: Python + uvloop floor) -> app"),
    *CACHE_SCENARIOS,
)

BY_NAME = {s.name: s for s in SCENARIOS}


@dataclass(frozen=True)
class Target:
    """A scenario brought up: the port wrk hits and the proxy process (None for direct)."""

    port: int
    proxy: Proc | None


def start_target(
    group: ProcessGroup, scenario: Scenario, app_port: int, cpu: int | None, config: Path | None
) -> Target:
    """Start the scenario's proxy (pinned to `cpu`) in front of the origin and check one request."""
    if scenario.proxy == "none":
        target = Target(app_port, None)
    elif scenario.proxy in ("nginx", "nginx-cache"):
        port = free_port()
        conf = cache_proxy_conf if scenario.proxy == "nginx-cache" else proxy_conf
        proc = start_nginx(group, scenario.name, port, cpu, lambda prefix: conf(prefix, port, app_port))
        target = Target(port, proc)
    elif scenario.proxy == "floor":
        port = free_port()
        argv = [sys.executable, str(FLOOR), "--port", str(port), "--upstream", f"127.0.0.1:{app_port}"]
        proc = group.start(group.unique(scenario.name), argv, cpu)
        wait_ready(proc, port, "/", 15.0)
        target = Target(port, proc)
    else:
        proc, port = start_sidegate(group, scenario.name, scenario.sidegate_config or config, app_port, cpu)
        target = Target(port, proc)
    preflight(scenario, target)
    return target


def preflight(scenario: Scenario, target: Target) -> None:
    """One request through the path before the load: a proxy answering 502 fast must not look fast.

    With a cache in the path, more requests until one is answered from the cache (`X-Cache: HIT`): a
    cache that never hits would measure the origin behind it.
    """
    _checked_get(scenario, target)
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


def _checked_get(scenario: Scenario, target: Target) -> HTTPMessage:
    """GET the scenario's path; fail unless the status and body are the expected ones. Returns the headers."""
    try:
        status, headers, body = http_get_full(target.port, scenario.path, dict(scenario.headers))
    except OSError as exc:
        raise BenchError(f"{scenario.name}: GET {scenario.path} failed: {exc}") from exc
    if status != scenario.expect_status or (
        scenario.expect_body is not None and body != scenario.expect_body
    ):
        raise BenchError(
            f"{scenario.name}: GET {scenario.path} answered {status} {body[:200]!r}, "
            f"expected {scenario.expect_status} {scenario.expect_body!r}"
        )
    return headers

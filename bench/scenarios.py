"""The table of benchmark scenarios, and how to bring up the path each one measures.

A scenario is a named path from wrk to the origin: straight to it, through nginx, or through Sidegate with
some config. A new case (a cache hit, an authenticated route) is one more row: a Sidegate config file
under bench/configs/, the request path and headers wrk sends, and what the origin's answer must be.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway import start_sidegate
from nginx import ORIGIN_BODY, proxy_conf, start_nginx
from procs import BenchError, Proc, ProcessGroup, free_port, http_get, wait_ready

CONFIGS = Path(__file__).resolve().parent / "configs"
FLOOR = Path(__file__).resolve().parent / "floor.py"


@dataclass(frozen=True)
class Scenario:
    name: str
    proxy: Literal["none", "nginx", "sidegate", "floor"]
    description: str
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    sidegate_config: Path | None = None  # None: the minimal one-route config (or --config)
    expect_status: int = 200
    expect_body: bytes | None = ORIGIN_BODY
    default: bool = True  # run without --only


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("direct", "none", "wrk -> app"),
    Scenario("nginx", "nginx", "wrk -> nginx (1 worker, upstream keepalive) -> app"),
    Scenario("sidegate", "sidegate", "wrk -> Sidegate (1 worker, one route) -> app"),
    Scenario("floor", "floor", "wrk -> bench/floor.py (bytes copied, no HTTP: Python + uvloop floor) -> app"),
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
    elif scenario.proxy == "nginx":
        port = free_port()
        proc = start_nginx(group, scenario.name, port, cpu, lambda prefix: proxy_conf(prefix, port, app_port))
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
    """One request through the path before the load: a proxy answering 502 fast must not look fast."""
    try:
        status, body = http_get(target.port, scenario.path, dict(scenario.headers))
    except OSError as exc:
        raise BenchError(f"{scenario.name}: GET {scenario.path} failed: {exc}") from exc
    if status != scenario.expect_status or (
        scenario.expect_body is not None and body != scenario.expect_body
    ):
        raise BenchError(
            f"{scenario.name}: GET {scenario.path} answered {status} {body[:200]!r}, "
            f"expected {scenario.expect_status} {scenario.expect_body!r}"
        )

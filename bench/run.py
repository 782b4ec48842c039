"""End-to-end benchmark: the app directly, through nginx and through Sidegate, in one run.

    .venv/bin/python bench/run.py [--duration 5] [--repeat 1] [--only direct,nginx,sidegate]
                                  [--cache] [--auth] [--observe] [--config EXTRA.yaml]

Layout (2 CPUs): the origin ("the app", nginx returning a 13-byte body) and wrk share CPU 0; the proxy
under test (nginx or Sidegate, one worker each) has CPU 1 to itself. For each scenario: start the proxy,
check one request, read its idle RSS, warm up 1 s, measure requests/s at 64 connections, then p50/p99
at 1 connection, then its RSS after the load; stop it. Repeats are interleaved (direct, nginx, sidegate,
direct, ...) and summarized by their median. The Markdown table is printed and the full record saved to
bench/results/. Only 127.0.0.1 is used; every process started is stopped on exit, error or Ctrl-C.

--cache adds the cache-hit case (`make bench-cache`): the origin's cacheable path directly
(direct-cacheable), through nginx's proxy_cache (nginx-cache) and through Sidegate's cache filter
(sidegate-cache), the last compared with the first two.

--auth adds the authenticated, rate-limited route (`make bench-auth`): Sidegate checking an RS256 bearer
token and a rate limit kept locally (sidegate-auth) or in a redis-server of the harness's own
(sidegate-auth-redis), both compared with the plain sidegate row (added if --only left it out). The run
makes its own RSA key, JWKS file and token (bench/auth.py).

The `egress` row sends absolute-form requests through Sidegate's egress listener (bench/configs/egress.yaml)
and compares them with the inbound `sidegate` row. `connect-bulk` (bench/bulk.py) is not a wrk row: bulk
MB/s through a CONNECT tunnel against a direct TCP copy, a table of its own under the main one. Both run
by default; with --only, name them.

--observe adds what observing costs (`make bench-observe`): Sidegate with metrics, the JSON access log
and tracing (unsampled) all off (sidegate-observe-off), all on (sidegate-observe-on), and on with each
switched off in turn, every row compared with the first.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

from auth import Credentials, make_credentials
from bulk import BulkResult, measure_bulk, start_origin
from gateway import start_sidegate
from nginx import nginx_version, origin_conf, start_nginx
from procs import BenchError, ProcessGroup, bench_cpus, free_port
from redis_server import redis_binary, script_calls
from report import Measurement, findings, markdown_table, save_json, summarize
from scenarios import (
    AUTH_BASELINE,
    AUTH_SCENARIOS,
    BY_NAME,
    CACHE_SCENARIOS,
    CONFIGS,
    OBSERVE_SCENARIOS,
    SCENARIOS,
    Scenario,
    start_target,
    stop_target,
)
from wrk import run_wrk, wrk_version

HERE = Path(__file__).resolve().parent
WARMUP_SECONDS = 1
LOAD_CONNECTIONS = 64
START_SECONDS = 20  # allowance per scenario for start, preflight and stop when bounding a run's length
BULK = "connect-bulk"  # not a wrk scenario: bench/bulk.py
BULK_REPEAT = 5  # direct and tunnelled transfers each; the medians are compared
BULK_MIB_PER_SECOND = 256  # each transfer's size: this many MiB per second of --duration


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk measurement (default 5)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; the median is reported")
    names = ",".join([*(s.name for s in SCENARIOS), BULK])
    parser.add_argument("--only", help=f"comma-separated scenarios to run (known: {names})")
    cache_names = ", ".join(s.name for s in CACHE_SCENARIOS)
    parser.add_argument(
        "--cache",
        action="store_true",
        help=f"also run the cache-hit scenarios ({cache_names}) after the default ones (or the --only ones)",
    )
    auth_names = ", ".join(s.name for s in AUTH_SCENARIOS)
    parser.add_argument(
        "--auth",
        action="store_true",
        help=f"also run the authenticated, rate-limited scenarios ({auth_names}) after the default ones "
        f"(or the --only ones, with {AUTH_BASELINE} added if missing: they are compared with it)",
    )
    parser.add_argument(
        "--observe",
        action="store_true",
        help="also run the observability scenarios (sidegate-observe-*: metrics, access log and tracing "
        "all off, all on, and each switched off in turn), compared with sidegate-observe-off",
    )
    parser.add_argument("--config", type=Path, help="Sidegate config for the `sidegate` scenario")
    parser.add_argument(
        "--latency-layout",
        choices=["split", "shared"],
        default="split",
        help="1-connection latency with the proxy on its own CPU (split, default) or moved onto the "
        "load CPU with wrk and the origin (shared: no cross-CPU wake-ups, so per-request work shows)",
    )
    parser.add_argument("--results", type=Path, default=HERE / "results", help="where the JSON goes")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 600 or not 1 <= args.repeat <= 20:
        parser.error("--duration must be 1..600 and --repeat 1..20")
    if args.config is not None and not args.config.is_file():
        parser.error(f"--config {args.config}: no such file")
    return args


def select(
    only: str | None, cache: bool = False, auth: bool = False, observe: bool = False
) -> list[Scenario]:
    if not only:
        chosen = [s for s in SCENARIOS if s.default]
    else:
        names = [n.strip() for n in only.split(",") if n.strip() and n.strip() != BULK]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            raise BenchError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
        chosen = [BY_NAME[n] for n in names]
    if cache:
        chosen += [s for s in CACHE_SCENARIOS if s not in chosen]
    if auth:
        if BY_NAME[AUTH_BASELINE] not in chosen:
            chosen.append(BY_NAME[AUTH_BASELINE])
        chosen += [s for s in AUTH_SCENARIOS if s not in chosen]
    if observe:
        chosen += [s for s in OBSERVE_SCENARIOS if s not in chosen]
    for s in list(chosen):  # a row compared with a baseline brings it (egress: the inbound sidegate row)
        base = s.compare.baseline
        if base is not None and BY_NAME[base] not in chosen:
            chosen.insert(0, BY_NAME[base])
    return chosen


def bulk_selected(only: str | None) -> bool:
    return not only or BULK in [n.strip() for n in only.split(",")]


def run_bulk(group: ProcessGroup, cpus: tuple[int, int], duration: int) -> BulkResult:
    """The connect-bulk row: its own origin, Sidegate with an egress listener allowing it, the transfers."""
    load_cpu, proxy_cpu = cpus
    origin_port = start_origin(group, load_cpu)
    proc, egress_port = start_sidegate(
        group, BULK, CONFIGS / "egress.yaml", origin_port, proxy_cpu, egress=True
    )
    try:
        size = BULK_MIB_PER_SECOND * 1024 * 1024 * duration
        return measure_bulk(origin_port, egress_port, load_cpu, size, BULK_REPEAT)
    finally:
        group.stop(proc)


def measure(
    group: ProcessGroup,
    scenario: Scenario,
    app_port: int,
    cpus: tuple[int, int],
    args: argparse.Namespace,
    *,
    credentials: Credentials | None = None,
) -> Measurement:
    load_cpu, _ = cpus
    target = start_target(group, scenario, app_port, cpus, args.config, credentials=credentials)
    redis_calls = None
    try:
        time.sleep(0.2)  # let start-up work settle before reading the idle footprint
        rss_idle = target.proxy.rss_bytes() if target.proxy else None
        url = f"http://127.0.0.1:{target.port}{scenario.path}"
        headers = target.headers
        script = target.wrk_script
        run_wrk(url, LOAD_CONNECTIONS, WARMUP_SECONDS, load_cpu, headers=headers, script=script)
        before = script_calls(target.redis_port) if target.redis_port is not None else 0
        throughput = run_wrk(url, LOAD_CONNECTIONS, args.duration, load_cpu, headers=headers, script=script)
        if target.redis_port is not None:
            redis_calls = script_calls(target.redis_port) - before
        if target.proxy and args.latency_layout == "shared":
            target.proxy.pin(load_cpu)
        latency = run_wrk(url, 1, args.duration, load_cpu, headers=headers, script=script)
        rss_loaded = target.proxy.rss_bytes() if target.proxy else None
    finally:
        stop_target(group, target)
    return Measurement(scenario.name, throughput, latency, rss_idle, rss_loaded, redis_calls)


def meta(args: argparse.Namespace, cpus: tuple[int, int], scenarios: list[Scenario]) -> dict[str, Any]:
    git = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": git.stdout.strip() or None,
        "cpu": cpu_model,
        "cpus_online": os.cpu_count(),
        "load_cpu": cpus[0],
        "proxy_cpu": cpus[1],
        "python": platform.python_version(),
        "nginx": nginx_version(),
        "wrk": wrk_version(),
        "duration_s": args.duration,
        "warmup_s": WARMUP_SECONDS,
        "load_connections": LOAD_CONNECTIONS,
        "repeat": args.repeat,
        "latency_layout": args.latency_layout,
        "sidegate_config": str(args.config) if args.config else "minimal (generated)",
        "scenarios": {s.name: s.description for s in scenarios},
    }


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the `with` blocks, which stop every process


def run(args: argparse.Namespace) -> int:
    if shutil.which("taskset") is None:
        raise BenchError("taskset not found (Debian package util-linux)")
    scenarios = select(args.only, args.cache, args.auth, args.observe)
    bulk: BulkResult | None = None
    if any(s.redis for s in scenarios):
        redis_binary()  # missing: fail now, with the install hint, rather than after the other rows
    cpus = bench_cpus()
    if cpus[0] == cpus[1]:
        print("note: only one CPU available; load, origin and proxy share it", file=sys.stderr)
    info = meta(args, cpus, scenarios)
    runs: dict[str, list[Measurement]] = {s.name: [] for s in scenarios}
    with tempfile.TemporaryDirectory(prefix="sidegate-bench-") as tmp, ProcessGroup(Path(tmp)) as group:
        Path(tmp).chmod(0o755)  # nginx workers run as `nobody` when the harness runs as root
        app_port = free_port()
        start_nginx(group, "origin", app_port, cpus[0], lambda prefix: origin_conf(prefix, app_port))
        credentials = None
        if any(s.bearer_token for s in scenarios):
            # Valid for an hour, or longer if the run may last longer: an expired token would turn into 401s.
            per_scenario = WARMUP_SECONDS + 2 * args.duration + START_SECONDS
            credentials = make_credentials(Path(tmp), args.repeat * len(scenarios) * per_scenario)
        for i in range(args.repeat):
            for s in scenarios:
                print(f"[{i + 1}/{args.repeat}] {s.name}: {s.description}", file=sys.stderr, flush=True)
                m = measure(group, s, app_port, cpus, args, credentials=credentials)
                runs[s.name].append(m)
                print(
                    f"    {m.throughput.rps:,.0f} req/s, p50 {m.latency.percentiles_us.get('50', 0):.0f} µs",
                    file=sys.stderr,
                    flush=True,
                )
        if bulk_selected(args.only):
            print(f"{BULK}: CONNECT tunnel vs direct TCP copy (bench/bulk.py)", file=sys.stderr, flush=True)
            bulk = run_bulk(group, cpus, args.duration)
            print(f"    {bulk.tunnel_median:,.0f} MB/s tunnelled, {bulk.direct_median:,.0f} MB/s direct",
                  file=sys.stderr, flush=True)  # fmt: skip
    rows = summarize(runs, {s.name: s.description for s in scenarios}, {s.name: s.compare for s in scenarios})
    print()
    print(markdown_table(rows))
    print()
    for line in findings(rows):
        print(line)
    if bulk is not None:
        print()
        print(bulk.table())
        print()
        print(bulk.finding())
    out = args.results / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    save_json(out, info, rows, runs, bulk=asdict(bulk) if bulk is not None else None)
    print(f"\nsaved {out}")
    return 1 if any(r.errors for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Also when started in the background, where a shell may have set SIGINT to "ignore".
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; all processes stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Start Sidegate for a benchmark: write its config into the work dir, run `sidegate run`, wait for /ready.

With no config file the harness writes the minimal one-route config. A given file (`--config`, or a
scenario's own) is used as written except that the harness owns the addresses: `listeners.inbound` and
`listeners.admin` move to free loopback ports (`listeners.health` to any free one), every upstream's
`endpoints` become the bench origin, `workers` defaults to 1, and a top-level `cache` section (the cache
filter's store) gets a `dir` of its own, created empty in the run's work dir for each start, so every run
begins with a cold cache. Likewise for the authenticated scenarios: every route's `jwt` filter gets the
run's JWKS file as `jwks_file` (bench/auth.py made the key), and a top-level `redis` section gets the
`url` of the redis-server the harness started. A config with an `egress` section gets
`listeners.egress` on a free loopback port, and every destination's `ports` become the origin's.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from procs import BenchError, Proc, ProcessGroup, free_port, wait_ready

READY_TIMEOUT = 15.0


def minimal_config() -> dict[str, Any]:
    return {
        "listeners": {"inbound": {"address": ""}, "admin": {"address": ""}},
        "workers": 1,
        "upstreams": {"app": {"endpoints": [""]}},
        "routes": [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"}],
    }


def bench_config(
    source: Path | None,
    port: int,
    admin_port: int,
    app_port: int,
    cache_dir: Path | None = None,
    *,
    jwks_file: Path | None = None,
    redis_url: str | None = None,
    egress_port: int | None = None,
) -> dict[str, Any]:
    """The config to run: `source` (or the minimal config) with the harness's addresses filled in,
    `cache.dir` set to `cache_dir` when the config has a `cache` section, each route's `jwt` filter
    pointed at `jwks_file` and `redis.url` set to `redis_url` when the config has a `redis` section."""
    if source is None:
        doc = minimal_config()
    else:
        try:
            loaded = yaml.safe_load(source.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise BenchError(f"cannot read Sidegate config {source}: {exc}") from exc
        if not isinstance(loaded, dict) or not isinstance(loaded.get("upstreams"), dict):
            raise BenchError(f"{source}: expected a Sidegate config mapping with `upstreams`")
        doc = loaded
    listeners = doc.setdefault("listeners", {})
    listeners.setdefault("inbound", {})["address"] = f"127.0.0.1:{port}"
    listeners.setdefault("admin", {})["address"] = f"127.0.0.1:{admin_port}"
    listeners.setdefault("health", {})["address"] = "127.0.0.1:0"  # never the shared default 9902
    for upstream in doc["upstreams"].values():
        upstream["endpoints"] = [f"127.0.0.1:{app_port}"]
    doc.setdefault("workers", 1)
    cache = doc.get("cache")
    if cache is not None:
        if not isinstance(cache, dict):
            raise BenchError(f"{source}: `cache` must be a mapping (its `dir` is set by the harness)")
        if cache_dir is None:
            raise BenchError(f"{source}: has a `cache` section but the harness gave it no directory")
        cache["dir"] = str(cache_dir)
    for route in doc.get("routes") or []:
        jwt = (route.get("filters") or {}).get("jwt") if isinstance(route, dict) else None
        if jwt is None:
            continue
        if not isinstance(jwt, dict):
            raise BenchError(f"{source}: a `jwt` filter must be a mapping (the harness sets its `jwks_file`)")
        if jwks_file is None:
            raise BenchError(
                f"{source}: has a `jwt` filter but the harness made no key for it "
                "(only scenarios that send the run's bearer token get one, e.g. sidegate-auth)"
            )
        jwt.pop("jwks_url", None)
        jwt["jwks_file"] = str(jwks_file)
    redis = doc.get("redis")
    if redis is not None:
        if not isinstance(redis, dict):
            raise BenchError(f"{source}: `redis` must be a mapping (its `url` is set by the harness)")
        if redis_url is None:
            raise BenchError(
                f"{source}: has a `redis` section but the harness started no Redis for it "
                "(only scenarios with their own redis-server get one, e.g. sidegate-auth-redis)"
            )
        redis["url"] = redis_url
    egress = doc.get("egress")
    if egress is not None:
        if not isinstance(egress, dict) or egress_port is None:
            raise BenchError(f"{source}: `egress` must be a mapping, and the harness gives it its port")
        listeners["egress"] = {"address": f"127.0.0.1:{egress_port}"}
        for destination in egress.get("destinations") or []:
            destination["ports"] = [app_port]
    return doc


def sidegate_binary() -> str:
    beside = Path(sys.executable).parent / "sidegate"
    found = str(beside) if beside.exists() else shutil.which("sidegate")
    if found is None:
        raise BenchError("the `sidegate` command is not installed: run `make install` (pip install -e .)")
    return found


def start_sidegate(
    group: ProcessGroup,
    name: str,
    source: Path | None,
    app_port: int,
    cpu: int | None,
    *,
    jwks_file: Path | None = None,
    redis_url: str | None = None,
    egress: bool = False,
) -> tuple[Proc, int]:
    """Start Sidegate in front of 127.0.0.1:app_port; returns the process and its inbound port (its
    egress listener's with `egress`). `jwks_file` and `redis_url` go into the config's `jwt` filters
    and `redis` section (see bench_config)."""
    name = group.unique(name)
    port, admin_port, egress_port = free_port(), free_port(), free_port()
    config_path = group.workdir / f"{name}.yaml"
    # Keep the shared cache out of /var/cache: everything the run writes stays in its work dir. One empty
    # directory per start, named both by `CACHE_DIR` and by `cache.dir` when the config has a cache.
    cache_dir = group.workdir / f"{name}-cache"
    cache_dir.mkdir()
    doc = bench_config(
        source,
        port,
        admin_port,
        app_port,
        cache_dir,
        jwks_file=jwks_file,
        redis_url=redis_url,
        egress_port=egress_port,
    )
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    argv = [sidegate_binary(), "run", "--config", str(config_path)]
    env = {"CACHE_DIR": str(cache_dir)}
    proc = group.start(name, argv, cpu, env)
    wait_ready(proc, admin_port, "/ready", READY_TIMEOUT)
    if egress:
        if "egress" not in doc:
            raise BenchError(f"{name}: measures the egress listener, but its config has no `egress` section")
        return proc, egress_port
    return proc, port

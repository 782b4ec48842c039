"""Start Sidegate for a benchmark: write its config into the work dir, run `sidegate run`, wait for /ready.

With no config file the harness writes the minimal one-route config. A given file (`--config`, or a
scenario's own) is used as written except that the harness owns the addresses: `listeners.inbound` and
`listeners.admin` move to free loopback ports, every upstream's `endpoints` become the bench origin,
`workers` defaults to 1, and a top-level `cache` section (the cache filter's store) gets a `dir` of its
own, created empty in the run's work dir for each start, so every run begins with a cold cache.
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
    source: Path | None, port: int, admin_port: int, app_port: int, cache_dir: Path | None = None
) -> dict[str, Any]:
    """The config to run: `source` (or the minimal config) with the harness's addresses filled in, and
    `cache.dir` set to `cache_dir` when the config has a `cache` section."""
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
    return doc


def sidegate_binary() -> str:
    beside = Path(sys.executable).parent / "sidegate"
    found = str(beside) if beside.exists() else shutil.which("sidegate")
    if found is None:
        raise BenchError("the `sidegate` command is not installed: run `make install` (pip install -e .)")
    return found


def start_sidegate(
    group: ProcessGroup, name: str, source: Path | None, app_port: int, cpu: int | None
) -> tuple[Proc, int]:
    """Start Sidegate in front of 127.0.0.1:app_port; returns the process and its inbound port."""
    name = group.unique(name)
    port, admin_port = free_port(), free_port()
    config_path = group.workdir / f"{name}.yaml"
    # Keep the shared cache out of /var/cache: everything the run writes stays in its work dir. One empty
    # directory per start, named both by `CACHE_DIR` and by `cache.dir` when the config has a cache.
    cache_dir = group.workdir / f"{name}-cache"
    cache_dir.mkdir()
    doc = bench_config(source, port, admin_port, app_port, cache_dir)
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    argv = [sidegate_binary(), "run", "--config", str(config_path)]
    env = {"CACHE_DIR": str(cache_dir)}
    proc = group.start(name, argv, cpu, env)
    wait_ready(proc, admin_port, "/ready", READY_TIMEOUT)
    return proc, port

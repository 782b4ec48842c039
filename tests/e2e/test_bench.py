"""`make bench` keeps working: one short run of the real harness (wrk, nginx, Sidegate).

The figures of a one-second run on a shared CI machine mean little, so this asserts only what a
user of the benchmark relies on: every path answered with the origin's body and no errors, and the
report carries the ratios against nginx and the direct path. The cache-hit case (`make bench-cache`)
likewise: its rows ran (their preflight saw `X-Cache: HIT`) and compare with nginx-cache and
direct-cacheable. And the authenticated case (`make bench-auth`): its rows ran (their preflight saw a
200 with the token, a 401 without it and, for the Redis row, the limit decided in Redis), compare with
plain sidegate, and the Redis row's requests under load were decided in Redis. The egress rows
(issue 16): `egress` ran through the egress listener (its preflight saw the origin's body for an
absolute-form request and a 403 egress_denied for a port the policy does not allow) and compares with
the inbound sidegate row; `connect-bulk` moved bytes both ways round and reports its ratio.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run_bench(tmp_path: Path, *args: str, timeout: float = 170) -> tuple[str, dict[str, dict[str, Any]]]:
    """Run bench/run.py for one second per measurement; its stdout and its JSON summary by scenario
    (the connect-bulk record, when it ran, as ``summary["connect-bulk"]``)."""
    missing = [
        tool
        for tool in ("wrk", "nginx")
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    assert not missing, f"{missing} not installed: run `make test` (it installs them) or `make bench`"
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--duration", "1", "--results", str(tmp_path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (report,) = tmp_path.glob("*.json")
    record = json.loads(report.read_text())
    summary = {row["scenario"]: row for row in record["summary"]}
    if "bulk" in record:
        summary["connect-bulk"] = record["bulk"]
    return done.stdout, summary


@pytest.mark.timeout(180)
def test_benchmark_runs_and_reports_ratios(tmp_path: Path) -> None:
    stdout, summary = _run_bench(tmp_path)
    assert "| sidegate |" in stdout, stdout
    bulk = summary.pop("connect-bulk")
    assert set(summary) == {"direct", "nginx", "sidegate", "floor", "egress"}
    for row in summary.values():
        assert row["rps"] > 0 and row["errors"] == 0, row
    egress = summary["egress"]
    assert egress["baseline_ref"] == "sidegate" and egress["rps_vs_baseline"] > 0, egress
    assert "egress target: throughput >= 0.80x sidegate's" in stdout, stdout
    assert bulk["direct_median"] > 0 and bulk["tunnel_median"] > 0 and bulk["ratio"] > 0, bulk
    assert "connect-bulk target: tunnel throughput >= 0.80x the direct copy's" in stdout, stdout
    sidegate = summary["sidegate"]
    assert sidegate["rps_vs_nginx"] > 0 and 0 < sidegate["rps_vs_direct"] <= 1.5, sidegate
    assert 0 < sidegate["rss_idle"] < 64 * 1024 * 1024, sidegate


@pytest.mark.timeout(90)
def test_cache_hit_case_against_nginx_proxy_cache(tmp_path: Path) -> None:
    stdout, summary = _run_bench(tmp_path, "--only", "direct-cacheable,nginx-cache", timeout=80)
    assert set(summary) == {"direct-cacheable", "nginx-cache"}
    for row in summary.values():
        assert row["rps"] > 0 and row["errors"] == 0, row
        assert (row["nginx_ref"], row["direct_ref"]) == ("nginx-cache", "direct-cacheable"), row
    assert summary["nginx-cache"]["rps_vs_direct"] > 0, summary
    assert "`vs nginx` is against nginx-cache, `vs direct` against direct-cacheable" in stdout, stdout


@pytest.mark.timeout(120)
def test_cache_hit_case_against_sidegate_cache(tmp_path: Path) -> None:
    from sidegate.filters.registry import known_names

    if "cache" not in known_names():
        pytest.skip("the Sidegate cache filter (`filters: {cache: {}}`) is not registered yet")
    only = "direct-cacheable,nginx-cache,sidegate-cache"
    stdout, summary = _run_bench(tmp_path, "--only", only, timeout=110)
    assert set(summary) == set(only.split(","))
    sidegate = summary["sidegate-cache"]
    assert sidegate["rps"] > 0 and sidegate["errors"] == 0, sidegate
    assert sidegate["rps_vs_nginx"] > 0 and sidegate["rps_vs_direct"] > 0, sidegate
    target = "sidegate-cache target: throughput >= 2.00x nginx-cache's and >= 0.80x direct-cacheable's"
    assert target in stdout, stdout


@pytest.mark.timeout(150)
def test_authenticated_rate_limited_case(tmp_path: Path) -> None:
    from sidegate.filters.registry import known_names

    missing = [name for name in ("jwt", "rate_limit") if name not in known_names()]
    if missing:
        pytest.skip(f"Sidegate filter(s) {', '.join(missing)} of bench/configs/auth.yaml not registered yet")
    assert shutil.which("redis-server") or Path("/usr/bin/redis-server").exists(), (
        "redis-server not installed: run `scripts/install-system-deps.sh redis-server` as root"
    )
    stdout, summary = _run_bench(tmp_path, "--only", "sidegate", "--auth", timeout=140)
    assert set(summary) == {"sidegate", "sidegate-auth", "sidegate-auth-redis"}
    for row in summary.values():
        assert row["rps"] > 0 and row["errors"] == 0, row
    for name in ("sidegate-auth", "sidegate-auth-redis"):
        row = summary[name]
        assert row["baseline_ref"] == "sidegate" and row["rps_vs_baseline"] > 0, row
        assert (row["nginx_ref"], row["direct_ref"]) == ("nginx", "direct"), row
    assert summary["sidegate-auth-redis"]["redis_share"] >= 0.99, summary["sidegate-auth-redis"]
    assert "sidegate-auth target: throughput >= 0.75x sidegate's" in stdout, stdout
    assert "| vs baseline |" in stdout, stdout

"""`make bench` keeps working: one short run of the real harness (wrk, nginx, Sidegate).

The figures of a one-second run on a shared CI machine mean little, so this asserts only what a
user of the benchmark relies on: every path answered with the origin's body and no errors, and the
report carries the ratios against nginx and the direct path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_benchmark_runs_and_reports_ratios(tmp_path: Path) -> None:
    missing = [
        tool
        for tool in ("wrk", "nginx")
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    assert not missing, f"{missing} not installed: run `make test` (it installs them) or `make bench`"
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--duration", "1", "--results", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| sidegate |" in done.stdout, done.stdout
    (report,) = tmp_path.glob("*.json")
    summary = {row["scenario"]: row for row in json.loads(report.read_text())["summary"]}
    assert set(summary) == {"direct", "nginx", "sidegate", "floor"}
    for row in summary.values():
        assert row["rps"] > 0 and row["errors"] == 0, row
    sidegate = summary["sidegate"]
    assert sidegate["rps_vs_nginx"] > 0 and 0 < sidegate["rps_vs_direct"] <= 1.5, sidegate
    assert 0 < sidegate["rss_idle"] < 64 * 1024 * 1024, sidegate

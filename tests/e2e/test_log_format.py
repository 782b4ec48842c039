"""``sidegate run --log-format json``: the operational log as one JSON object per line.

A real gateway on loopback is started, reloaded with a good file and a bad one, and stopped;
every line it wrote on stderr must be a JSON record, and the records must say what happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import body_of, direct, ready_status, wait_until, write_yaml
from support.gateway import SIDEGATE, free_port


def config(port: int, admin: int, version: str, **top: Any) -> dict[str, Any]:
    return {
        "listeners": {
            "inbound": {"address": f"127.0.0.1:{port}"},
            "admin": {"address": f"127.0.0.1:{admin}"},
            "health": {"address": "127.0.0.1:0"},
        },
        "upstreams": {"app": {"endpoints": ["127.0.0.1:9"]}},
        "routes": [direct("v", "/", version)],
        "drain_delay": 0,  # stopped with SIGTERM: no 5 s of serving on first
        **top,
    }


def records(path: Path) -> list[dict[str, Any]]:
    """Every line of the log as JSON (a line that is not fails the test)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{path.read_text()}") from None
    return out


def events(path: Path, event: str) -> list[dict[str, Any]]:
    return [r for r in records(path) if r.get("event") == event]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
def test_json_logs_of_start_reloads_and_stop(tmp_path: Path, workers: int) -> None:
    port, admin = free_port(), free_port()
    path = tmp_path / "sidegate.yaml"
    write_yaml(path, config(port, admin, "v1", workers=workers))
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as log, open(tmp_path / "stdout.log", "wb") as out:
        proc = subprocess.Popen(
            [SIDEGATE, "run", "--config", str(path), "--log-format", "json"], stdout=out, stderr=log
        )
    try:
        wait_until(lambda: ready_status(admin) == 200, 15, what="ready")
        assert _serves(port, "v1")
        (start,) = events(log_path, "start")
        assert (start["level"], start["result"]) == ("info", "serving")
        assert start["logger"] == ("sidegate" if workers == 1 else "sidegate.supervisor")
        assert start["message"].startswith("sidegate")

        write_yaml(path, config(port, admin, "v2", workers=workers))
        reload = wait_until(lambda: events(log_path, "reload"), 5, what="a reload record")[0]
        assert (reload["result"], reload["version"]) == ("ok", 2), reload

        bad = config(port, admin, "v3", workers=workers)
        bad["routes"][0]["upstream"] = "nowhere"
        write_yaml(path, bad)
        wait_until(lambda: len(events(log_path, "reload")) == 2, 5, what="the rejected reload")
        rejected = events(log_path, "reload")[1]
        assert (rejected["level"], rejected["result"], rejected["version"]) == ("error", "rejected", 2)
        (issue,) = rejected["issues"]
        line = path.read_text().splitlines().index("  upstream: nowhere") + 1
        assert (issue["path"], issue["line"], issue["file"]) == ("routes[0].upstream", line, str(path))
        assert "nowhere" in issue["problem"]
        assert _serves(port, "v2")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0
    if workers == 1:
        assert [r.get("event") for r in records(log_path)][-2:] == ["drain", "stop"]
    for record in records(log_path):
        assert {"time", "level", "logger", "message"} <= set(record), record
        assert "Traceback" not in record["message"]


def test_a_config_warning_at_start_is_a_json_record(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    path = tmp_path / "sidegate.yaml"
    cfg = config(port, admin, "v1")
    cfg["routes"][0]["filters"] = {
        "rate_limit": {"requests": 1000, "key": "tenant"},
        **cfg["routes"][0]["filters"],
    }
    write_yaml(path, cfg)
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [SIDEGATE, "run", "--config", str(path), "--log-format", "json"], stdout=log, stderr=log
        )
    try:
        wait_until(lambda: ready_status(admin) == 200, 15, what="ready")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    (warning,) = events(log_path, "config_warning")
    line = [text.strip() for text in path.read_text().splitlines()].index("key: tenant") + 1
    assert (warning["level"], warning["path"], warning["line"]) == (
        "warning",
        "routes[0].filters.rate_limit.key",
        line,
    )
    assert "names the caller" in warning["problem"]


def test_text_logs_stay_the_default(tmp_path: Path, free_port: Callable[[], int]) -> None:
    port, admin = free_port(), free_port()
    path = tmp_path / "sidegate.yaml"
    write_yaml(path, config(port, admin, "v1"))
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([SIDEGATE, "run", "--config", str(path)], stdout=log, stderr=log)
    try:
        wait_until(lambda: ready_status(admin) == 200, 15, what="ready")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
    first = log_path.read_text().splitlines()[0]
    assert " INFO sidegate: sidegate serving: inbound http://" in first, first
    assert not first.startswith("{")


def _serves(port: int, body: str) -> bool:
    try:
        return body_of(port, "/") == body
    except OSError:
        return False

"""With workers, a SIGTERM to the whole process group reaches the supervisor and the workers in
either order: each worker counts only the signals sent to itself (one waits the delay, a second
drains at once), never the supervisor's message, which only turns keep-alive off."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from e2e.helpers import http, ready_status, wait_until, worker_pids
from support.gateway import SIDEGATE, OriginProcess, free_port, make_config

pytestmark = pytest.mark.timeout(60)


def test_a_worker_signalled_after_the_supervisors_message_still_waits_the_delay(
    tmp_path: Path, origin: OriginProcess
) -> None:
    """A group SIGTERM reaches the supervisor first and the workers a moment later, after the
    supervisor has already told them to stop keep-alive: that is still each worker's *first*
    SIGTERM, so it serves on for the delay (it used to drain at once: connections refused)."""
    delay = 2.0
    port, admin = free_port(), free_port()
    config = make_config(origin.address, port=port, admin_port=admin, workers=2, drain_delay=f"{delay}s")
    path = tmp_path / "sidegate.yaml"
    path.write_text(yaml.safe_dump(config))
    with open(tmp_path / "sidegate.log", "wb") as log:
        proc = subprocess.Popen(
            [SIDEGATE, "run", "--config", str(path)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: ready_status(admin) == 200, 15, what="ready")
        wait_until(lambda: len(worker_pids(proc.pid)) == 2, 15, what="worker processes")
        workers = worker_pids(proc.pid)
        proc.send_signal(signal.SIGTERM)  # the supervisor first: it tells the workers keep_alive_off
        wait_until(
            lambda: all(http(port, "/probe")[1].get("connection") == "close" for _ in range(6)),
            1,
            what="every worker answering Connection: close",
        )
        for pid in workers:  # then the group signal reaches the workers
            os.kill(pid, signal.SIGTERM)
        time.sleep(0.1)
        answers = [http(port, f"/still-in-delay-{i}") for i in range(6)]
        assert all(status == 200 for status, _, _ in answers), answers
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    log_text = (tmp_path / "sidegate.log").read_text(errors="replace")
    assert code == 0, log_text
    assert "Traceback" not in log_text, log_text

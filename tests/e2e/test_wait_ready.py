"""``sidegate wait-ready``, the classic-mode postStart hook, against a real HTTP server on loopback.

It must return 0 as soon as ``/ready`` says 200 (the app's container starts then), 1 with the
last answer once the deadline passes, and never go through a proxy named in the environment.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support.gateway import SIDEGATE


class ReadyAfter(ThreadingHTTPServer):
    """Answers ``/ready`` 503 for the first ``not_ready`` requests, then 200."""

    not_ready = 0
    seen = 0


class _Handler(BaseHTTPRequestHandler):
    server: ReadyAfter

    def do_GET(self) -> None:
        self.server.seen += 1
        ready = self.path == "/ready" and self.server.seen > self.server.not_ready
        self.send_response(200 if ready else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return


@pytest.fixture
def server() -> Iterator[ReadyAfter]:
    httpd = ReadyAfter(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def wait(url: str, timeout: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "http_proxy": "http://127.0.0.1:1", "HTTP_PROXY": "http://127.0.0.1:1"}
    started = time.monotonic()
    result = subprocess.run(
        [SIDEGATE, "wait-ready", "--url", url, "--timeout", timeout],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    return result, time.monotonic() - started


def test_returns_once_ready(server: ReadyAfter) -> None:
    server.not_ready = 3
    result, _ = wait(f"http://127.0.0.1:{server.server_port}/ready", "20s")
    assert result.returncode == 0, result.stderr
    assert server.seen == 4  # three 503s, then the 200 it stopped at


def test_gives_up_at_the_deadline_with_the_last_answer(server: ReadyAfter) -> None:
    server.not_ready = 10**9
    url = f"http://127.0.0.1:{server.server_port}/ready"
    result, elapsed = wait(url, "1.5s")
    assert result.returncode == 1
    assert result.stderr == f"sidegate wait-ready: {url} not ready after 1.5s (HTTP 503)\n"
    assert 1.2 < elapsed < 10
    assert server.seen >= 3


def test_nothing_listening_is_reported(server: ReadyAfter) -> None:
    port = server.server_port
    server.shutdown()
    server.server_close()
    result, _ = wait(f"http://127.0.0.1:{port}/ready", "0.5s")
    assert result.returncode == 1
    assert "Connection refused" in result.stderr

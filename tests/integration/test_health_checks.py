"""Active health checks: /ready follows the app, the balancer skips unhealthy endpoints.

The apps are real HTTP/1.1 servers on loopback (keep-alive, one thread per connection) whose
``/healthz`` answer the test switches; every other path answers 200 with the app's name. Every
test runs with one process and with ``workers: 2`` (checks in the supervisor).
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.helpers import wait_until
from support.gateway import HOST, SIDEGATE, free_port, http_get, make_config, stop_process

pytestmark = [pytest.mark.timeout(60), pytest.mark.parametrize("workers", [1, 2])]

CHECK = {
    "path": "/healthz",
    "interval": "0.2s",
    "timeout": "0.15s",
    "healthy_threshold": 2,
    "unhealthy_threshold": 2,
}


class FlipApp:
    """An app whose /healthz status the test sets; it records each check's client port."""

    def __init__(self, name: str, health: int = 200, host: str = HOST) -> None:
        self.name = name
        self.health = health
        self.checks: list[tuple[float, int, str]] = []  # (time, client port, User-Agent)
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path == "/healthz":
                    app.checks.append((time.monotonic(), self.client_address[1], self.headers["User-Agent"]))
                    app.hosts.append(self.headers["Host"])
                    status, body = app.health, b"health\n"
                else:
                    status, body = 200, app.name.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server_class = ThreadingHTTPServer
        if ":" in host:

            class Server6(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_class = Server6
        self.server = server_class((host, 0), Handler)
        self.server.daemon_threads = True
        port = self.server.server_address[1]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.hosts: list[str] = []  # the Host header of each check
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def checks_between(self, start: float, end: float) -> int:
        return sum(1 for at, _, _ in self.checks if start <= at < end)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def apps() -> Iterator[tuple[FlipApp, FlipApp]]:
    pair = (FlipApp("app-a"), FlipApp("app-b"))
    yield pair
    for app in pair:
        app.close()


class Gateway:
    """``sidegate run`` that is not waited for: /ready may be 503 from the start."""

    def __init__(self, workdir: Path, endpoints: list[str], workers: int, **upstream: Any) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.path = workdir / "sidegate.yaml"
        self.config = make_config(
            endpoints[0],
            port=self.port,
            admin_port=self.admin_port,
            upstreams={"app": {"endpoints": endpoints, "health_check": CHECK, **upstream}},
            workers=workers,
        )
        self.write(self.config)
        self.log_path = workdir / "sidegate.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [SIDEGATE, "run", "--config", str(self.path)], stdout=log, stderr=subprocess.STDOUT
            )

    def write(self, config: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(self.path)

    def ready(self) -> tuple[int, str]:
        try:
            status, body = http_get(self.admin_port, "/ready", timeout=1.0)
        except OSError:
            return 0, ""
        return status, body.decode()

    def admin_json(self, path: str) -> Any:
        status, body = http_get(self.admin_port, path)
        assert status == 200, body
        return json.loads(body)

    def endpoint(self, address: str) -> dict[str, Any]:
        [upstream] = self.admin_json("/clusters")["upstreams"]
        found: dict[str, Any] = next(e for e in upstream["endpoints"] if e["address"] == address)
        return found

    def metrics(self) -> str:
        return http_get(self.admin_port, "/metrics")[1].decode()

    def served_by(self, n: int) -> list[str]:
        return [http_get(self.port, f"/r{i}")[1].decode() for i in range(n)]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        stop_process(self.proc)
        return self.proc.returncode


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    started: list[Gateway] = []

    def start(endpoints: list[str], workers: int, **upstream: Any) -> Gateway:
        workdir = tmp_path / f"gw{len(started)}"
        workdir.mkdir()
        gw = Gateway(workdir, endpoints, workers, **upstream)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        assert gw.stop() == 0, gw.log()


def test_ready_waits_for_the_app_then_follows_its_health(
    run: Any, apps: tuple[FlipApp, FlipApp], workers: int
) -> None:
    app = apps[0]
    app.health = 503
    gw = run([app.address], workers)
    wait_until(lambda: "answered 503" in gw.ready()[1], 15, what="a first failed check in /ready")
    status, reason = gw.ready()
    assert status == 503
    assert f"upstream app has no healthy endpoint ({app.address}: answered 503, not 2xx)" in reason
    assert http_get(gw.admin_port, "/live")[0] == 200

    app.health = 200  # the app is up: one success is enough at start
    wait_until(lambda: gw.ready()[0] == 200, 2, what="/ready 200 once the app answers")
    assert gw.endpoint(app.address)["health"]["state"] == "healthy"

    app.health = 500  # the app turns unhealthy: two failures (0.2 s apart) take the pod out
    turned = time.monotonic()
    wait_until(lambda: gw.ready()[0] == 503, 3, what="/ready 503 once the app fails its checks")
    assert time.monotonic() - turned >= 0.2, "one failure was enough (unhealthy_threshold is 2)"
    assert "answered 500, not 2xx" in gw.ready()[1]
    health = gw.endpoint(app.address)["health"]
    assert health["state"] == "unhealthy" and health["checks"]["failure"] >= 3, health
    assert health["last_problem"] == "answered 500, not 2xx"
    metrics = gw.metrics()
    assert f'sidegate_upstream_endpoint_healthy{{upstream="app",endpoint="{app.address}"}} 0' in metrics
    assert (
        f'sidegate_upstream_health_checks_total{{upstream="app",endpoint="{app.address}",result="success"}}'
        in metrics
    )
    # Unhealthy, but the only endpoint: requests still go to it (panic routing), the app answers.
    assert gw.served_by(2) == ["app-a", "app-a"]

    # The log tells each change, and a run of failures once (not one line per check).
    log = gw.log()
    assert f"endpoint {app.address} of upstream app is unhealthy: answered 500, not 2xx" in log, log
    assert log.count("health check of") <= 2, log

    app.health = 200
    wait_until(lambda: gw.ready()[0] == 200, 3, what="/ready 200 after two good checks")
    assert f'sidegate_upstream_endpoint_healthy{{upstream="app",endpoint="{app.address}"}} 1' in gw.metrics()


def test_a_stopped_app_is_unhealthy_with_the_reason(run: Any, workers: int) -> None:
    port = free_port()  # nobody listens there
    gw = run([f"{HOST}:{port}"], workers)
    wait_until(lambda: "refused" in gw.ready()[1], 15, what="a refused check in /ready's reason")
    assert gw.ready()[0] == 503


def test_the_balancer_skips_an_unhealthy_endpoint_and_a_reload_keeps_the_state(
    run: Any, apps: tuple[FlipApp, FlipApp], workers: int
) -> None:
    a, b = apps
    gw = run([a.address, b.address], workers)
    wait_until(lambda: gw.ready()[0] == 200, 15, what="ready")
    assert set(gw.served_by(6)) == {"app-a", "app-b"}

    b.health = 503
    wait_until(lambda: gw.endpoint(b.address)["health"]["state"] == "unhealthy", 3, what="b unhealthy")
    assert gw.ready()[0] == 200, "one healthy endpoint is enough to be ready"
    assert gw.served_by(10) == ["app-a"] * 10

    # A reload that rebuilds the cluster (new pool settings) keeps what the checks found.
    since = gw.endpoint(b.address)["health"]["since"]
    new = json.loads(json.dumps(gw.config))
    new["upstreams"]["app"]["pool"] = {"max_idle": 7}
    gw.write(new)
    wait_until(lambda: gw.admin_json("/config_dump")["version"] == 2, 5, what="the reload")
    assert gw.endpoint(b.address)["health"]["since"] == since
    assert gw.served_by(6) == ["app-a"] * 6

    a.health = 503  # none healthy: panic routing sends to both, /ready takes the pod out
    wait_until(lambda: gw.ready()[0] == 503, 3, what="/ready 503 with no healthy endpoint")
    assert set(gw.served_by(6)) == {"app-a", "app-b"}


def test_checks_run_once_per_pod_on_kept_alive_connections(
    run: Any, apps: tuple[FlipApp, FlipApp], workers: int
) -> None:
    app = apps[0]
    gw = run([app.address], workers)
    wait_until(lambda: gw.ready()[0] == 200, 15, what="ready")
    start = time.monotonic()
    time.sleep(1.0)
    checks = app.checks_between(start, start + 1.0)
    assert 3 <= checks <= 7, f"{checks} checks in 1 s with interval 0.2 s and {workers} workers"
    recent = [c for c in app.checks if c[0] >= start]
    assert {agent for _, _, agent in recent} == {"sidegate-health-check"}
    assert len({port for _, port, _ in recent}) <= 2, "each check opened a new connection"


def test_an_ipv6_endpoint_is_checked_with_a_valid_host(run: Any, workers: int) -> None:
    app = FlipApp("v6", host="::1")
    try:
        gw = run([app.address], workers)
        wait_until(lambda: gw.ready()[0] == 200, 15, what="ready with an IPv6 app")
        assert set(app.hosts) == {app.address}  # "[::1]:port", brackets and all
        assert gw.endpoint(app.address.replace("[", "").replace("]", ""))["health"]["state"] == "healthy"
    finally:
        app.close()

"""A pod's stop under load: SIGTERM, ``drain_delay``, the drain, exit 0, and nothing dropped.

Kubernetes sends SIGTERM and takes the pod out of its Services at the same time, but the
removal reaches the load balancers later. The test plays that load balancer: a thread polls
``/ready`` and, a moment after it turns 503 (the lag), stops sending new connections to this
Sidegate; keep-alive clients go on until a response says ``Connection: close``. Meanwhile a slow
request is still in flight when the delay ends, so the drain has something to wait for.
Every test runs with one process and with ``workers: 2``.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.helpers import admin_post, ready_status, wait_until, worker_pids
from support.gateway import HOST, SIDEGATE, GatewayProcess, OriginProcess, free_port, make_config

pytestmark = [pytest.mark.timeout(60), pytest.mark.parametrize("workers", [1, 2])]

DELAY = 1.0  # drain_delay in these tests
LB_LAG = 0.3  # how long after /ready turns 503 the "load balancer" stops sending new connections
SLOW = 1.2  # the request in flight when the delay ends takes this long at the app


@dataclass
class Traffic:
    """What the clients saw (appended from their threads)."""

    routing: threading.Event = field(default_factory=threading.Event)  # the LB still sends here
    ok: list[float] = field(default_factory=list)  # when each request succeeded (monotonic)
    failures: list[str] = field(default_factory=list)
    closes_seen: int = 0  # responses to keep-alive clients that said Connection: close
    ready_503_at: float = 0.0


def start(gateway: Any, workers: int, delay: float = DELAY) -> GatewayProcess:
    gw: GatewayProcess = gateway(workers=workers, drain_delay=f"{delay}s", drain_timeout="10s")
    if workers > 1:
        wait_until(lambda: len(worker_pids(gw.pid)) == workers, 15, what="worker processes")
    return gw


def keep_alive_client(port: int, traffic: Traffic, deadline: float) -> None:
    """One connection reused until a response says Connection: close; then a new one, while
    the load balancer still routes here."""
    conn: http.client.HTTPConnection | None = None
    while time.monotonic() < deadline:
        if conn is None:
            if not traffic.routing.is_set():
                return
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            conn.request("GET", "/keep")
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            traffic.failures.append(f"keep-alive client: {type(exc).__name__}: {exc}")
            conn.close()
            conn = None
            continue
        if response.status != 200:
            traffic.failures.append(f"keep-alive client: status {response.status}")
        else:
            traffic.ok.append(time.monotonic())
        if (response.getheader("Connection") or "").lower() == "close":
            traffic.closes_seen += 1
            conn.close()
            conn = None
        time.sleep(0.01)
    if conn is not None:
        conn.close()


def new_connection_client(port: int, traffic: Traffic, deadline: float) -> None:
    """A new connection for every request, while the load balancer routes here."""
    while time.monotonic() < deadline and traffic.routing.is_set():
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            conn.request("GET", "/new", headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                traffic.ok.append(time.monotonic())
            else:
                traffic.failures.append(f"new-connection client: status {response.status}")
        except (OSError, http.client.HTTPException) as exc:
            traffic.failures.append(f"new-connection client: {type(exc).__name__}: {exc}")
        finally:
            conn.close()
        time.sleep(0.01)


def load_balancer(admin_port: int, traffic: Traffic, deadline: float) -> None:
    """Stops routing here LB_LAG after /ready first answers 503 (endpoint removal lags)."""
    while time.monotonic() < deadline:
        if ready_status(admin_port) == 503:
            traffic.ready_503_at = time.monotonic()
            time.sleep(LB_LAG)
            traffic.routing.clear()
            return
        time.sleep(0.02)


def test_sigterm_under_steady_traffic_drops_nothing(
    gateway: Any, origin: OriginProcess, workers: int
) -> None:
    gw = start(gateway, workers)
    traffic = Traffic()
    traffic.routing.set()
    deadline = time.monotonic() + 20
    threads = [
        threading.Thread(target=keep_alive_client, args=(gw.port, traffic, deadline)),
        threading.Thread(target=keep_alive_client, args=(gw.port, traffic, deadline)),
        threading.Thread(target=new_connection_client, args=(gw.port, traffic, deadline)),
        threading.Thread(target=new_connection_client, args=(gw.port, traffic, deadline)),
        threading.Thread(target=load_balancer, args=(gw.admin_port, traffic, deadline)),
    ]
    for thread in threads:
        thread.start()
    slow: dict[str, Any] = {}

    def slow_request() -> None:  # starts inside the delay, ends well after it
        conn = http.client.HTTPConnection(HOST, gw.port, timeout=15)
        try:
            conn.request("GET", f"/slow?seconds={SLOW}")
            response = conn.getresponse()
            slow["status"], slow["body"], slow["at"] = response.status, response.read(), time.monotonic()
        except (OSError, http.client.HTTPException) as exc:
            slow["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()

    try:
        wait_until(lambda: len(traffic.ok) >= 40, 10, what="steady traffic before SIGTERM")
        sent = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(DELAY - 0.4)
        slow_thread = threading.Thread(target=slow_request)
        slow_thread.start()
        code = gw.proc.wait(15)
        exited = time.monotonic()
        slow_thread.join(5)
    finally:
        traffic.routing.clear()
        for thread in threads:
            thread.join(15)

    assert traffic.failures == [], traffic.failures[:5]
    assert slow.get("status") == 200 and slow.get("body") == b"slow done\n", slow
    assert code == 0, gw.log()
    assert traffic.ready_503_at - sent < 0.5, "/ready did not turn 503 at SIGTERM"
    during_delay = [t for t in traffic.ok if sent < t < sent + DELAY]
    assert len(during_delay) >= 5, f"only {len(during_delay)} requests served during drain_delay"
    assert traffic.closes_seen >= 2, "keep-alive clients were never told Connection: close"
    # Exit ~ when the in-flight request ended: the delay, then what the slow request had left.
    elapsed = exited - sent
    expected = DELAY - 0.4 + SLOW
    assert expected - 0.1 <= elapsed < expected + 1.5, f"exited {elapsed:.2f}s after SIGTERM"
    assert slow["at"] <= exited
    assert "Traceback" not in gw.log(), gw.log()


def test_during_the_delay_new_connections_are_served_and_told_to_close(
    gateway: Any, origin: OriginProcess, workers: int
) -> None:
    gw = start(gateway, workers)
    idle = http.client.HTTPConnection(HOST, gw.port, timeout=5)
    idle.request("GET", "/warm")
    assert idle.getresponse().read() is not None
    gw.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: ready_status(gw.admin_port) == 503, 0.8, what="/ready 503 in the delay")
    status, _, body = _get(gw.admin_port, "/ready")
    assert status == 503 and b"draining" in body
    fresh = http.client.HTTPConnection(HOST, gw.port, timeout=5)
    fresh.request("GET", "/during-delay")
    answer = fresh.getresponse()
    assert answer.status == 200 and answer.getheader("Connection") == "close"
    answer.read()
    idle.request("GET", "/idle-reused")  # the idle keep-alive connection was left open
    reused = idle.getresponse()
    assert reused.status == 200 and reused.getheader("Connection") == "close"
    reused.read()
    assert gw.proc.poll() is None
    assert gw.proc.wait(10) == 0
    paths = [r.path for r in origin.received()]
    assert "/during-delay" in paths and "/idle-reused" in paths


def test_a_second_sigterm_skips_the_rest_of_the_delay(
    gateway: Any, origin: OriginProcess, workers: int
) -> None:
    gw = start(gateway, workers, delay=30)
    sent = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: ready_status(gw.admin_port) == 503, 2, what="/ready 503 in the delay")
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(10) == 0
    assert time.monotonic() - sent < 5, "the second SIGTERM did not cut the 30 s delay short"


def test_post_shutdown_drains_and_exits_without_the_delay(
    gateway: Any, origin: OriginProcess, workers: int
) -> None:
    gw = start(gateway, workers, delay=30)
    sent = time.monotonic()
    status, answer = admin_post(gw.admin_port, "/shutdown")
    assert status == 202 and answer["status"] == "draining", answer
    assert gw.proc.wait(10) == 0, gw.log()
    assert time.monotonic() - sent < 5, "POST /shutdown waited for drain_delay"


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_sigterm_to_the_whole_process_group_keeps_the_sequence(
    tmp_path: Path, origin: OriginProcess, workers: int
) -> None:
    """systemd, or an init that signals the group, sends SIGTERM to the workers as well: each
    runs the same delay, so nothing stops early."""
    port, admin = free_port(), free_port()
    config = make_config(
        origin.address, port=port, admin_port=admin, workers=workers, drain_delay=f"{DELAY}s"
    )
    path = tmp_path / "sidegate.yaml"
    path.write_text(yaml.safe_dump(config))
    with open(tmp_path / "sidegate.log", "wb") as log:
        proc = subprocess.Popen(
            [SIDEGATE, "run", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: ready_status(admin) == 200, 15, what="ready")
        if workers > 1:
            wait_until(lambda: len(worker_pids(proc.pid)) == workers, 15, what="worker processes")
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        wait_until(lambda: ready_status(admin) == 503, 0.5, what="/ready 503 at once")
        answers = [_get(port, f"/in-delay-{i}") for i in range(4)]  # spread over the workers
        assert all(status == 200 and headers.get("Connection") == "close" for status, headers, _ in answers)
        code = proc.wait(10)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    log_text = (tmp_path / "sidegate.log").read_text(errors="replace")
    assert code == 0, log_text
    assert DELAY - 0.05 <= elapsed < DELAY + 3, f"exited {elapsed:.2f}s after SIGTERM"
    assert "Traceback" not in log_text, log_text

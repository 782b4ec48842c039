"""SIGTERM drains: stop accepting, finish what is in flight (up to drain_timeout), exit 0.

Every test runs with one process and with ``workers: 2`` (supervisor and workers). Slow
requests and event streams go to the recording origin (``/slow?seconds=S``, ``/sse``), the
WebSocket to the demo app.
"""

from __future__ import annotations

import copy
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from e2e.helpers import (
    DemoApp,
    admin_post,
    connection_refused,
    proxied,
    ready_status,
    wait_until,
    worker_pids,
)
from support.gateway import GatewayProcess, OriginProcess, RawClient, get

pytestmark = [pytest.mark.timeout(60), pytest.mark.parametrize("workers", [1, 2])]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoApp]:
    app = DemoApp(tmp_path_factory.mktemp("demo") / "demo.log")
    yield app
    app.stop()


def start(gateway: Any, workers: int, drain_timeout: str, **options: Any) -> GatewayProcess:
    gw: GatewayProcess = gateway(workers=workers, drain_timeout=drain_timeout, **options)
    if workers > 1:
        wait_until(lambda: len(worker_pids(gw.pid)) == workers, 15, what="worker processes")
    return gw


def idle_keepalive(gw: GatewayProcess) -> RawClient:
    """A client connection that made one request and now sits idle (keep-alive)."""
    client = RawClient(gw.port, timeout=10)
    assert client.request(get("/warm")).status == 200
    return client


def at_origin(origin: OriginProcess, path: str) -> bool:
    return any(r.path == path for r in origin.received())


def test_sigterm_finishes_the_request_in_flight_and_refuses_new_ones(
    gateway: Any, origin: OriginProcess, workers: int
) -> None:
    gw = start(gateway, workers, "20s")
    idle = idle_keepalive(gw)
    slow = RawClient(gw.port, timeout=10)
    try:
        slow.send(get("/slow?seconds=3"))
        wait_until(lambda: at_origin(origin, "/slow"), 5, what="the slow request at the app")
        sent = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)

        wait_until(lambda: ready_status(gw.admin_port) == 503, 2, what="/ready 503 while draining")
        wait_until(lambda: connection_refused(gw.port), 2, what="new connections refused")
        assert idle.is_closed(timeout=2.0), "an idle keep-alive connection was left open during the drain"
        assert gw.proc.poll() is None, "exited with a request in flight"

        response = slow.read_final(timeout=8)
        assert response.status == 200
        assert response.body == b"slow done\n"
        assert (response.headers.get("Connection") or "").lower() == "close"
        assert slow.is_closed(timeout=2.0)

        code = gw.proc.wait(10)
        elapsed = time.monotonic() - sent
    finally:
        idle.close()
        slow.close()
    assert code == 0, gw.log()
    assert elapsed < 6, f"took {elapsed:.1f}s to exit; the last request ended at about 3s"
    assert "Traceback" not in gw.log(), gw.log()


def test_drain_timeout_bounds_the_wait(gateway: Any, origin: OriginProcess, workers: int) -> None:
    gw = start(gateway, workers, "1s")
    slow = RawClient(gw.port, timeout=15)
    try:
        slow.send(get("/slow?seconds=10"))
        wait_until(lambda: at_origin(origin, "/slow"), 5, what="the slow request at the app")
        sent = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        code = gw.proc.wait(10)
        elapsed = time.monotonic() - sent
        try:
            response = slow.read_final(timeout=2)
        except (ConnectionError, ValueError):
            response = None  # cut: the client sees the connection close
    finally:
        slow.close()
    assert code == 0, gw.log()
    assert 0.9 <= elapsed < 4, f"exited {elapsed:.1f}s after SIGTERM with drain_timeout 1s"
    assert response is None or response.status != 200 or not response.complete


def test_a_drain_timeout_changed_by_reload_is_the_one_used(
    gateway: Any, origin: OriginProcess, workers: int
) -> None:
    gw = start(gateway, workers, "30s")
    new = copy.deepcopy(gw.config)
    new["drain_timeout"] = "1s"
    gw.write_config(new)
    status, answer = admin_post(gw.admin_port, "/reload")
    assert status == 200, answer
    with RawClient(gw.port, timeout=15) as slow:
        slow.send(get("/slow?seconds=10"))
        wait_until(lambda: at_origin(origin, "/slow"), 5, what="the slow request at the app")
        sent = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        code = gw.proc.wait(20)
        elapsed = time.monotonic() - sent
    assert code == 0, gw.log()
    assert elapsed < 4, f"exited {elapsed:.1f}s after SIGTERM; the reloaded drain_timeout is 1s"


def test_sigterm_with_only_idle_connections_exits_at_once(gateway: Any, workers: int) -> None:
    gw = start(gateway, workers, "20s")
    clients = [idle_keepalive(gw) for _ in range(5)]
    try:
        sent = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        code = gw.proc.wait(15)
        elapsed = time.monotonic() - sent
        assert all(c.is_closed(timeout=2.0) for c in clients)
    finally:
        for client in clients:
            client.close()
    assert code == 0, gw.log()
    assert elapsed < 2.5, f"idle keep-alive connections held the drain for {elapsed:.1f}s"


def test_an_event_stream_in_flight_is_finished(gateway: Any, origin: OriginProcess, workers: int) -> None:
    gw = start(gateway, workers, "20s")
    with RawClient(gw.port, timeout=10) as stream:
        stream.send(get("/sse?n=5&interval=0.3"))
        wait_until(lambda: at_origin(origin, "/sse"), 5, what="the stream at the app")
        gw.proc.send_signal(signal.SIGTERM)
        response = stream.read_final(timeout=8)
    assert response.status == 200
    assert response.complete
    assert response.body.count(b"data:") == 5, response.body
    assert gw.proc.wait(10) == 0, gw.log()


def test_a_websocket_works_during_the_drain_and_is_closed_at_drain_timeout(
    gateway: Any, demo: DemoApp, workers: int
) -> None:
    # 2 s: the WebSocket must still answer after new connections are seen refused, which can take
    # most of a second on a loaded 2-core machine with two workers.
    gw = start(gateway, workers, "2s", routes=[proxied("all", "/")], upstream=demo.address)
    url = f"ws://127.0.0.1:{gw.port}/ws"
    with connect(url, proxy=None, compression=None, ping_interval=None, open_timeout=5) as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
        sent = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: connection_refused(gw.port), 2, what="new connections refused")
        ws.send("during")
        assert ws.recv(timeout=5) == "during", "an open WebSocket stopped working when the drain began"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=8)  # nothing more comes: the gateway closes it at drain_timeout
        code = gw.proc.wait(10)
        elapsed = time.monotonic() - sent
    assert code == 0, gw.log()
    assert 1.9 <= elapsed < 5, f"exited {elapsed:.1f}s after SIGTERM with drain_timeout 2s"

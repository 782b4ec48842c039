"""Long-lived streams through Sidegate to the demo app: WebSocket (``/ws``) and server-sent events.

A WebSocket client (the ``websockets`` library) talks through the gateway to the demo app's
echo; SSE is read off a raw socket with timestamps to show events are not buffered.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from e2e.helpers import DemoApp, metric, metrics, proxied, wait_until
from support.gateway import GatewayProcess, RawClient, parse_one, request

pytestmark = pytest.mark.timeout(60)

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoApp]:
    app = DemoApp(tmp_path_factory.mktemp("demo") / "demo.log")
    yield app
    app.stop()


@pytest.fixture(scope="module")
def gw(gateway_module: Any, demo: DemoApp) -> GatewayProcess:
    """One gateway for the module; the response timeout (1 s) is shorter than the streams here."""
    routes = [
        proxied("streams", "/", timeouts={"connect": "2s", "response": "1s", "idle": "10s"}),
    ]
    gateway: GatewayProcess = gateway_module(routes=routes, upstream=demo.address)
    return gateway


def ws_connect(port: int, **options: Any) -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{port}/ws",
        proxy=None,
        compression=None,
        ping_interval=None,
        open_timeout=5,
        close_timeout=5,
        **options,
    )


def streams_active(gw: GatewayProcess) -> float:
    return metric(metrics(gw.admin_port), "sidegate_streams_active")


# --- WebSocket ---------------------------------------------------------------------------------


def upgrade_request(key: str) -> bytes:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
    }
    return request("GET", "/ws", headers=headers)


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A final, masked client frame (payload under 126 bytes)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + masked


def read_exactly(conn: RawClient, size: int) -> bytes:
    """``size`` bytes after the response already parsed (the tunnel's bytes)."""
    data, conn.buf = conn.buf, b""
    conn.sock.settimeout(5)
    while len(data) < size:
        more = conn.sock.recv(65536)
        assert more, f"the tunnel closed after {data!r}"
        data += more
    return data


def test_upgrade_answers_101_with_upgrade_websocket_and_a_valid_accept(gw: GatewayProcess) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    with RawClient(gw.port) as conn:
        conn.send(upgrade_request(key))
        response = conn.read_response()
        assert response.status == 101, response
        assert response.headers.get("Upgrade", "").lower() == "websocket"
        assert "upgrade" in (response.headers.get("Connection") or "").lower()
        assert len(response.headers.get_all("Upgrade")) == 1, response.headers
        expected = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        assert response.headers.get("Sec-WebSocket-Accept") == expected
        assert "Content-Length" not in response.headers
        assert "Transfer-Encoding" not in response.headers
        # The connection is now a raw tunnel: a masked text frame comes back unmasked.
        payload = b"through the tunnel"
        conn.send(client_frame(payload))
        assert read_exactly(conn, 2 + len(payload)) == struct.pack("!BB", 0x81, len(payload)) + payload


def test_frames_sent_right_behind_the_upgrade_request_are_not_lost(gw: GatewayProcess) -> None:
    """Some clients send their first frames without waiting for the 101."""
    key = base64.b64encode(os.urandom(16)).decode()
    first, second = b"early one", b"early two"
    with RawClient(gw.port) as conn:
        conn.send(upgrade_request(key) + client_frame(first) + client_frame(second))
        assert conn.read_response().status == 101
        expected = (
            struct.pack("!BB", 0x81, len(first)) + first + struct.pack("!BB", 0x81, len(second)) + second
        )
        assert read_exactly(conn, len(expected)) == expected


def test_text_and_binary_messages_echo(gw: GatewayProcess) -> None:
    with ws_connect(gw.port) as ws:
        assert ws.response.status_code == 101
        assert ws.response.headers["Upgrade"].lower() == "websocket"
        for message in ["hello", "", "ünïcødé ✓", "x" * 200, "y" * 70_000]:
            ws.send(message)
            assert ws.recv(timeout=5) == message
        for data in [b"\x00\x01\x02\xff", b"", bytes(range(256)) * 300]:
            ws.send(data)
            assert ws.recv(timeout=5) == data


def test_ping_is_answered_with_pong(gw: GatewayProcess) -> None:
    with ws_connect(gw.port) as ws:
        for i in range(3):
            assert ws.ping(f"ping {i}".encode()).wait(5), f"no pong for ping {i}"
        ws.send("after pings")
        assert ws.recv(timeout=5) == "after pings"


def test_close_handshake_completes_and_the_stream_is_released(gw: GatewayProcess) -> None:
    with ws_connect(gw.port) as ws:
        ws.send("bye soon")
        assert ws.recv(timeout=5) == "bye soon"
        assert streams_active(gw) >= 1
        ws.close(code=1000, reason="done")
        assert ws.close_code == 1000  # the app's close frame came back through the gateway
    wait_until(lambda: streams_active(gw) == 0, 3, what="sidegate_streams_active back to 0")


def test_a_one_mebibyte_binary_message_echoes_intact(gw: GatewayProcess) -> None:
    data = os.urandom(1 << 20)
    with ws_connect(gw.port, max_size=4 << 20) as ws:
        started = time.monotonic()
        ws.send(data)
        echoed = ws.recv(timeout=15)
        assert isinstance(echoed, bytes)
        assert len(echoed) == len(data)
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
        assert time.monotonic() - started < 10


def test_many_websockets_at_once_stay_separate(gw: GatewayProcess) -> None:
    errors: list[str] = []

    def session(index: int) -> None:
        try:
            with ws_connect(gw.port) as ws:
                for i in range(20):
                    ws.send(f"{index}:{i}")
                    got = ws.recv(timeout=5)
                    if got != f"{index}:{i}":
                        errors.append(f"socket {index} got {got!r} for {index}:{i}")
                        return
        except Exception as exc:
            errors.append(f"socket {index}: {exc!r}")

    threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors


def test_a_quiet_websocket_outlives_the_response_timeout(gw: GatewayProcess) -> None:
    """The route's response timeout is 1 s; it bounds waiting for the 101, not the tunnel."""
    with ws_connect(gw.port) as ws:
        time.sleep(1.6)
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"


# --- server-sent events ------------------------------------------------------------------------


def read_sse(port: int, n: int, interval: float) -> tuple[bytes, list[tuple[float, int]]]:
    """GET /sse on a raw socket; returns the raw bytes and (seconds since the request, event id)."""
    arrivals: list[tuple[float, int]] = []
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            request("GET", f"/sse?n={n}&interval={interval}", headers={"Accept": "text/event-stream"})
        )
        started = time.monotonic()
        deadline = started + n * interval + 10
        while not data.endswith(b"0\r\n\r\n"):
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            now = time.monotonic() - started
            for event_id in range(len(arrivals) + 1, n + 1):
                if f"id: {event_id}\n".encode() in data:
                    arrivals.append((now, event_id))
    return data, arrivals


def test_sse_events_arrive_as_they_are_sent(gw: GatewayProcess) -> None:
    n, interval = 5, 0.5
    data, arrivals = read_sse(gw.port, n, interval)
    response, _ = parse_one(data)
    assert response.status == 200
    assert (response.headers.get("Content-Type") or "").startswith("text/event-stream")
    assert response.complete, "the stream did not end properly"
    assert [event_id for _, event_id in arrivals] == list(range(1, n + 1))
    events = [e for e in response.body.decode().split("\n\n") if e]
    assert len(events) == n
    first, last = arrivals[0][0], arrivals[-1][0]
    # The app sends event 1 at once and event 5 two seconds later: unbuffered, the first arrives
    # at once and the others one by one; buffered, they would all arrive together at the end.
    assert first < 1.0, f"first event after {first:.2f}s: the stream is being buffered"
    assert last - first > (n - 1) * interval * 0.75, f"events arrived in a burst: {arrivals}"
    assert len({round(t, 1) for t, _ in arrivals}) >= n - 1, f"events arrived in bursts: {arrivals}"


def test_sse_longer_than_the_response_timeout_completes(gw: GatewayProcess) -> None:
    _, arrivals = read_sse(gw.port, 6, 0.4)  # 2 s of events on a route with response: 1s
    assert [event_id for _, event_id in arrivals] == list(range(1, 7))

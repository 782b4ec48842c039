"""When the app fails: refused and hanging connects, slow or stalled responses, resets and
invalid responses, and streams that must not be cut by the response timeout."""

from __future__ import annotations

import base64
import contextlib
import gzip
import itertools
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from support.gateway import (
    HOST,
    GatewayFactory,
    GatewayProcess,
    OriginProcess,
    RawClient,
    Response,
    free_port,
    get,
    parse_responses,
    request,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def blackhole() -> Iterator[str]:
    """A loopback address whose connects hang: a listener that never accepts, accept queue full
    (Linux drops further SYNs, so connect() neither succeeds nor fails)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect((HOST, port))
        fillers.append(sock)
    time.sleep(0.1)
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.settimeout(0.3)
    try:
        with pytest.raises(TimeoutError):
            probe.connect((HOST, port))
    finally:
        probe.close()
    yield f"{HOST}:{port}"
    for sock in fillers:
        sock.close()
    listener.close()


@pytest.fixture(scope="module")
def dead_address() -> str:
    return f"{HOST}:{free_port()}"


@pytest.fixture(scope="module")
def gw(gateway_module: GatewayFactory, blackhole: str, dead_address: str) -> GatewayProcess:
    routes = [
        {"name": "dead", "match": {"path_prefix": "/dead"}, "upstream": "dead"},
        {
            "name": "hole",
            "match": {"path_prefix": "/hole"},
            "upstream": "hole",
            "timeouts": {"connect": "0.3s"},
        },
        {
            "name": "slow",
            "match": {"path_prefix": "/slow"},
            "upstream": "app",
            "timeouts": {"response": "0.5s"},
        },
        {
            "name": "stall",
            "match": {"path_prefix": "/stall-body"},
            "upstream": "app",
            "timeouts": {"idle": "0.5s"},
        },
        {
            "name": "sse",
            "match": {"path_prefix": "/sse"},
            "upstream": "app",
            "timeouts": {"response": "0.3s"},
        },
        {"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"},
    ]
    upstreams = {"dead": {"endpoints": [dead_address]}, "hole": {"endpoints": [blackhole]}}
    return gateway_module(routes=routes, upstreams=upstreams, drain_timeout="2s")


def expect_failure(response: Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status == status, response
    assert (response.headers.get("content-type") or "").startswith("application/json")
    assert response.headers.get("x-request-id")
    body: dict[str, Any] = response.json()
    assert body["error"] == kind and body["status"] == status, body
    return body


def test_connect_refused_503(gw: GatewayProcess, dead_address: str) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/dead"))
        body = expect_failure(response, 503, "connect_refused")
        assert dead_address in body["detail"]
        assert client.request(get("/ok")).status == 200, "the client connection should stay usable"


def test_connect_refused_with_body(gw: GatewayProcess, dead_address: str) -> None:
    with RawClient(gw.port) as client:
        response = client.request(request("POST", "/dead", b"payload" * 100))
    expect_failure(response, 503, "connect_refused")


def test_connect_timeout_503(gw: GatewayProcess, blackhole: str) -> None:
    with RawClient(gw.port) as client:
        started = time.monotonic()
        response = client.request(get("/hole"), timeout=5)
        elapsed = time.monotonic() - started
    body = expect_failure(response, 503, "connect_timeout")
    assert blackhole in body["detail"]
    assert 0.2 < elapsed < 2.0, elapsed


def test_response_timeout_504(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        started = time.monotonic()
        response = client.request(get("/slow?seconds=3"), timeout=5)
        elapsed = time.monotonic() - started
        expect_failure(response, 504, "response_timeout")
        assert 0.4 < elapsed < 1.5, elapsed
        after = client.request(get("/ok"))
        assert after.status == 200 and after.json()["path"] == "/ok", "a late response leaked into the next"


def test_response_within_timeout_passes(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/slow?seconds=0.2"), timeout=5)
    assert response.status == 200 and response.body == b"slow done\n"


def test_idle_timeout_mid_body_cuts_connection(gw: GatewayProcess, origin: OriginProcess) -> None:
    """The head and 100 bytes were already sent, so no error response is possible: the client
    sees a response that ends early and a closed connection."""
    with RawClient(gw.port) as client:
        client.send(get("/stall-body"))
        started = time.monotonic()
        data = client.read_until_close(5)
        elapsed = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-length: 1000" in head.lower()
    assert body == b"s" * 100
    assert 0.4 < elapsed < 2.0, elapsed


def test_app_drops_connection_502(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/drop"), timeout=5)
    expect_failure(response, 502, "reset")


def test_app_drops_connection_post_not_retried(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(request("POST", "/drop", b"once"), timeout=5)
    expect_failure(response, 502, "reset")
    assert len(origin.received()) == 1, "a POST must never be sent twice"


def test_app_resets_connection_502(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/reset"), timeout=5)
        expect_failure(response, 502, "reset")
        assert client.request(get("/ok")).status == 200


def test_garbage_response_502(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/garbage"), timeout=5)
    expect_failure(response, 502, "protocol_error")


INVALID_RESPONSES = [
    ("not-http", b"SSH-2.0-OpenSSH_9.0\r\n\r\n"),
    ("cl-and-te", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("duplicate-cl", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("bad-cl", b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello"),
    ("te-gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
    ("bad-header-name", b"HTTP/1.1 200 OK\r\nBad Header: 1\r\nContent-Length: 0\r\n\r\n"),
    ("nul-in-value", b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n"),
    ("status-1000", b"HTTP/1.1 1000 Odd\r\nContent-Length: 0\r\n\r\n"),
]


def raw_target(raw: bytes) -> str:
    return "/raw?b64=" + base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize("raw", [c[1] for c in INVALID_RESPONSES], ids=[c[0] for c in INVALID_RESPONSES])
def test_invalid_response_head_502(gw: GatewayProcess, origin: OriginProcess, raw: bytes) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get(raw_target(raw)), timeout=5)
    expect_failure(response, 502, "protocol_error")


def test_response_head_too_large_502(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/big-head?bytes=100000"), timeout=5)
        expect_failure(response, 502, "protocol_error")
        small = client.request(get("/big-head?bytes=1000"), timeout=5)
        assert small.status == 200 and small.headers.get("x-big") == "h" * 1000


def test_invalid_chunk_after_valid_head_is_never_passed_as_complete(
    gw: GatewayProcess, origin: OriginProcess
) -> None:
    """A valid head then a broken chunked body: whatever was forwarded, the client must not get a
    complete response; it gets a 502 (the head was still held: this one read brought it all) or a
    cut connection."""
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"
    with RawClient(gw.port) as client:
        client.send(get(raw_target(raw)))
        response = client.read_response(timeout=5)
        assert response.status == 502 or not response.complete, response
        if response.status == 502:
            assert response.json()["error"] == "protocol_error"
            assert client.request(get("/after")).status == 200  # a clean answer: the connection goes on


def test_sse_not_cut_by_response_timeout(gw: GatewayProcess, origin: OriginProcess) -> None:
    """Events every 0.5 s with a 0.3 s response timeout: all arrive, each when it is sent."""
    with socket.create_connection((HOST, gw.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(get("/sse?n=4&interval=0.5", headers={"Accept": "text/event-stream"}))
        arrivals: list[float] = []
        data = b""
        while not data.endswith(b"0\r\n\r\n") and time.monotonic() - started < 8:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
            while len(arrivals) < data.count(b"data: event"):
                arrivals.append(time.monotonic() - started)
    (response,) = parse_responses(data)
    assert response.status == 200 and response.complete
    assert response.body == b"".join(b"id: %d\ndata: event %d\n\n" % (i, i) for i in range(4))
    assert len(arrivals) == 4, data
    assert arrivals[0] < 0.45, f"first event late: {arrivals}"
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(0.25 < gap < 1.2 for gap in gaps), f"events were not streamed as sent: {arrivals}"


def test_sse_events_in_response(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/sse?n=3&interval=0.4"), timeout=5)
    assert response.status == 200
    assert response.headers.get("content-type") == "text/event-stream"
    assert response.body == b"".join(b"id: %d\ndata: event %d\n\n" % (i, i) for i in range(3))


def test_gateway_serves_after_failures(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        for path in ("/dead", "/drop", "/reset", "/garbage"):
            client.request(get(path), timeout=5)
            if client.is_closed(0.05):
                break
    with RawClient(gw.port) as client:
        assert client.request(get("/ok")).status == 200


def test_slow_upload_not_cut_by_response_timeout(gw: GatewayProcess, origin: OriginProcess) -> None:
    """The response timeout (0.5 s here) waits for the response, not for the client's upload: a
    body sent steadily over 1.5 s must not turn into a 504."""
    with RawClient(gw.port) as client:
        client.send(request("POST", "/slow?seconds=0", None, headers={"Content-Length": "60"}))
        for _ in range(6):
            time.sleep(0.25)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                client.send(b"0123456789")
        response = client.read_final(timeout=5)
    assert response.status == 200, response
    assert origin.received()[0].body == b"0123456789" * 6


def test_101_without_upgrade_request_502(gw: GatewayProcess, origin: OriginProcess) -> None:
    raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    with RawClient(gw.port) as client:
        response = client.request(get(raw_target(raw)), timeout=5)
    expect_failure(response, 502, "protocol_error")


def test_response_transfer_coding_never_silently_dropped(gw: GatewayProcess, origin: OriginProcess) -> None:
    """``Transfer-Encoding: gzip, chunked`` from the app: Sidegate must decode it, keep the gzip
    coding on the way out, or refuse (502); never pass gzip bytes labelled as plain chunked."""
    payload = gzip.compress(b"hello")
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (
        len(payload),
        payload,
    )
    with RawClient(gw.port) as client:
        response = client.request(get(raw_target(raw)), timeout=5)
    if response.status == 502:
        expect_failure(response, 502, "protocol_error")
        return
    codings = ",".join(response.headers.get_all("transfer-encoding")).lower()
    assert "gzip" in codings or response.body == b"hello", (response, codings)

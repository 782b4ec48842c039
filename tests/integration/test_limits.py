"""Limits that protect the pod: head size and count, URI length, body size, slow clients, idle
connections, and backpressure on big responses to clients that do not read."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from support.gateway import (
    HOST,
    GatewayFactory,
    GatewayProcess,
    OriginProcess,
    RawClient,
    Response,
    chunked,
    get,
    request,
)
from support.origin import pattern

pytestmark = pytest.mark.timeout(60)

LIMITS = {
    "head_size": "8KiB",
    "header_count": 20,
    "head_timeout": "0.5s",
    "body_idle": "0.5s",
    "keepalive_idle": "0.7s",
}
ROUTES = [
    {"name": "small", "match": {"path_prefix": "/small"}, "upstream": "app", "max_body": "1KiB"},
    {"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"},
]


@pytest.fixture(scope="module")
def gw(gateway_module: GatewayFactory) -> GatewayProcess:
    return gateway_module(routes=ROUTES, limits=LIMITS, drain_timeout="2s")


def expect_error(client: RawClient, status: int, kind: str, timeout: float = 5.0) -> Response:
    response = client.read_response(timeout=timeout)
    assert response.status == status, response
    assert (response.headers.get("connection") or "").lower() == "close", response
    body = response.json()
    assert body["error"] == kind and body["status"] == status, body
    assert client.is_closed(3.0), "the connection stays open after a limit was hit"
    return response


def assert_origin_saw_nothing(origin: OriginProcess) -> None:
    time.sleep(0.05)
    assert origin.all_bytes() == b"", origin.all_bytes()[:500]


# --- head ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [9000, 100_000])
def test_head_too_large_431(gw: GatewayProcess, origin: OriginProcess, size: int) -> None:
    """The whole head in one write (one read on the server side) over head_size (8 KiB)."""
    with RawClient(gw.port) as client:
        client.send(get("/", headers={"X-Big": "a" * size}))
        expect_error(client, 431, "head_too_large")
    assert_origin_saw_nothing(origin)


def test_head_too_large_431_in_pieces(gw: GatewayProcess, origin: OriginProcess) -> None:
    """The same head over head_size, arriving in several reads."""
    data = get("/", headers={"X-Big": "a" * 9000})
    with RawClient(gw.port) as client:
        for offset in range(0, len(data), 2000):
            try:
                client.send(data[offset : offset + 2000])
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.02)
        expect_error(client, 431, "head_too_large")
    assert_origin_saw_nothing(origin)


def test_head_just_under_limit_passes(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/", headers={"X-Big": "a" * 7000}))
    assert response.status == 200
    assert origin.received()[0].header("x-big") == "a" * 7000


def test_endless_header_line_431_before_it_ends(gw: GatewayProcess, origin: OriginProcess) -> None:
    """A header line that never ends is cut at the limit, not buffered without bound."""
    with RawClient(gw.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Endless: ")
        for _ in range(10):
            try:
                client.send(b"a" * 1024)
            except (BrokenPipeError, ConnectionResetError):
                break
        expect_error(client, 431, "head_too_large")
    assert_origin_saw_nothing(origin)


def test_too_many_headers_431(gw: GatewayProcess, origin: OriginProcess) -> None:
    headers = {f"X-H{i}": str(i) for i in range(25)}
    with RawClient(gw.port) as client:
        client.send(get("/", headers=headers))
        expect_error(client, 431, "head_too_large")
    assert_origin_saw_nothing(origin)


def test_uri_too_long_414(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        client.send(get("/" + "u" * 9000))
        expect_error(client, 414, "uri_too_long")
    assert_origin_saw_nothing(origin)


# --- body --------------------------------------------------------------------------------------


def test_content_length_over_max_body_413(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        client.send(request("POST", "/small", b"x" * 1025))
        expect_error(client, 413, "body_too_large")
    assert_origin_saw_nothing(origin)


def test_content_length_at_max_body_passes(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(request("POST", "/small", b"x" * 1024))
    assert response.status == 200
    assert origin.received()[0].body == b"x" * 1024


def test_413_sent_before_a_big_body_is_uploaded(gw: GatewayProcess, origin: OriginProcess) -> None:
    """The client learns about the limit from the head alone, without sending 100 MB first."""
    with RawClient(gw.port) as client:
        client.send(request("POST", "/small", None, headers={"Content-Length": str(100 * 1024 * 1024)}))
        expect_error(client, 413, "body_too_large")
    assert_origin_saw_nothing(origin)


def test_chunked_body_over_max_body_413(gw: GatewayProcess, origin: OriginProcess) -> None:
    """A chunked body has no size up front: it is cut when it passes the limit. The client gets
    413 and a close; the app never gets a complete request."""
    with RawClient(gw.port) as client:
        client.send(request("POST", "/small", None, headers={"Transfer-Encoding": "chunked"}))
        client.send(b"200\r\n" + b"y" * 512 + b"\r\n")
        time.sleep(0.1)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.send(b"300\r\n" + b"z" * 768 + b"\r\n" + b"0\r\n\r\n")
        expect_error(client, 413, "body_too_large")
    time.sleep(0.1)
    assert origin.received() == [], "the app received a complete over-limit request"


def test_chunked_body_under_max_body_passes(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(
            request(
                "POST", "/small", chunked(b"a" * 500, b"b" * 524), headers={"Transfer-Encoding": "chunked"}
            )
        )
    assert response.status == 200
    assert origin.received()[0].body == b"a" * 500 + b"b" * 524


# --- slow clients ------------------------------------------------------------------------------


def test_head_timeout_408(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n")
        started = time.monotonic()
        expect_error(client, 408, "request_timeout")
        assert 0.3 < time.monotonic() - started < 2.0
    assert_origin_saw_nothing(origin)


def test_head_timeout_not_extended_by_dribbling(gw: GatewayProcess, origin: OriginProcess) -> None:
    """Slowloris: a byte every 100 ms does not keep a head alive past head_timeout."""
    with RawClient(gw.port) as client:
        started = time.monotonic()
        client.send(b"GET / HTTP/1.1\r\n")
        for _ in range(30):
            try:
                client.send(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            if time.monotonic() - started > 1.5:
                break
        response = client.read_response(timeout=3)
        assert response.status == 408
        assert time.monotonic() - started < 2.0
        assert client.is_closed(3.0)
    assert_origin_saw_nothing(origin)


def test_body_stall_408(gw: GatewayProcess, origin: OriginProcess) -> None:
    """A body that stops arriving: 408 and close; the app never gets a complete request."""
    with RawClient(gw.port) as client:
        client.send(request("POST", "/echo", None, headers={"Content-Length": "100"}) + b"0123456789")
        started = time.monotonic()
        expect_error(client, 408, "request_timeout")
        assert 0.3 < time.monotonic() - started < 2.0
    time.sleep(0.1)
    assert origin.received() == []
    assert origin.state()["pending"] == [], "the app's connection still waits for the rest of the body"


def test_slow_but_steady_body_is_fine(gw: GatewayProcess, origin: OriginProcess) -> None:
    """body_idle is between reads, not a total: a body sent over 1.5 s in steady pieces passes."""
    with RawClient(gw.port) as client:
        client.send(request("POST", "/echo", None, headers={"Content-Length": "50"}))
        for _ in range(5):
            time.sleep(0.3)
            client.send(b"0123456789")
        response = client.read_final(timeout=5)
    assert response.status == 200 and response.body == b"0123456789" * 5


def test_keepalive_idle_close(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        assert client.request(get("/")).status == 200
        started = time.monotonic()
        assert client.is_closed(3.0), "an idle keep-alive connection was not closed"
        assert 0.5 < time.monotonic() - started < 2.0
        assert client.buf == b"", "a closed idle connection must not get a response"


def test_idle_connection_without_request_closed(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        assert client.is_closed(3.0)
        assert client.buf == b""


def test_active_keepalive_connection_stays_open(gw: GatewayProcess, origin: OriginProcess) -> None:
    """Requests every 0.3 s (under keepalive_idle) keep one connection alive past its idle time."""
    with RawClient(gw.port) as client:
        for _ in range(5):
            assert client.request(get("/")).status == 200
            time.sleep(0.3)
    assert len({r.peer_port for r in origin.received()}) == 1


def test_client_gone_mid_body_frees_the_upstream(gateway: GatewayFactory, origin: OriginProcess) -> None:
    """A client that disconnects in the middle of its body: the app's half request is abandoned
    (its connection closed) at once, not after body_idle (5 s here, 30 s by default)."""
    gw = gateway(limits={"body_idle": "5s"}, drain_timeout="1s")
    with RawClient(gw.port) as client:
        client.send(request("POST", "/echo", None, headers={"Content-Length": "1000"}) + b"partial")
        deadline = time.monotonic() + 2
        while not origin.state()["pending"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert origin.state()["pending"], "the head did not reach the app"
    started = time.monotonic()
    while origin.state()["pending"] and time.monotonic() - started < 3:
        time.sleep(0.02)
    assert not origin.state()["pending"], "the app's connection was kept open after the client left"
    assert time.monotonic() - started < 1.0, "abandoned only at body_idle, not when the client left"


# --- backpressure ------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_backpressure_big_response_to_slow_reader(gw: GatewayProcess, origin: OriginProcess) -> None:
    size = 200 * 1024 * 1024
    baseline = gw.rss_kib()
    sock = socket.create_connection((HOST, gw.port), timeout=10)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        sock.sendall(get(f"/big?bytes={size}"))
        time.sleep(2.0)  # read nothing
        grown_kib = gw.rss_kib() - baseline
        assert grown_kib < 48 * 1024, f"Sidegate grew by {grown_kib} KiB while the client read nothing"
        # now read it all and check every byte
        sock.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            assert data, "closed before the head"
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert f"content-length: {size}".encode() in head.lower()
        block = pattern(1024 * 1024)
        received = 0
        pending = rest
        while received + len(pending) < size:
            data = sock.recv(1 << 20)
            assert data, f"connection closed after {received + len(pending)} of {size} bytes"
            pending += data
            whole = len(pending) - len(pending) % len(block)
            for offset in range(0, whole, len(block)):
                assert pending[offset : offset + len(block)] == block, f"corrupt body near byte {received}"
                received += len(block)
            pending = pending[whole:]
        assert pending == block[: len(pending)]
        received += len(pending)
        assert received == size
    finally:
        sock.close()
    assert gw.rss_kib() - baseline < 48 * 1024


def test_client_abort_mid_response_closes_the_upstream(gw: GatewayProcess, origin: OriginProcess) -> None:
    """A client that leaves in the middle of a big download: the app's connection is closed too
    (it cannot be reused with half a response in it), and Sidegate does not keep reading it."""
    sock = socket.create_connection((HOST, gw.port), timeout=5)
    try:
        sock.sendall(get(f"/big?bytes={500 * 1024 * 1024}"))
        got = 0
        while got < 1024 * 1024:
            data = sock.recv(65536)
            assert data
            got += len(data)
        (big,) = origin.received()
    finally:
        sock.close()
    deadline = time.monotonic() + 3
    while big.peer_port in origin.state()["open"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert big.peer_port not in origin.state()["open"], "the app's connection outlived the client"

"""Egress streams: bodies go through as they come, both ways, on a real ``sidegate run``.

Downloads far above ``egress.max_body`` in bounded memory, an upload the destination sees
before the app has sent all of it, SSE events one by one, an app that reads slowly (Sidegate
stops reading the destination instead of buffering), a destination dying mid-body (the app's
connection is cut and the audit line says so), and the framing of what comes back: HEAD, 204,
304 and 1xx, chunked passed as chunked, close-delimited re-chunked for HTTP/1.1 apps.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.gateway import (
    GatewayFactory,
    GatewayProcess,
    IncompleteError,
    OriginProcess,
    free_port,
    parse_one,
)
from support.scripted_origin import ScriptedOrigin
from support.slow_peers import read_head, small_receive_buffer_client, stream_digest

pytestmark = pytest.mark.timeout(90)

HOST = "127.0.0.1"
MiB = 1024 * 1024
RSS_GROWTH_KIB = 16 * 1024  # far below the 64 MiB bodies: streamed, not buffered
MAX_BODY = 1000  # egress.max_body: the request body limit; responses are not bounded by it


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedOrigin]:
    origin = ScriptedOrigin(timeout=10)
    yield origin
    origin.close()


@pytest.fixture(scope="module")
def egress(
    gateway_module: GatewayFactory,
    origin_server: OriginProcess,
    scripted: ScriptedOrigin,
    tmp_path_factory: pytest.TempPathFactory,
) -> GatewayProcess:
    port = free_port()
    log = tmp_path_factory.mktemp("egress-log") / "access.log"
    local = ["127.0.0.1/32"]

    def add_egress(config: dict[str, Any]) -> None:
        config["listeners"]["egress"] = {"address": f"{HOST}:{port}"}
        config["observability"] = {"access_log": {"enabled": True, "path": str(log)}}
        config["egress"] = {
            "max_body": MAX_BODY,
            "destinations": [
                {
                    "name": "quick",  # response 500 ms (to the head), idle 500 ms (between reads)
                    "host": "quick.test",
                    "ports": [origin_server.port],
                    "origin": f"{HOST}:{origin_server.port}",
                    "allow_private": local,
                    "timeouts": {"response": "500ms", "idle": "500ms"},
                },
                {
                    "name": "loopback",
                    "host": HOST,
                    "ports": [origin_server.port, scripted.port],
                    "allow_private": local,
                },
            ],
        }

    gw = gateway_module(mutate=add_egress)
    gw.egress_port = port  # type: ignore[attr-defined]
    gw.access_log = log  # type: ignore[attr-defined]
    return gw


def egress_port(gw: GatewayProcess) -> int:
    port: int = gw.egress_port  # type: ignore[attr-defined]
    return port


def audit_line(gw: GatewayProcess, path: str) -> dict[str, Any]:
    """The egress audit line of the call to ``path`` (written off the loop: waited for)."""
    log: Path = gw.access_log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while True:
        text = log.read_text() if log.exists() else ""
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        found = [line for line in lines if line.get("type") == "egress" and line.get("path") == path]
        if found or time.monotonic() > deadline:
            assert found, f"no audit line for {path}"
            return found[-1]
        time.sleep(0.05)


def absolute(origin: OriginProcess, target: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} http://{HOST}:{origin.port}{target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


class RssWatch:
    """Samples the gateway's RSS every 50 ms while a transfer runs; ``growth`` is the peak over
    the start, in KiB."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.baseline = gw.rss_kib()
        self.peak = self.baseline
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.gw.rss_kib())
            time.sleep(0.05)

    def growth(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak - self.baseline


def read_exactly(sock: socket.socket, size: int, already: bytes, pause: Callable[[int], None]) -> str:
    """Read ``size`` body bytes (``already`` first); ``pause(got)`` after each read; the digest."""
    digest = hashlib.sha256(already)
    got = len(already)
    while got < size:
        data = sock.recv(min(1 << 20, size - got))
        assert data, f"the connection was cut after {got} of {size} bytes"
        digest.update(data)
        got += len(data)
        pause(got)
    return digest.hexdigest()


def test_a_download_far_above_max_body_streams_in_bounded_memory(
    egress: GatewayProcess, origin_server: OriginProcess
) -> None:
    size = 64 * MiB
    watch = RssWatch(egress)
    with small_receive_buffer_client(egress_port(egress), timeout=30) as sock:
        sock.sendall(absolute(origin_server, f"/big?bytes={size}"))
        head, start = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert f"\r\ncontent-length: {size}".encode() in head.lower()  # the destination's framing kept
        digest = read_exactly(sock, size, start, lambda got: None)
    grown = watch.growth()
    assert digest == stream_digest(size), "the body arrived changed"
    assert grown < RSS_GROWTH_KIB, f"Sidegate grew by {grown} KiB for a {size >> 20} MiB download"
    line = audit_line(egress, f"/big?bytes={size}")
    assert (line["status"], line["bytes_out"], line["decision"]) == (200, size, "allow"), line


def test_an_app_that_reads_slowly_holds_the_destination_back(
    egress: GatewayProcess, origin_server: OriginProcess
) -> None:
    """The app stops reading for 1 s three times, on a destination whose idle timeout is 500 ms:
    Sidegate stops reading the destination instead of buffering, and its own pause is not the
    destination's silence."""
    size = 32 * MiB
    watch = RssWatch(egress)
    pauses = [8 * MiB, 16 * MiB, 24 * MiB]

    def pause(got: int) -> None:
        if pauses and got >= pauses[0]:
            pauses.pop(0)
            time.sleep(1.0)

    with small_receive_buffer_client(egress_port(egress), timeout=30) as sock:
        sock.sendall(f"GET /big?bytes={size} HTTP/1.1\r\nHost: quick\r\n\r\n".encode())  # named
        head, start = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 "), head
        digest = read_exactly(sock, size, start, pause)
    grown = watch.growth()
    assert digest == stream_digest(size)
    assert not pauses
    assert grown < RSS_GROWTH_KIB, f"Sidegate grew by {grown} KiB while the app paused"


def test_a_chunked_upload_reaches_the_destination_as_it_is_sent(
    egress: GatewayProcess, scripted: ScriptedOrigin
) -> None:
    first_seen = threading.Event()
    seen: list[bytes] = []

    def handler(conn: socket.socket) -> None:
        data = b""
        while b"first piece" not in data:
            data += conn.recv(65536)
        first_seen.set()
        while not data.endswith(b"0\r\n\r\n"):
            data += conn.recv(65536)
        seen.append(data)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    scripted.handler = handler
    with socket.create_connection((HOST, egress_port(egress)), timeout=10) as sock:
        sock.sendall(
            f"POST http://{HOST}:{scripted.port}/upload HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\n\r\nb\r\nfirst piece\r\n".encode()
        )
        assert first_seen.wait(5), "the destination saw nothing before the app sent the last chunk"
        sock.sendall(b"c\r\nsecond piece\r\n0\r\n\r\n")
        response, _ = parse_one(read_until(sock, b"ok"))
    assert response.status == 200
    (raw,) = seen
    assert b"\r\ntransfer-encoding: chunked\r\n" in raw.lower()
    assert raw.endswith(b"\r\n\r\nb\r\nfirst piece\r\nc\r\nsecond piece\r\n0\r\n\r\n")


def read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        more = sock.recv(65536)
        assert more, data
        data += more
    return data


def test_a_chunked_upload_over_max_body_gets_413(
    egress: GatewayProcess, origin_server: OriginProcess
) -> None:
    with socket.create_connection((HOST, egress_port(egress)), timeout=10) as sock:
        sock.sendall(absolute(origin_server, "/echo", "POST", "Transfer-Encoding: chunked\r\n"))
        piece = b"x" * 600
        sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece) * 2 + b"0\r\n\r\n")
        response, _ = parse_one(read_until_closed(sock))
    assert response.status == 413 and response.json()["error"] == "payload_too_large"
    assert "egress.max_body (1000 bytes" in response.json()["reason"]


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while data := sock.recv(65536):
            chunks.append(data)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def test_server_sent_events_arrive_one_by_one(egress: GatewayProcess, origin_server: OriginProcess) -> None:
    """Events 400 ms apart, on a destination whose response timeout is 500 ms: each event comes
    when it is sent, and a stream longer than the response timeout is not cut by it (it runs to
    the head; then only the idle timeout, between reads)."""
    with socket.create_connection((HOST, egress_port(egress)), timeout=10) as sock:
        sock.sendall(b"GET /sse?n=4&interval=0.4 HTTP/1.1\r\nHost: quick\r\n\r\n")
        head, data = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 ") and b"\r\ntransfer-encoding: chunked" in head.lower()
        arrivals: list[float] = []
        while True:
            while data.count(b"data: event") > len(arrivals):
                arrivals.append(time.monotonic())
            if data.endswith(b"0\r\n\r\n"):
                break
            more = sock.recv(65536)
            assert more, data
            data += more
    assert len(arrivals) == 4, data
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap > 0.25 for gap in gaps), gaps  # buffered, they would come together
    assert b"data: event 3" in data


def test_a_destination_dying_mid_body_cuts_the_app_connection(
    egress: GatewayProcess, origin_server: OriginProcess
) -> None:
    raw = base64.urlsafe_b64encode(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"y" * 100).decode()
    target = f"/raw?b64={raw}"
    with socket.create_connection((HOST, egress_port(egress)), timeout=10) as sock:
        sock.sendall(absolute(origin_server, target))
        head, body = read_head(sock)
        body += read_until_closed(sock)  # closed by Sidegate: no 502 can follow a 200 already sent
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\ncontent-length: 1000" in head.lower()
    assert body == b"y" * 100
    line = audit_line(egress, target)
    assert line["status"] == 200 and line["bytes_out"] == 100 and line["closed"] == "destination_failed"
    assert line["reason"].startswith("cut mid-response: "), line


def test_a_destination_silent_mid_body_is_cut_by_the_idle_timeout(
    egress: GatewayProcess, origin_server: OriginProcess
) -> None:
    started = time.monotonic()
    with socket.create_connection((HOST, egress_port(egress)), timeout=10) as sock:
        sock.sendall(b"GET /stall-body HTTP/1.1\r\nHost: quick\r\n\r\n")
        head, body = read_head(sock)
        body += read_until_closed(sock)
    assert head.startswith(b"HTTP/1.1 200 ") and len(body) == 100
    assert time.monotonic() - started < 3  # the 500 ms idle timeout, not the socket's 10 s
    line = audit_line(egress, "/stall-body")
    assert line["closed"] == "destination_failed" and "sent nothing for 0.5s" in line["reason"], line


def test_bodiless_responses_end_at_the_head_and_keep_the_connection(
    egress: GatewayProcess, origin_server: OriginProcess
) -> None:
    with socket.create_connection((HOST, egress_port(egress)), timeout=10) as sock:
        for method, target, status in (
            ("HEAD", "/chunked?n=3", 200),  # a chunked response to HEAD: no body, no chunk
            ("GET", "/status/204", 204),
            ("GET", "/status/304", 304),
            ("GET", "/echo", 200),
        ):
            sock.sendall(absolute(origin_server, target, method))
            data = b""
            while True:
                try:
                    response, end = parse_one(data, method=method, eof=False)
                    break
                except IncompleteError:
                    more = sock.recv(65536)
                    assert more, (target, data)
                    data += more
            assert response.status == status, (target, data)
            assert end == len(data), f"{target}: bytes after the response: {data[end:]!r}"
            if method == "HEAD" or status != 200:
                assert response.body == b"" and b"transfer-encoding" not in data.lower(), data


def test_informational_responses_are_passed_on(egress: GatewayProcess, origin_server: OriginProcess) -> None:
    with socket.create_connection((HOST, egress_port(egress)), timeout=10) as sock:
        sock.sendall(absolute(origin_server, "/early-hints", extra="Connection: close\r\n"))
        data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 103 "), data
    assert b"\r\n\r\nHTTP/1.1 200 " in data


def test_the_destinations_framing_reaches_the_app(
    egress: GatewayProcess, origin_server: OriginProcess
) -> None:
    """Chunked stays chunked; a close-delimited body is re-chunked for an HTTP/1.1 app (whose
    connection stays open) and read until close by an HTTP/1.0 one."""
    with socket.create_connection((HOST, egress_port(egress)), timeout=10) as sock:
        sock.sendall(absolute(origin_server, "/chunked?n=3"))
        chunked = read_until(sock, b"0\r\n\r\n")
        sock.sendall(absolute(origin_server, "/close-delimited"))
        rechunked = read_until(sock, b"0\r\n\r\n")
        sock.sendall(absolute(origin_server, "/echo", "POST", "Content-Length: 2\r\n") + b"hi")
        still_open = read_until(sock, b"hi")
    assert b"\r\ntransfer-encoding: chunked\r\n" in chunked.lower()
    assert b"\r\ntransfer-encoding: chunked\r\n" in rechunked.lower()
    assert still_open.startswith(b"HTTP/1.1 200 ")
    with socket.create_connection((HOST, egress_port(egress)), timeout=10) as sock:
        sock.sendall(f"GET http://{HOST}:{origin_server.port}/close-delimited HTTP/1.0\r\n\r\n".encode())
        old = read_until_closed(sock)
    head, _, body = old.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower() and body


def test_calls_leave_nothing_behind(egress: GatewayProcess, origin_server: OriginProcess) -> None:
    """Thousands of calls on one keep-alive connection: Sidegate's memory stays flat (a call and its
    leg refer to each other while the call runs; once over, nothing keeps either)."""
    request = absolute(origin_server, "/status/204")
    with socket.create_connection((HOST, egress_port(egress)), timeout=10) as sock:
        for _ in range(200):  # warm up: pools, caches, allocator arenas
            sock.sendall(request)
            read_until(sock, b"\r\n\r\n")
        baseline = egress.rss_kib()
        for _ in range(6000):
            sock.sendall(request)
            read_until(sock, b"\r\n\r\n")
        grown = egress.rss_kib() - baseline
    assert grown < 4 * 1024, f"Sidegate grew by {grown} KiB over 6000 calls"

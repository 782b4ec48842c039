"""Backpressure is not the peer's fault: a client that reads slowly, or an app that reads an upload
slowly, makes Sidegate stop reading from the other side, and that silence must not be held against
the other side (idle timeout, body idle). A peer that takes nothing at all is cut by the send
timeout instead, with its own response flag.

Scaled from the issue's figures (512 MiB at 64 KiB/s, 48 MiB at 64 KiB/s) to seconds: idle
timeouts of 1 s, and peers that stop for 1.5 s at a time, several times per transfer.
``bench/slow_peers.py`` runs the full-size scenario.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.gateway import GatewayFactory, GatewayProcess, OriginProcess, get, http_get, request
from support.slow_peers import (
    BLOCK,
    SlowApp,
    read_head,
    small_receive_buffer_client,
    stream_digest,
    tcp_state,
)

pytestmark = pytest.mark.timeout(90)

MiB = 1024 * 1024
PAUSE = 1.5  # longer than every idle timeout below (1 s), shorter than the client's send timeout
SEND_TIMEOUT = 4.0  # the client's
UPSTREAM_SEND_TIMEOUT = 1.5  # the app's, on the routes to the stuck app
RSS_GROWTH_KIB = 16 * 1024  # bounded: far below the bodies (64 MiB down, 32 MiB up)


@pytest.fixture(scope="module")
def app() -> Iterator[SlowApp]:
    slow = SlowApp()
    yield slow
    slow.close()


@pytest.fixture(scope="module")
def access_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("log") / "access.log"


@pytest.fixture(scope="module")
def gw(
    gateway_module: GatewayFactory, app: SlowApp, access_log: Path, origin_server: OriginProcess
) -> GatewayProcess:
    idle = {"idle": "1s"}
    stuck = {"idle": "1s", "send": f"{UPSTREAM_SEND_TIMEOUT}s"}
    fresh = {"path_prefix": "/big", "headers": {"x-fresh": "1"}}  # a new connection per request
    routes = [
        {"name": "fresh", "match": fresh, "upstream": "fresh", "timeouts": idle},
        {"name": "big", "match": {"path_prefix": "/big"}, "upstream": "app", "timeouts": idle},
        {
            "name": "steady",
            "match": {"path_prefix": "/upload", "headers": {"x-steady": "1"}},
            "upstream": "slow",
            "timeouts": {"idle": "1s", "response": "1s"},
        },
        {"name": "upload", "match": {"path_prefix": "/upload"}, "upstream": "slow", "timeouts": idle},
        {"name": "stuck", "match": {"path_prefix": "/stuck"}, "upstream": "slow", "timeouts": stuck},
        {"name": "tstuck", "match": {"path_prefix": "/tunnel-stuck"}, "upstream": "slow", "timeouts": stuck},
        {"name": "tslow", "match": {"path_prefix": "/tunnel-slow"}, "upstream": "slow", "timeouts": idle},
        {"name": "tunnel", "match": {"path_prefix": "/tunnel"}, "upstream": "slow", "timeouts": idle},
    ]
    for route in routes[2:5]:
        route["max_body"] = 0  # no limit: the uploads here are big on purpose
    return gateway_module(
        routes=routes,
        upstreams={
            "slow": {"endpoints": [app.address]},
            "fresh": {"endpoints": [origin_server.address], "pool": {"max_idle": 0}},
        },
        limits={"body_idle": "1s", "send_timeout": f"{SEND_TIMEOUT}s"},
        observability={"access_log": {"enabled": True, "path": str(access_log)}},
        drain_timeout="1s",
    )


def log_line(path: Path, head: bytes, timeout: float = 5.0) -> dict[str, Any]:
    """The access log line of the request that got the response ``head`` (by its request id)."""
    request_id = head.split(b"X-Request-Id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        found = [json.loads(line) for line in text.splitlines() if f'"request_id":"{request_id}"' in line]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, f"{len(found)} access lines for {request_id}:\n{text[-3000:]}"
            return found[0]
        time.sleep(0.05)


def read_body(sock: socket.socket, head: bytes, start: bytes) -> bytes:
    """The rest of a (small) Content-Length body."""
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = start
    while len(body) < length:
        more = sock.recv(65536)
        assert more, f"closed inside the body: {body!r}"
        body += more
    return body


def explain(gw: GatewayProcess, request_id: str) -> dict[str, Any]:
    status, body = http_get(gw.admin_port, f"/explain/{request_id}")
    assert status == 200, (status, body[:300])
    record: dict[str, Any] = json.loads(body)
    return record


def wait_for(what: str, check: Any, timeout: float) -> float:
    """Poll ``check()`` until true; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)
    return time.monotonic()


def upgrade(path: str) -> bytes:
    return request("GET", path, headers={"Connection": "Upgrade", "Upgrade": "raw"})


def read_slowly(
    sock: socket.socket, gw: GatewayProcess, size: int, already: bytes, pause_every: int
) -> tuple[str, int]:
    """Read ``size`` body bytes (``already`` first), stopping for PAUSE after every ``pause_every``
    bytes; returns the digest and the gateway's largest RSS seen at the end of a pause."""
    digest = hashlib.sha256(already)
    got = len(already)
    peak = 0
    next_pause = pause_every
    while got < size:
        data = sock.recv(min(1 << 20, size - got))
        assert data, f"the connection was cut after {got} of {size} bytes"
        digest.update(data)
        got += len(data)
        if got >= next_pause and got < size:
            time.sleep(PAUSE)
            peak = max(peak, gw.rss_kib())
            next_pause += pause_every
    return digest.hexdigest(), peak


# --- slow peers complete ---------------------------------------------------------------------


def test_slow_reader_of_a_big_download_gets_all_of_it(
    gw: GatewayProcess, origin: OriginProcess, access_log: Path
) -> None:
    """64 MiB to a client that stops reading for 1.5 s three times, on a route whose idle timeout
    is 1 s: the app's silence while Sidegate does not read it is not an idle app."""
    size = 64 * MiB
    baseline = gw.rss_kib()
    with small_receive_buffer_client(gw.port) as sock:
        sock.sendall(get(f"/big?bytes={size}"))
        head, start = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert f"content-length: {size}".encode() in head.lower()
        digest, peak = read_slowly(sock, gw, size, start, pause_every=16 * MiB)
    assert digest == stream_digest(size), "the body arrived changed"
    assert peak - baseline < RSS_GROWTH_KIB, f"Sidegate grew by {peak - baseline} KiB"
    line = log_line(access_log, head)
    assert (line["status"], line["flags"], line["bytes_sent"]) == (200, "", size), line


def test_upload_to_an_app_that_reads_slowly_completes(
    gw: GatewayProcess, app: SlowApp, access_log: Path
) -> None:
    """32 MiB to an app that reads 8 MiB, then nothing for 1.5 s, with body_idle 1 s: the client
    is not stalling, Sidegate is holding it back, so there is no 408."""
    size = 32 * MiB
    baseline = gw.rss_kib()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        sender = _Uploader(sock, request("POST", f"/upload?burst={8 * MiB}&pause={PAUSE}", None,
                                         headers={"Content-Length": str(size)}), size)  # fmt: skip
        peak = 0
        while sender.is_alive():
            peak = max(peak, gw.rss_kib())
            time.sleep(0.2)
        assert sender.error is None, sender.error
        head, start = read_head(sock)
        body = read_body(sock, head, start)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body) == {"bytes": size, "sha256": stream_digest(size)}
    assert peak - baseline < RSS_GROWTH_KIB, f"Sidegate grew by {peak - baseline} KiB"
    line = log_line(access_log, head)
    assert (line["status"], line["flags"], line["bytes_received"]) == (200, "", size), line


def test_pipelined_download_waits_for_the_slow_reader_too(gw: GatewayProcess, origin: OriginProcess) -> None:
    """Two big downloads pipelined: the second starts (on a new connection to the app) while the
    client has not yet taken the end of the first, and must not stream into Sidegate's memory
    meanwhile."""
    size = 32 * MiB
    baseline = gw.rss_kib()
    with small_receive_buffer_client(gw.port) as sock:
        sock.sendall(get(f"/big?bytes={size}", headers={"X-Fresh": "1"}) * 2)
        for index in range(2):
            head, start = read_head(sock)
            assert head.startswith(b"HTTP/1.1 200"), head
            digest = hashlib.sha256(start)
            got = len(start)
            while got < size:
                data = sock.recv(min(1 << 20, size - got))
                assert data, f"response {index + 1} was cut after {got} of {size} bytes"
                digest.update(data)
                got += len(data)
                if index == 0 and size - got < 256 * 1024 and got - len(data) <= size - 256 * 1024:
                    time.sleep(PAUSE)  # the first is all but read: the second is under way
                    grown = gw.rss_kib() - baseline
                    assert grown < RSS_GROWTH_KIB, f"Sidegate grew by {grown} KiB while the client paused"
            assert digest.hexdigest() == stream_digest(size), f"response {index + 1} arrived changed"


def test_response_timeout_waits_until_the_app_has_taken_the_upload(gw: GatewayProcess) -> None:
    """8 MiB to an app that reads 2 MiB/s steadily, on a route whose response timeout is 1 s: much
    of the body is still in the socket buffers when Sidegate has written it all, and the app's
    time to answer starts only once it has taken the body."""
    size = 8 * MiB
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        target = f"/upload?burst={64 * 1024}&pause=0.03125"
        headers = {"Content-Length": str(size), "X-Steady": "1"}
        sender = _Uploader(sock, request("POST", target, None, headers=headers), size)
        head, start = read_head(sock)
        body = read_body(sock, head, start)
        sender.join(10)
    assert head.startswith(b"HTTP/1.1 200"), (head, body)
    assert json.loads(body) == {"bytes": size, "sha256": stream_digest(size)}


def test_slow_reader_of_a_tunnel_gets_all_of_it(gw: GatewayProcess, app: SlowApp) -> None:
    """After a 101 the idle timeout (1 s) measures both peers; a client that stops reading is
    not an idle app either."""
    size = 32 * MiB
    with small_receive_buffer_client(gw.port) as sock:
        sock.sendall(upgrade(f"/tunnel?bytes={size}"))
        head, start = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101"), head
        digest, _ = read_slowly(sock, gw, size, start, pause_every=8 * MiB)
    assert digest == stream_digest(size), "the tunnel's bytes arrived changed"


def test_tunnel_to_an_app_that_reads_slowly_completes(gw: GatewayProcess, app: SlowApp) -> None:
    """The other way through a tunnel: 24 MiB to an app that reads 8 MiB, then nothing for 1.5 s,
    with an idle timeout of 1 s: the client is silent only because Sidegate holds it back."""
    size = 24 * MiB
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        sock.sendall(upgrade(f"/tunnel-slow?bytes={size}&burst={8 * MiB}&pause={PAUSE}"))
        head, start = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101"), head
        sender = _Uploader(sock, b"", size)
        answer = start
        while len(answer) < 64:
            more = sock.recv(64)
            assert more, f"the tunnel closed before the app's answer (sent: {sender.error!r})"
            answer += more
        sender.join(10)
    assert sender.error is None, sender.error
    assert answer.decode() == stream_digest(size), "the tunnel's bytes arrived changed"


# --- peers that take nothing are cut -----------------------------------------------------------


def test_client_that_stops_reading_is_cut_after_send_timeout(
    gw: GatewayProcess, origin: OriginProcess, access_log: Path
) -> None:
    before = gw.metric("sidegate_client_send_timeouts_total") or 0
    size = 256 * MiB
    with small_receive_buffer_client(gw.port) as sock:
        sock.sendall(get(f"/big?bytes={size}"))
        started = time.monotonic()
        head, _ = read_head(sock)
        (big,) = origin.wait_for(1)
        cut = wait_for(
            "the client was cut",
            lambda: (gw.metric("sidegate_client_send_timeouts_total") or 0) > before,
            SEND_TIMEOUT + 10,
        )
        assert cut - started > SEND_TIMEOUT - 0.5, "cut before send_timeout"
        sock.settimeout(5)
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(1 << 20):
                received += len(data)
        assert received < size, "the whole body arrived: nothing was cut"
    line = log_line(access_log, head)
    assert line["status"] == 200 and line["flags"] == "client_send_timeout", line
    assert 0 < line["bytes_sent"] < size, line
    assert explain(gw, line["request_id"])["response_flags"] == "client_send_timeout"
    wait_for("the app's connection closed", lambda: big.peer_port not in origin.state()["open"], 3)


def test_app_that_stops_reading_an_upload_gets_504(
    gw: GatewayProcess, app: SlowApp, access_log: Path
) -> None:
    """The app reads the head and never the body: the client learns it from a 504 after the
    route's send timeout (1.5 s), not a 408 after body_idle (1 s) blaming it."""
    before = gw.metric("sidegate_upstream_failures_total", kind="send_timeout") or 0
    size = 64 * MiB
    with socket.create_connection(("127.0.0.1", gw.port), timeout=15) as sock:
        started = time.monotonic()
        _Uploader(sock, request("POST", "/stuck", None, headers={"Content-Length": str(size)}), size)
        head, start = read_head(sock)
        elapsed = time.monotonic() - started
        body = read_body(sock, head, start)
    assert head.startswith(b"HTTP/1.1 504"), head
    assert json.loads(body)["error"] == "send_timeout", body
    assert UPSTREAM_SEND_TIMEOUT - 0.3 < elapsed < UPSTREAM_SEND_TIMEOUT + 6, elapsed
    line = log_line(access_log, head)
    assert (line["status"], line["flags"]) == (504, "upstream_send_timeout"), line
    record = explain(gw, line["request_id"])
    assert record["response_flags"] == "upstream_send_timeout"
    assert "send_timeout" in record["upstream"]["tries"][0]["result"], record
    held = app.wait_held()
    wait_for("the app's connection closed", lambda: tcp_state(held) != "ESTABLISHED", 3)
    assert (gw.metric("sidegate_upstream_failures_total", kind="send_timeout") or 0) == before + 1


def test_tunnel_client_that_stops_reading_is_cut(gw: GatewayProcess, access_log: Path) -> None:
    with small_receive_buffer_client(gw.port) as sock:
        sock.sendall(upgrade(f"/tunnel?bytes={256 * MiB}"))
        head, _ = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101"), head
        line = log_line(access_log, head, timeout=SEND_TIMEOUT + 10)
    assert (line["status"], line["flags"]) == (101, "client_send_timeout"), line


def test_tunnel_app_that_stops_reading_is_cut(gw: GatewayProcess, app: SlowApp, access_log: Path) -> None:
    held_before = len(app.held)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=15) as sock:
        sock.sendall(upgrade("/tunnel-stuck"))
        head, _ = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101"), head
        uploader = _Uploader(sock, b"", 64 * MiB)
        line = log_line(access_log, head, timeout=UPSTREAM_SEND_TIMEOUT + 10)
        uploader.join(10)
        assert uploader.error is not None, "all 64 MiB went into a tunnel whose app reads nothing"
    assert (line["status"], line["flags"]) == (101, "upstream_send_timeout"), line
    held = app.wait_held(held_before + 1)
    wait_for("the app's connection closed", lambda: tcp_state(held) != "ESTABLISHED", 3)


class _Uploader(threading.Thread):
    """Sends ``head`` and ``size`` bytes of the stream on ``sock`` (blocking, in a thread)."""

    def __init__(self, sock: socket.socket, head: bytes, size: int) -> None:
        super().__init__(daemon=True)
        self.sock, self.head, self.size = sock, head, size
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.sock.sendall(self.head)
            sent = 0
            while sent < self.size:
                piece = BLOCK[: min(len(BLOCK), self.size - sent)]
                self.sock.sendall(piece)
                sent += len(piece)
        except OSError as exc:
            self.error = exc

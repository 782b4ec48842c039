"""The admin listener on a real event loop (asyncio and uvloop), spoken to over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvloop

from sidegate.admin import AdminLimits, AdminRequest, AdminResponse, start_admin_server


class FakeBackend:
    """Stands in for the runtime: every answer is a settable attribute."""

    def __init__(self) -> None:
        self.live = True
        self.ready: tuple[bool, str] = (True, "config loaded, upstreams reachable")
        self.metrics = b"# TYPE sidegate_requests_active gauge\nsidegate_requests_active 0\n"
        self.version = 1
        self.reload_error = ""
        self.reloads = 0
        self.reloading = 0
        self.max_concurrent_reloads = 0

    def is_live(self) -> bool:
        return self.live

    def readiness(self) -> tuple[bool, str]:
        return self.ready

    def metrics_text(self, openmetrics: bool = False) -> bytes:
        return self.metrics

    def config_dump(self) -> dict[str, Any]:
        return {"version": self.version, "config": {"routes": [{"name": "all"}]}, "last_error": None}

    async def reload(self) -> tuple[bool, str]:
        self.reloading += 1
        self.max_concurrent_reloads = max(self.max_concurrent_reloads, self.reloading)
        await asyncio.sleep(0.01)
        self.reloading -= 1
        self.reloads += 1
        if self.reload_error:
            return False, self.reload_error
        self.version += 1
        return True, f"version {self.version} loaded"


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.body)


class Client:
    """A raw HTTP/1.1 client on asyncio streams: exact bytes out, responses parsed strictly."""

    opened: list[Client] = []  # closed by the ``run`` fixture after each scenario

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        Client.opened.append(self)

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, *, head_only: bool = False) -> Resp:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, _ = status_line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"duplicate {name}"
            headers[name.lower()] = value.strip()
        length = int(headers["content-length"])  # every response has one
        body = b"" if head_only else await self.reader.readexactly(length)
        return Resp(int(status), headers, body)

    async def request(self, method: str, path: str, body: bytes = b"", extra: str = "") -> Resp:
        length = f"Content-Length: {len(body)}\r\n" if body or method == "POST" else ""
        await self.send(f"{method} {path} HTTP/1.1\r\nHost: admin\r\n{length}{extra}\r\n".encode() + body)
        return await self.response(head_only=method == "HEAD")

    async def closed_by_server(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 2) == b""

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        with contextlib.suppress(OSError):  # reset by the server: closed all the same
            await self.writer.wait_closed()


Scenario = Callable[[int, FakeBackend], Awaitable[Any]]
Run = Callable[..., Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """``run(scenario, **server_kwargs)``: start a server on a free port and play the scenario."""
    loop_factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(scenario: Scenario, backend: FakeBackend | None = None, **kwargs: Any) -> Any:
        fake = backend or FakeBackend()

        async def main() -> Any:
            server = await start_admin_server("127.0.0.1", 0, fake, **kwargs)
            port = server.sockets[0].getsockname()[1]
            try:
                return await asyncio.wait_for(scenario(port, fake), 10)
            finally:
                for client in Client.opened:
                    await client.close()
                Client.opened.clear()
                server.close()
                await server.wait_closed()
                await asyncio.sleep(0.01)  # let server-side connections see the clients' close

        with asyncio.Runner(loop_factory=loop_factory) as r:
            return r.run(main())

    yield runner


def test_probe_endpoints(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)
        r = await c.request("GET", "/live")
        assert (r.status, r.json()) == (200, {"status": "live"})
        r = await c.request("GET", "/ready")
        assert (r.status, r.json()) == (
            200,
            {"status": "ready", "reason": "config loaded, upstreams reachable"},
        )
        assert r.headers["cache-control"] == "no-store" and "date" in r.headers

        backend.ready = (False, "draining")
        backend.live = False
        r = await c.request("GET", "/ready")
        assert (r.status, r.json()) == (503, {"status": "not_ready", "reason": "draining"})
        r = await c.request("GET", "/live")
        assert r.status == 503
        await c.close()

    run(scenario)


def test_metrics_and_config_dump(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)
        r = await c.request("GET", "/metrics")
        assert r.status == 200
        assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert r.body == backend.metrics
        r = await c.request("GET", "/config_dump")
        assert r.status == 200 and r.json() == backend.config_dump()
        assert b"\n  " in r.body  # pretty-printed for humans
        await c.close()

    run(scenario)


def test_head_is_get_without_body(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)
        r = await c.request("HEAD", "/metrics")
        assert r.status == 200 and r.body == b""
        assert int(r.headers["content-length"]) == len(backend.metrics)
        # No stray body bytes: the next response on the connection parses cleanly.
        r = await c.request("GET", "/live")
        assert r.json() == {"status": "live"}
        await c.close()

    run(scenario)


def test_reload_ok_rejected_and_wrong_method(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)
        r = await c.request("POST", "/reload")
        assert r.status == 200
        assert r.json() == {"status": "reloaded", "message": "version 2 loaded", "version": 2}

        backend.reload_error = "routes[0].upstream: unknown upstream 'nope' (line 9)"
        r = await c.request("POST", "/reload", body=b"{}")
        assert (r.status, r.json()) == (400, {"status": "rejected", "error": backend.reload_error})
        assert backend.version == 2  # the old config keeps serving

        r = await c.request("GET", "/reload")
        assert r.status == 405 and r.headers["allow"] == "POST"
        r = await c.request("POST", "/live")
        assert r.status == 405 and r.headers["allow"] == "GET, HEAD"
        assert r.json()["error"] == "method_not_allowed"
        await c.close()

    run(scenario)


def test_concurrent_reloads_are_serialised(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        clients = [await Client.connect(port) for _ in range(4)]
        results = await asyncio.gather(*(c.request("POST", "/reload") for c in clients))
        assert [r.status for r in results] == [200] * 4
        assert backend.reloads == 4 and backend.max_concurrent_reloads == 1
        for c in clients:
            await c.close()

    run(scenario)


def test_unknown_path_lists_endpoints(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)
        r = await c.request("GET", "/nope?x=1")
        assert r.status == 404
        body = r.json()
        assert body["error"] == "not_found"
        assert set(body["endpoints"]) >= {"GET /live", "GET /ready", "GET /metrics", "POST /reload"}
        r = await c.request("GET", "/live")  # a 404 keeps the connection
        assert r.status == 200
        await c.close()

    run(scenario)


def test_keep_alive_with_http_client(run: Run) -> None:
    """The standard library client reuses one connection for several requests."""

    def blocking(port: int) -> list[tuple[int, bytes]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        out = []
        for method, path in (("GET", "/live"), ("POST", "/reload"), ("GET", "/ready")):
            conn.request(method, path)
            resp = conn.getresponse()
            out.append((resp.status, resp.read()))
            assert not resp.will_close
        sock = conn.sock
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        out.append((resp.status, resp.read()))
        assert conn.sock is sock  # still the first connection
        conn.close()
        return out

    async def scenario(port: int, backend: FakeBackend) -> None:
        results = await asyncio.to_thread(blocking, port)
        assert [s for s, _ in results] == [200, 200, 200, 200]
        assert json.loads(results[0][1]) == {"status": "live"}

    run(scenario)


def test_pipelined_requests_answered_in_order(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)
        await c.send(
            b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
            b"GET /live HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        statuses = [(await c.response()).status for _ in range(4)]
        assert statuses == [200, 200, 404, 200]
        assert await c.closed_by_server()

    run(scenario)


def test_connection_close_and_http10(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)
        r = await c.request("GET", "/live", extra="Connection: close\r\n")
        assert r.status == 200 and r.headers["connection"] == "close"
        assert await c.closed_by_server()

        c = await Client.connect(port)
        await c.send(b"GET /live HTTP/1.0\r\n\r\n")
        r = await c.response()
        assert r.status == 200 and await c.closed_by_server()

        c = await Client.connect(port)  # HTTP/1.0 keep-alive is confirmed, then honoured
        await c.send(b"GET /live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = await c.response()
        assert r.status == 200 and r.headers["connection"] == "keep-alive"
        assert (await c.request("GET", "/ready")).status == 200

    run(scenario)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
        b"GARBAGE\r\n\r\n",
        b"GET /live HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /reload HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /live HTTP/1.1\r\nBad Header: x\r\n\r\n",
    ],
)
def test_malformed_request_is_400_and_close(run: Run, raw: bytes) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)
        await c.send(raw)
        r = await c.response()
        assert r.status == 400 and r.headers["connection"] == "close"
        assert r.json()["error"] == "bad_request" and r.json()["reason"]
        assert await c.closed_by_server()

    run(scenario)


def test_good_request_before_garbage_is_answered(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)
        await c.send(b"GET /live HTTP/1.1\r\nHost: a\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
        assert (await c.response()).status == 200
        assert (await c.response()).status == 400
        assert await c.closed_by_server()

    run(scenario)


def test_body_limit(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)  # exactly 1 MiB is fine
        r = await c.request("POST", "/reload", body=b"x" * (1024 * 1024))
        assert r.status == 200

        c2 = await Client.connect(port)  # declared too large: refused before the body is sent
        await c2.send(b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n")
        r = await c2.response()
        assert r.status == 413 and r.headers["connection"] == "close"
        assert r.json()["error"] == "content_too_large"
        assert await c2.closed_by_server()

        c3 = await Client.connect(port)  # chunked, grows past the limit
        chunk = b"%x\r\n%s\r\n" % (600 * 1024, b"y" * 600 * 1024)
        await c3.send(b"POST /reload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2)
        r = await c3.response()
        assert r.status == 413 and await c3.closed_by_server()
        await c.close()

    run(scenario)


def test_head_limits(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)
        many = "".join(f"X-H{i}: v\r\n" for i in range(101))
        r = await c.request("GET", "/live", extra=many)
        assert r.status == 431 and await c.closed_by_server()
        c = await Client.connect(port)
        r = await c.request("GET", "/live?" + "a" * 9000)
        assert r.status == 414 and await c.closed_by_server()

    run(scenario)


def test_timeouts(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        slow = await Client.connect(port)
        await slow.send(b"GET /live HTTP/1.1\r\nHost: a\r\n")  # never finishes its head
        r = await slow.response()
        assert r.status == 408 and await slow.closed_by_server()

        idle = await Client.connect(port)
        assert (await idle.request("GET", "/live")).status == 200
        assert await idle.closed_by_server()  # quietly, no response bytes

    run(scenario, limits=AdminLimits(request_timeout=0.2, idle_timeout=0.3))


def test_extra_routes_and_handler_errors(run: Run) -> None:
    async def purge(req: AdminRequest) -> AdminResponse:
        await asyncio.sleep(0)
        return AdminResponse.json(200, {"purged": req.query.get("prefix", []), "bytes": len(req.body)})

    def broken(_: AdminRequest) -> AdminResponse:
        raise RuntimeError("boom")

    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)
        r = await c.request("POST", "/cache/purge?prefix=/a&prefix=/b", body=b"abc")
        assert r.json() == {"purged": ["/a", "/b"], "bytes": 3}
        r = await c.request("GET", "/broken")
        assert r.status == 500 and "boom" in r.json()["reason"]
        r = await c.request("GET", "http://admin:9901/live")  # absolute-form target
        assert r.status == 200
        await c.close()

    run(scenario, routes={("POST", "/cache/purge"): purge, ("GET", "/broken"): broken})


def test_upgrade_is_answered_then_closed(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)
        r = await c.request("GET", "/live", extra="Connection: upgrade\r\nUpgrade: websocket\r\n")
        assert r.status == 200 and r.headers["connection"] == "close"
        assert await c.closed_by_server()

    run(scenario)


def test_serves_on_a_given_socket() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    async def main() -> Resp:
        server = await start_admin_server("ignored", 0, FakeBackend(), sock=sock)
        c = await Client.connect(port)
        try:
            return await c.request("GET", "/live")
        finally:
            await c.close()
            Client.opened.clear()
            server.close()
            await server.wait_closed()

    assert asyncio.run(main()).status == 200


def test_half_closed_client_still_gets_its_answer(run: Run) -> None:
    async def scenario(port: int, backend: FakeBackend) -> None:
        c = await Client.connect(port)
        await c.send(
            b"GET /live HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
        )
        c.writer.write_eof()  # like `printf ... | nc -N`
        assert (await c.response()).status == 200
        assert (await c.response()).json()["status"] == "reloaded"
        assert await c.closed_by_server()

    run(scenario)


def test_slow_reader_and_deep_pipeline(run: Run) -> None:
    """Backpressure both ways: big responses to a client that reads late, many queued requests."""

    async def scenario(port: int, backend: FakeBackend) -> None:
        backend.metrics = b"x" * (4 * 1024 * 1024)
        c = await Client.connect(port)
        await c.send(
            b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" * 5 + b"GET /live HTTP/1.1\r\nHost: a\r\n\r\n" * 60
        )
        await asyncio.sleep(0.2)  # the server fills the socket buffers and must wait
        for _ in range(5):
            r = await c.response()
            assert r.status == 200 and len(r.body) == len(backend.metrics)
        for _ in range(60):
            assert (await c.response()).status == 200
        assert (await c.request("GET", "/ready")).status == 200

    run(scenario)

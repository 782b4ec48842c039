"""Keys refreshed without a restart: a JWKS file rotated on disk, a JWKS URL served on loopback."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from sidegate.auth.jwks import JwksSource
from sidegate.policy.jwt import UnknownKeyError, Verifier
from support.jwt_tokens import SigningKey, jwks, make_ec, make_ed25519, make_rsa, sign

ES256 = frozenset({"ES256"})


@pytest.fixture(scope="module")
def key_a() -> SigningKey:
    return make_ec("P-256", kid="a")


@pytest.fixture(scope="module")
def key_b() -> SigningKey:
    return make_ec("P-256", kid="b")


def _write(path: Path, doc: dict[str, Any] | bytes) -> None:
    """Replace the file the way Kubernetes does (a new file renamed over the old: a new inode)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    os.replace(tmp, path)


def _kids(source: JwksSource) -> list[str | None]:
    keys = source.keys()  # (a method of our own, not dict.keys)
    return [key.kid for key in keys]


# --- file ---------------------------------------------------------------------------------------------


def test_file_rotated_on_disk_is_picked_up(tmp_path: Path, key_a: SigningKey, key_b: SigningKey) -> None:
    path = tmp_path / "jwks.json"
    _write(path, jwks(key_a))
    source = JwksSource(file=str(path), algorithms=ES256)
    assert source.keys() == () and source.version() == 0
    source.load_now()
    assert _kids(source) == ["a"] and source.version() == 1
    assert source.maybe_refresh(100.0) is None
    assert source.version() == 1  # unchanged file: nothing re-read

    _write(path, jwks(key_b))
    assert source.maybe_refresh(100.5) is None
    assert _kids(source) == ["a"]  # checked at most once a second
    assert source.maybe_refresh(101.0) is None
    assert _kids(source) == ["b"] and source.version() == 2
    token = sign({"sub": "x"}, key_b).encode()
    assert Verifier(source.keys(), issuer=None).verify(token, time.time()) == {"sub": "x"}


def test_file_rewritten_in_place_with_the_same_keys_keeps_the_version(
    tmp_path: Path, key_a: SigningKey
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(key_a)))
    source = JwksSource(file=str(path), algorithms=ES256)
    source.maybe_refresh(0.0)  # the first check loads, like load_now
    assert _kids(source) == ["a"] and source.version() == 1
    path.write_text(json.dumps(jwks(key_a), indent=2))  # same keys, other bytes, same inode
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    source.maybe_refresh(1.0)
    assert source.version() == 1


def test_bad_or_missing_file_keeps_the_old_keys(
    tmp_path: Path, key_a: SigningKey, key_b: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jwks.json"
    _write(path, jwks(key_a))
    source = JwksSource(file=str(path), algorithms=ES256)
    source.load_now()
    caplog.set_level(logging.WARNING, logger="sidegate.auth.jwks")

    _write(path, b'{"keys": [{"kty": "EC", "crv": "P-256", "kid": "broken", "x": "!", "y": "!"}]}')
    source.maybe_refresh(1.0)
    assert _kids(source) == ["a"]
    assert "key 0 (kid 'broken'): \"x\" is not base64url; keeping 1 keys" in caplog.text
    caplog.clear()
    source.maybe_refresh(2.0)
    assert caplog.text == ""  # the same bad file is reported once

    path.unlink()
    source.maybe_refresh(3.0)
    assert _kids(source) == ["a"]
    assert "No such file or directory; keeping 1 keys" in caplog.text

    _write(path, jwks(key_b))
    source.maybe_refresh(4.0)
    assert _kids(source) == ["b"]


def test_load_now_says_what_is_wrong(tmp_path: Path, key_a: SigningKey) -> None:
    path = tmp_path / "jwks.json"
    with pytest.raises(ValueError, match=r"cannot read JWKS file .*jwks\.json: No such file"):
        JwksSource(file=str(path), algorithms=None).load_now()
    path.write_text('{"keys": [{"kty": "RSA", "kid": "r", "alg": "RS256"}]}')
    with pytest.raises(ValueError, match="key 0 \\(kid 'r'\\): \"n\" is missing"):
        JwksSource(file=str(path), algorithms=None).load_now()
    _write(path, jwks(make_rsa(kid="r"), with_alg=False))
    with pytest.raises(ValueError, match="no usable signing key"):  # RS or PS? never guessed
        JwksSource(file=str(path), algorithms=None).load_now()
    source = JwksSource(file=str(path), algorithms=frozenset({"PS384"}))
    source.load_now()
    assert source.keys()[0].alg == "PS384" and len(source.keys()) == 1


def test_source_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="exactly one of file and url"):
        JwksSource(algorithms=None)
    with pytest.raises(ValueError, match="exactly one of file and url"):
        JwksSource(file="a", url="http://b/", algorithms=None)
    with pytest.raises(ValueError, match="http:// or https://"):
        JwksSource(url="file:///etc/jwks.json", algorithms=None)
    with pytest.raises(ValueError, match="no spaces"):
        JwksSource(url="http://idp/jwks HTTP/1.1\r\nX-Injected: 1", algorithms=None)
    with pytest.raises(ValueError, match="reads a JWKS file"):
        JwksSource(url="http://127.0.0.1:1/jwks", algorithms=None).load_now()


# --- url ----------------------------------------------------------------------------------------------


class JwksServer:
    """A real HTTP server on loopback answering every request with ``body`` in the chosen framing."""

    def __init__(self) -> None:
        self.body = b"{}"
        self.status = b"200 OK"
        self.framing = "length"  # "length", "chunked", "close" or "stall"
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> JwksServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, path: str = "/.well-known/jwks.json") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, doc: dict[str, Any] | bytes) -> None:
        self.body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._answer(await reader.readuntil(b"\r\n\r\n"), writer)
        finally:
            writer.close()

    async def _answer(self, request: bytes, writer: asyncio.StreamWriter) -> None:
        self.requests.append(request)
        if self.framing == "stall":
            await asyncio.sleep(30)
        head = b"HTTP/1.1 " + self.status + b"\r\nContent-Type: application/json\r\n"
        if self.framing == "length":
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(self.body) + self.body)
        elif self.framing == "chunked":
            writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n")
            for start in range(0, len(self.body), 100):
                piece = self.body[start : start + 100]
                writer.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(head + b"Connection: close\r\n\r\n" + self.body)
        await writer.drain()


async def _run(awaitable: Awaitable[None] | None) -> None:
    assert awaitable is not None, "a fetch was due"
    await awaitable


def test_url_is_fetched_and_rotation_picked_up_on_unknown_kid(key_a: SigningKey, key_b: SigningKey) -> None:
    async def main() -> None:
        async with JwksServer() as server:
            server.serve(jwks(key_a))
            source = JwksSource(url=server.url(), algorithms=ES256, refresh=300.0, min_refetch=10.0)
            assert source.keys() == ()
            await _run(source.maybe_refresh(1000.0))
            assert _kids(source) == ["a"] and source.version() == 1
            assert server.requests[0].startswith(b"GET /.well-known/jwks.json HTTP/1.1\r\n")
            assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in server.requests[0]

            server.serve(jwks(key_a, key_b))  # the provider rotates
            verifier = Verifier(source.keys(), issuer=None)
            token = sign({"sub": "bob"}, key_b).encode()
            with pytest.raises(UnknownKeyError):
                verifier.verify(token, time.time())
            assert source.maybe_refresh(1001.0, unknown_kid=True) is None  # min_refetch not passed
            assert source.maybe_refresh(1009.9, unknown_kid=True) is None
            assert source.maybe_refresh(1011.0) is None  # no unknown kid: wait for `refresh`
            await _run(source.maybe_refresh(1011.0, unknown_kid=True))
            assert _kids(source) == ["a", "b"] and source.version() == 2
            assert Verifier(source.keys(), issuer=None).verify(token, time.time()) == {"sub": "bob"}
            assert len(server.requests) == 2

            assert source.maybe_refresh(1300.0) is None
            server.serve(jwks(key_b))
            await _run(source.maybe_refresh(1311.0))  # `refresh` passed since the last fetch
            assert _kids(source) == ["b"] and source.version() == 3
            await _run(source.maybe_refresh(1611.0))
            assert source.version() == 3  # the same keys again: same version

    asyncio.run(main())


def test_refresh_runs_even_if_nobody_awaits_it(key_a: SigningKey, key_b: SigningKey) -> None:
    async def main() -> None:
        async with JwksServer() as server:
            server.serve(jwks(key_a))
            source = JwksSource(url=server.url(), algorithms=ES256, refresh=300.0)
            assert source.maybe_refresh(0.0) is not None  # started, and dropped by the caller
            for _ in range(200):
                if source.version():
                    break
                await asyncio.sleep(0.01)
            assert _kids(source) == ["a"]
            server.serve(jwks(key_b))
            assert source.maybe_refresh(300.0) is not None
            for _ in range(200):
                if source.version() == 2:
                    break
                await asyncio.sleep(0.01)
            assert _kids(source) == ["b"]

    asyncio.run(main())


def test_without_a_running_loop_the_caller_runs_the_fetch(key_a: SigningKey) -> None:
    body = json.dumps(jwks(key_a)).encode()

    class Handler(http.server.BaseHTTPRequestHandler):  # the stdlib server: HTTP/1.0 answers
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        source = JwksSource(url=f"http://127.0.0.1:{server.server_address[1]}/jwks", algorithms=ES256)
        fetch = source.maybe_refresh(0.0)
        assert fetch is not None and source.keys() == ()
        asyncio.run(_run(fetch))
        assert _kids(source) == ["a"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_url_response_framings(framing: str, key_a: SigningKey, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with JwksServer() as server:
            server.framing = framing
            server.serve(jwks(key_a, *(make_ed25519(kid=f"ed-{n}") for n in range(5))))
            source = JwksSource(url=server.url("/jwks?tenant=1"), algorithms=None)
            await _run(source.maybe_refresh(0.0))
            assert _kids(source) == ["a", "ed-0", "ed-1", "ed-2", "ed-3", "ed-4"]
            assert server.requests[0].startswith(b"GET /jwks?tenant=1 HTTP/1.1\r\n")

            server.serve(jwks(key_a))
            source.max_bytes = len(server.body) - 1  # one byte over the limit, in any framing
            await _run(source.maybe_refresh(1000.0))
            assert len(source.keys()) == 6
            assert f"response larger than {source.max_bytes} bytes" in caplog.text

    asyncio.run(main())


def test_failed_fetch_keeps_the_old_keys_and_retries_soon(
    key_a: SigningKey, key_b: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sidegate.auth.jwks")

    async def main() -> None:
        async with JwksServer() as server:
            server.serve(jwks(key_a))
            source = JwksSource(url=server.url(), algorithms=ES256, refresh=300.0, min_refetch=10.0)
            await _run(source.maybe_refresh(0.0))
            assert _kids(source) == ["a"]

            failures: list[tuple[str, str]] = [
                ("status", "HTTP status 503"),
                ("json", "JWKS is not valid JSON"),
            ]
            failures += [("empty", "no usable signing key"), ("big", "response larger than 2000 bytes")]
            now = 300.0
            for kind, message in failures:
                caplog.clear()
                server.status = b"503 Service Unavailable" if kind == "status" else b"200 OK"
                server.serve(
                    {"status": b"oops", "json": b"{nope", "empty": b'{"keys": []}'}.get(kind, b"x" * 3000)
                )
                source.max_bytes = 2000
                await _run(source.maybe_refresh(now))
                assert _kids(source) == ["a"] and source.version() == 1
                assert f"JWKS fetch from {server.url()} failed: {message}" in caplog.text
                assert "keeping 1 keys" in caplog.text
                assert source.maybe_refresh(now + 5) is None
                now += 10  # a failure is retried after min_refetch, not after refresh

            server.status = b"200 OK"
            server.serve(jwks(key_b))
            await _run(source.maybe_refresh(now))
            assert _kids(source) == ["b"] and source.version() == 2

    asyncio.run(main())


def test_unresponsive_or_absent_server_fails_within_the_timeout(
    key_a: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sidegate.auth.jwks")

    async def main() -> None:
        async with JwksServer() as server:
            server.framing = "stall"
            source = JwksSource(url=server.url(), algorithms=ES256)
            source.fetch_timeout = 0.3
            start = time.monotonic()
            fetch = source.maybe_refresh(0.0)
            assert source.maybe_refresh(0.0, unknown_kid=True) is None  # one fetch at a time
            await _run(fetch)
            assert time.monotonic() - start < 2.0
            assert "failed: timed out; keeping 0 keys" in caplog.text
            port = server.port
        caplog.clear()
        source = JwksSource(url=f"http://127.0.0.1:{port}/jwks", algorithms=ES256)  # nobody listens now
        await _run(source.maybe_refresh(0.0))
        assert source.keys() == () and "failed:" in caplog.text

    asyncio.run(main())

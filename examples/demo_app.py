"""A small HTTP/1.1 app to put behind Sidegate: `python examples/demo_app.py --port 3000`.

Standard library only (asyncio streams), so it runs anywhere Python 3.11 does. It plays "the app" for
`make run` and for tests:

  GET  /health                  {"status": "ok"}
  POST /echo                    the request body streamed back, chunked, as it arrives
  GET  /sse?n=5&interval=0.5    n server-sent events
  GET  /slow?seconds=2          answers after a delay
  GET  /status/{code}           answers with that status
  GET  /ws                      WebSocket echo (RFC 6455: text, binary, ping -> pong, close)
  *    anything else            JSON hello: client address, method, path, query and the headers received,
                                so you see what Sidegate added (X-Forwarded-For, Via, X-Request-Id, ...)

Keep-alive, Content-Length and chunked request bodies, `Expect: 100-continue`. `--port 0` picks a free
port; the one line printed at start names it. SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import signal
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

MAX_HEAD = 64 * 1024
MAX_WS_MESSAGE = 16 * 1024 * 1024
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    version: str
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]

    def header(self, name: str, default: str = "") -> str:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), default)

    def param(self, name: str, default: float) -> float:
        try:
            return float(self.query[name][0])
        except (KeyError, ValueError):
            return default

    @property
    def keep_alive(self) -> bool:
        conn = self.header("connection").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


class BadRequestError(Exception):
    """Malformed input: answered with 400 and a close."""


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    """Read one request head; the body is left on the stream behind `Request.body`. None at clean EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequestError("truncated head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise BadRequestError("head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError as exc:
        raise BadRequestError("bad request line") from exc
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequestError("unsupported version")
    headers = []
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise BadRequestError("bad header line")
            headers.append((name, value.strip()))
    url = urlsplit(target)
    req = Request(method, url.path or "/", parse_qs(url.query), version, headers, _sized_body(reader, 0))
    chunked = "chunked" in req.header("transfer-encoding").lower()
    length = req.header("content-length", "0")
    if not chunked and not length.isdigit():
        raise BadRequestError("bad content-length")
    if req.header("expect").lower() == "100-continue" and (chunked or int(length)):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    req.body = _chunked_body(reader) if chunked else _sized_body(reader, int(length))
    return req


async def _sized_body(reader: asyncio.StreamReader, length: int) -> AsyncIterator[bytes]:
    while length > 0:
        data = await reader.read(min(length, 65536))
        if not data:
            raise BadRequestError("body ended early")
        length -= len(data)
        yield data


async def _chunked_body(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise BadRequestError("bad chunk size") from exc
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, ignored
                pass
            return
        data = await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequestError("bad chunk end")
        yield data


def head_bytes(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def respond_json(req: Request, w: asyncio.StreamWriter, status: int, obj: object) -> None:
    body = json.dumps(obj, indent=2).encode() + b"\n"
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if status in (204, 304):
        headers, body = [], b""
    if not req.keep_alive:
        headers.append(("Connection", "close"))
    w.write(head_bytes(status, headers) + (b"" if req.method == "HEAD" else body))
    await w.drain()


async def stream(req: Request, w: asyncio.StreamWriter, ctype: str, chunks: AsyncIterator[bytes]) -> None:
    """Send a chunked response, one HTTP chunk per item, flushing each."""
    headers = [("Content-Type", ctype), ("Transfer-Encoding", "chunked"), ("Cache-Control", "no-cache")]
    if not req.keep_alive:
        headers.append(("Connection", "close"))
    w.write(head_bytes(200, headers))
    async for chunk in chunks:
        if chunk:
            w.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await w.drain()
    w.write(b"0\r\n\r\n")
    await w.drain()


# -- endpoints ---------------------------------------------------------------------------------------


async def hello(req: Request, w: asyncio.StreamWriter) -> None:
    received = 0
    async for data in req.body:
        received += len(data)
    seen: dict[str, str] = {}
    for k, v in req.headers:
        seen[k] = f"{seen[k]}, {v}" if k in seen else v
    query = {k: v[0] if len(v) == 1 else v for k, v in req.query.items()}
    peer = w.get_extra_info("peername") or ("?", 0)
    info = {"message": "Hello from the Sidegate demo app", "client": f"{peer[0]}:{peer[1]}"}
    info |= {"method": req.method, "path": req.path}
    await respond_json(req, w, 200, {**info, "query": query, "headers": seen, "body_bytes": received})


async def health(req: Request, w: asyncio.StreamWriter) -> None:
    await respond_json(req, w, 200, {"status": "ok"})


async def echo(req: Request, w: asyncio.StreamWriter) -> None:
    if req.method not in ("POST", "PUT"):
        return await respond_json(req, w, 405, {"error": "use POST"})
    await stream(req, w, req.header("content-type", "application/octet-stream"), req.body)


async def sse(req: Request, w: asyncio.StreamWriter) -> None:
    n, interval = int(req.param("n", 5)), min(req.param("interval", 0.5), 60.0)

    async def events() -> AsyncIterator[bytes]:
        for i in range(1, n + 1):
            if i > 1:
                await asyncio.sleep(interval)
            yield f"id: {i}\nevent: tick\ndata: {json.dumps({'n': i, 'of': n})}\n\n".encode()

    await stream(req, w, "text/event-stream", events())


async def slow(req: Request, w: asyncio.StreamWriter) -> None:
    seconds = max(0.0, min(req.param("seconds", 2), 300.0))
    await asyncio.sleep(seconds)
    await respond_json(req, w, 200, {"slept": seconds})


async def status(req: Request, w: asyncio.StreamWriter) -> None:
    code = req.path.removeprefix("/status/")
    if not code.isdigit() or not 200 <= int(code) <= 599:
        return await respond_json(req, w, 400, {"error": "status must be 200..599"})
    try:
        phrase = HTTPStatus(int(code)).phrase
    except ValueError:
        return await respond_json(req, w, 400, {"error": f"unknown status {code}"})
    await respond_json(req, w, int(code), {"status": int(code), "reason": phrase})


async def websocket(req: Request, w: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
    key = req.header("sec-websocket-key")
    if "websocket" not in req.header("upgrade").lower() or not key:
        return await respond_json(req, w, 426, {"error": "WebSocket upgrade required"})
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
    upgrade = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)]
    w.write(head_bytes(101, upgrade))
    await w.drain()
    message, message_op = b"", 0
    while True:
        fin, opcode, payload = await read_frame(reader)
        if opcode == 0x8:  # close: answer with the same status code, then hang up
            w.write(frame(0x8, payload[:2]))
            await w.drain()
            return
        if opcode == 0x9:
            w.write(frame(0xA, payload))
        elif opcode in (0x0, 0x1, 0x2):
            message_op = opcode or message_op
            message += payload
            if len(message) > MAX_WS_MESSAGE:
                w.write(frame(0x8, struct.pack("!H", 1009)))
                return
            if fin:
                w.write(frame(message_op, message))
                message = b""
        await w.drain()


async def read_frame(reader: asyncio.StreamReader) -> tuple[bool, int, bytes]:
    b0, b1 = await reader.readexactly(2)
    length = b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    if length > MAX_WS_MESSAGE:
        raise BadRequestError("frame too large")
    mask = await reader.readexactly(4) if b1 & 0x80 else b""
    payload = await reader.readexactly(length)
    if mask and length:
        key = (mask * (length // 4 + 1))[:length]
        payload = (int.from_bytes(payload) ^ int.from_bytes(key)).to_bytes(length)
    return bool(b0 & 0x80), b0 & 0x0F, payload


def frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked server frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]
ROUTES: dict[str, Handler] = {"/health": health, "/echo": echo, "/sse": sse, "/slow": slow}
CONNECTIONS: set[asyncio.Task[None]] = set()


async def serve_connection(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    task = asyncio.current_task()
    assert task is not None
    CONNECTIONS.add(task)
    try:
        while req := await read_request(reader, w):
            if req.path == "/ws":
                return await websocket(req, w, reader)
            handler = status if req.path.startswith("/status/") else ROUTES.get(req.path, hello)
            await handler(req, w)
            async for _ in req.body:  # drain what the handler did not read, to find the next request
                pass
            if not req.keep_alive:
                break
    except BadRequestError as exc:
        w.write(head_bytes(400, [("Content-Length", "0"), ("Connection", "close")]))
        print(f"demo app: bad request: {exc}", flush=True)
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    except asyncio.CancelledError:
        pass  # shutdown; finishing normally keeps 3.11's stream callback from logging a traceback
    finally:
        CONNECTIONS.discard(task)
        with contextlib.suppress(ConnectionError):
            w.close()


async def main(host: str, port: int) -> None:
    server = await asyncio.start_server(serve_connection, host, port, limit=MAX_HEAD)
    bound = server.sockets[0].getsockname()
    print(f"demo app listening on http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()  # stop accepting, then end open connections (idle keep-alive, streams, /slow)
    for task in list(CONNECTIONS):
        task.cancel()
    await asyncio.gather(*CONNECTIONS, return_exceptions=True)
    print("demo app stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Sidegate demo app (the upstream behind the gateway)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))

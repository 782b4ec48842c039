"""A real upstream app for integration tests that records every raw request it receives.

Run as ``python tests/support/origin.py --port 0 [--record FILE]``; the first stdout line is the
port. Stdlib asyncio only, so it behaves like a plain HTTP/1.1 app with keep-alive.

Recording: every complete request (head and body, exactly as received) is kept in memory and,
with ``--record``, appended to FILE as one JSON line. Bytes of a request that never completed
stay visible as *pending* while the connection is open and become a *partial* record when it
closes, so "the app received nothing" can be checked without races. Control endpoints (never
recorded): ``GET /__received`` (JSON: requests, pending, partial, open: peer ports of open
connections) and ``POST /__reset``. ``GET /metrics`` is not recorded either: the app's own
Prometheus metrics (``origin_requests_total``: requests recorded; ``origin_build_info``; and an
``http_server_requests_total`` whose name Sidegate also uses), in OpenMetrics when the Accept
header asks for it, else the Prometheus text format.

Endpoints (any other path answers like ``/``):

=========================  ====================================================================
``/``                      200 JSON: method, target, path, query, headers, body length, peer
``/echo``                  the request body back, with Content-Length
``/chunked?n=3``           n chunks of a chunked body
``/close-delimited``       a body with neither Content-Length nor chunked, then close
``/status/{code}``         that status (no body for 204/304)
``/head-cl``               Content-Length: 100 (and 100 bytes unless HEAD)
``/early-hints``           103 Early Hints, then 200
``/continue``              honours Expect: 100-continue before reading the body
``/slow?seconds=S``        sleeps S seconds before the head
``/reject-early``          413 and close, without reading the request body
``/stall-body``            head (Content-Length 1000), 100 bytes, then nothing
``/close-after?delay=D``   a response with Connection: close; the socket closes D seconds later
``/drop``                  closes without a response
``/reset``                 closes with a TCP RST (SO_LINGER 0)
``/big?bytes=N``           N bytes of :func:`pattern`, written in 64 KiB pieces with backpressure
``/hop``                   hop-by-hop headers: Connection: X-Hop, X-Hop: 1, Keep-Alive
``/sse?n=3&interval=0.2``  text/event-stream, one event every interval seconds (chunked)
``/garbage``               an invalid status line, then close
``/raw?b64=...``           exactly these response bytes, then close
``/big-head?bytes=N``      a response whose head has an N-byte header
``/fields?n=N``            a response with N header fields (X-Field-0 ...), kept alive
``/cache...?cc=&etag=...``  body "<body> #<n>" (n counts /cache answers); headers from the query:
                           cc, cdn, sg, etag, lm, expires, date, age, vary, skey, ctag, cookie,
                           location, clocation; status=, body=, delay=, pad=N (N more
                           bytes), failafter=N (503 after N answers to this target),
                           short=1 (Content-Length 10 more than sent, then close); a matching
                           If-None-Match / If-Modified-Since gets a 304 with those headers;
                           ranges=TAG: Range answered with 206s (origin_ranges.py)
=========================  ====================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

PIECE = 64 * 1024
_BLOCK = bytes(range(256)) * (PIECE // 256)
# /cache query argument -> response header it sets
_CACHE_ARGS = (
    ("cc", "Cache-Control"),
    ("cdn", "CDN-Cache-Control"),
    ("sg", "Sidegate-Cache-Control"),
    ("etag", "ETag"),
    ("lm", "Last-Modified"),
    ("expires", "Expires"),
    ("date", "Date"),
    ("age", "Age"),
    ("vary", "Vary"),
    ("skey", "Surrogate-Key"),
    ("ctag", "Cache-Tag"),
    ("cookie", "Set-Cookie"),
    ("location", "Location"),
    ("clocation", "Content-Location"),
)


def pattern(size: int, offset: int = 0) -> bytes:
    """The deterministic body of ``/big``: bytes 0..255 repeated (``offset`` into the stream)."""
    start = offset % 256
    out = bytearray()
    while len(out) < size:
        out += _BLOCK[start:] if not out else _BLOCK
    return bytes(out[:size])


class ClosedError(Exception):
    """The peer closed the connection before a complete request."""


@dataclass
class Conn:
    conn_id: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer_port: int
    buf: bytearray = field(default_factory=bytearray)  # received, not yet parsed
    current: bytearray = field(default_factory=bytearray)  # parsed part of the request in progress
    control: bool = False

    async def fill(self) -> None:
        data = await self.reader.read(65536)
        if not data:
            raise ClosedError
        self.buf += data

    def take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        del self.buf[:n]
        self.current += data
        return data

    async def line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            await self.fill()
        return self.take(i + 2)[:-2]

    async def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self.fill()
        return self.take(n)


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    chunked: bool = False
    continue_sent: bool = False

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def arg(self, name: str, default: str) -> str:
        return parse_qs(urlsplit(self.target).query).get(name, [default])[0]


class Origin:
    def __init__(self, record: TextIO | None) -> None:
        self.record_file = record
        self.requests: list[dict[str, Any]] = []
        self.partial: list[dict[str, Any]] = []
        self.conns: dict[int, Conn] = {}
        self._ids = itertools.count(1)
        self.served = 0  # /cache answers so far
        self.per_target: dict[str, int] = {}  # /cache answers per request target

    # -- recording -----------------------------------------------------------------------------

    def _entry(self, conn: Conn, raw: bytes, **extra: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"conn_id": conn.conn_id, "peer_port": conn.peer_port, "time": time.time()}
        entry["raw"] = base64.b64encode(raw).decode()
        entry.update(extra)
        if self.record_file is not None:
            self.record_file.write(json.dumps(entry) + "\n")
            self.record_file.flush()
        return entry

    def record(self, conn: Conn, req: Request) -> None:
        raw, conn.current = bytes(conn.current), bytearray()
        info = {
            "method": req.method,
            "target": req.target,
            "version": req.version,
            "headers": req.headers,
            "body": base64.b64encode(req.body).decode(),
            "chunked": req.chunked,
            "continue_sent": req.continue_sent,
        }
        self.requests.append(self._entry(conn, raw, **info))

    def snapshot(self) -> dict[str, Any]:
        pending = [
            {
                "conn_id": c.conn_id,
                "peer_port": c.peer_port,
                "raw": base64.b64encode(c.current + c.buf).decode(),
            }
            for c in self.conns.values()
            if not c.control and (c.current or c.buf)
        ]
        open_ports = [c.peer_port for c in self.conns.values() if not c.control]
        return {"requests": self.requests, "pending": pending, "partial": self.partial, "open": open_ports}

    # -- connection loop -----------------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn = Conn(next(self._ids), reader, writer, peer[1] if peer else 0)
        self.conns[conn.conn_id] = conn
        try:
            while True:
                req = await self.read_head(conn)
                if not await self.dispatch(conn, req):
                    break
        except (ClosedError, ConnectionError, ValueError):
            pass
        finally:
            del self.conns[conn.conn_id]
            if not conn.control and (conn.current or conn.buf):
                self.partial.append(self._entry(conn, bytes(conn.current + conn.buf), partial=True))
            with contextlib.suppress(Exception):
                writer.close()

    async def read_head(self, conn: Conn) -> Request:
        while not conn.buf:
            await conn.fill()
        method, target, version = (await conn.line()).decode("latin-1").split(" ", 2)
        headers = []
        while line := await conn.line():
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip(" \t")))
        req = Request(method, target, version, headers)
        conn.control = conn.control or req.path.startswith("/__")
        return req

    async def read_body(self, conn: Conn, req: Request) -> None:
        te = (req.header("transfer-encoding") or "").lower()
        if te:
            req.chunked = True
            body = bytearray()
            while size := int((await conn.line()).split(b";")[0].strip(), 16):
                body += await conn.exactly(size)
                if await conn.exactly(2) != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
            while await conn.line():  # trailer section
                pass
            req.body = bytes(body)
        elif (length := req.header("content-length")) is not None:
            req.body = await conn.exactly(int(length))

    async def dispatch(self, conn: Conn, req: Request) -> bool:
        """Answer one request; False when the connection must end."""
        path, w = req.path, conn.writer
        if path == "/continue" and (req.header("expect") or "").lower() == "100-continue":
            req.continue_sent = True
            w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await w.drain()
        if path == "/reject-early":  # answers without reading the body, then closes
            self.record(conn, req)
            await self.respond(w, req, 413, b"too big for the app\n", close=True)
            return False
        await self.read_body(conn, req)
        if conn.control:
            conn.current = bytearray()
            if path == "/__reset":
                self.requests.clear()
                self.partial.clear()
            await self.respond(w, req, 200, json.dumps(self.snapshot()).encode(), close=True)
            return False
        if path == "/metrics":
            await self.metrics(w, req)
            return True
        self.record(conn, req)
        if path == "/echo":
            ctype = req.header("content-type") or "application/octet-stream"
            await self.respond(w, req, 200, req.body, [("Content-Type", ctype)])
        elif path == "/chunked":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            if req.method != "HEAD":
                for i in range(int(req.arg("n", "3"))):
                    w.write(b"%x\r\n%b\r\n" % (8, b"chunk %d\n" % (i % 10)))
                    await w.drain()
                w.write(b"0\r\n\r\n")
        elif path == "/close-delimited":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
            if req.method != "HEAD":
                w.write(b"close-delimited body\n" * 50)
                await w.drain()
                await asyncio.sleep(0.05)
                w.write(b"the end\n")
            await w.drain()
            return False
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            if code in (204, 304):
                w.write(b"HTTP/1.1 %d Status\r\nX-Status: %d\r\n\r\n" % (code, code))
            else:
                await self.respond(w, req, code, b"status %d\n" % code)
        elif path == "/head-cl":
            await self.respond(w, req, 200, b"h" * 100)
        elif path == "/early-hints":
            w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            await w.drain()
            await asyncio.sleep(0.05)
            await self.respond(w, req, 200, b"after hints\n")
        elif path == "/continue":
            info = {"body_len": len(req.body), "continue_sent": req.continue_sent}
            await self.respond(w, req, 200, json.dumps(info).encode())
        elif path == "/slow":
            await asyncio.sleep(float(req.arg("seconds", "1")))
            await self.respond(w, req, 200, b"slow done\n")
        elif path == "/stall-body":
            w.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n" + b"s" * 100
            )
            await w.drain()
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(conn.reader.read(), 120)  # until the peer gives up
            return False
        elif path == "/close-after":
            await self.respond(w, req, 200, b"closing\n", close=True)
            await asyncio.sleep(float(req.arg("delay", "0.2")))
            return False
        elif path == "/drop":
            return False
        elif path == "/reset":
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
            return False
        elif path == "/big":
            size = int(req.arg("bytes", str(1024 * 1024)))
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n")
            w.write(b"Content-Length: %d\r\n\r\n" % size)
            if req.method != "HEAD":
                sent = 0
                while sent < size:
                    n = min(PIECE, size - sent)
                    w.write(_BLOCK[:n])  # PIECE is a multiple of 256: every piece starts at 0
                    sent += n
                    await w.drain()
        elif path == "/hop":
            extra = [("Connection", "X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5"), ("X-End", "1")]
            await self.respond(w, req, 200, b"hop\n", extra)
        elif path == "/sse":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n")
            w.write(b"Transfer-Encoding: chunked\r\n\r\n")
            n, interval = int(req.arg("n", "3")), float(req.arg("interval", "0.2"))
            for i in range(n):
                if i:
                    await asyncio.sleep(interval)
                event = b"id: %d\ndata: event %d\n\n" % (i, i)
                w.write(b"%x\r\n%b\r\n" % (len(event), event))
                await w.drain()
            w.write(b"0\r\n\r\n")
        elif path == "/garbage":
            w.write(b"HTTP/1.1 2x0 Nope\r\nthis is: not\r\n a valid\x00response\r\n\r\n")
            await w.drain()
            return False
        elif path == "/big-head":
            await self.respond(w, req, 200, b"ok\n", [("X-Big", "h" * int(req.arg("bytes", "100000")))])
        elif path == "/fields":
            fields = [(f"X-Field-{i}", str(i)) for i in range(int(req.arg("n", "150")))]
            await self.respond(w, req, 200, b"fields\n", fields)
        elif path.startswith("/cache"):
            if not await self.cacheable(w, req):
                return False
        elif path == "/raw":
            w.write(base64.urlsafe_b64decode(req.arg("b64", "")))
            await w.drain()
            return False
        else:
            await self.respond(w, req, 200, json.dumps(self.describe(conn, req)).encode())
        await w.drain()
        return (req.header("connection") or "").lower() != "close"

    async def cacheable(self, w: asyncio.StreamWriter, req: Request) -> bool:
        """``/cache...``: a response whose caching headers come from the query (see the table);
        False when the connection must end."""
        self.served += 1
        seen = self.per_target[req.target] = self.per_target.get(req.target, 0) + 1
        if seen > int(req.arg("failafter", "1000000")):
            await self.respond(w, req, 503, b"failing now\n")
            return True
        fields = [(name, req.arg(arg, "")) for arg, name in _CACHE_ARGS if req.arg(arg, "")]
        etag, last_modified = req.arg("etag", ""), req.arg("lm", "")
        inm, ims = req.header("if-none-match"), req.header("if-modified-since")
        if (etag and inm and etag in [t.strip() for t in inm.split(",")]) or (
            last_modified and ims == last_modified and inm is None
        ):
            head = ["HTTP/1.1 304 Not Modified", *(f"{n}: {v}" for n, v in fields), "X-Fresh: 304"]
            w.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            return True
        await asyncio.sleep(float(req.arg("delay", "0")))
        if req.arg("ranges", ""):  # a stable body served in ranges
            import origin_ranges  # beside this script (its directory is on sys.path)

            tag, text, pad = req.arg("ranges", ""), req.arg("body", "cached body"), int(req.arg("pad", "0"))
            change = int(req.arg("changeafter", "1000000"))
            data, etag = origin_ranges.representation(tag, text, pad, seen, change)
            status, data, extra = origin_ranges.answer(data, etag, req.header("range"))
            await self.respond(w, req, status, data, [*fields, *extra])
            return True
        body = f"{req.arg('body', 'cached body')} #{self.served}".encode() + b"x" * int(req.arg("pad", "0"))
        if req.arg("short", ""):  # promises more than it sends, then closes
            head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body) + 10}", *(f"{n}: {v}" for n, v in fields)]
            w.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await w.drain()
            return False
        await self.respond(w, req, int(req.arg("status", "200")), body, fields)
        return True

    @staticmethod
    def describe(conn: Conn, req: Request) -> dict[str, Any]:
        parts = urlsplit(req.target)
        return {
            "method": req.method,
            "target": req.target,
            "path": parts.path,
            "query": parts.query,
            "version": req.version,
            "headers": req.headers,
            "body_len": len(req.body),
            "peer_port": conn.peer_port,
            "conn_id": conn.conn_id,
        }

    async def metrics(self, w: asyncio.StreamWriter, req: Request) -> None:
        served = len(self.requests)
        if "application/openmetrics-text" in (req.header("accept") or ""):
            text = (
                "# HELP origin_requests Requests the origin recorded.\n# TYPE origin_requests counter\n"
                f"origin_requests_total {served}\n"
                '# TYPE origin_build info\norigin_build_info{version="1.0"} 1\n'
                "# TYPE http_server_requests counter\n"
                f'http_server_requests_total{{app="origin"}} {served}\n# EOF\n'
            )
            ctype = "application/openmetrics-text; version=1.0.0; charset=utf-8"
        else:
            text = (
                "# HELP origin_requests_total Requests the origin recorded.\n"
                f"# TYPE origin_requests_total counter\norigin_requests_total {served}\n"
                '# TYPE origin_build_info gauge\norigin_build_info{version="1.0"} 1\n'
                "# TYPE http_server_requests_total counter\n"
                f'http_server_requests_total{{app="origin"}} {served}\n'
            )
            ctype = "text/plain; version=0.0.4; charset=utf-8"
        await self.respond(w, req, 200, text.encode(), [("Content-Type", ctype)])

    @staticmethod
    async def respond(
        w: asyncio.StreamWriter,
        req: Request,
        status: int,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
        *,
        close: bool = False,
    ) -> None:
        lines = [f"HTTP/1.1 {status} Origin", f"Content-Length: {len(body)}"]
        if not any(n.lower() == "content-type" for n, _ in headers or ()):
            lines.append("Content-Type: application/json" if body[:1] == b"{" else "Content-Type: text/plain")
        lines += [f"{n}: {v}" for n, v in headers or ()]
        if close:
            lines.append("Connection: close")
        w.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if req.method != "HEAD":
            w.write(body)
        await w.drain()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", metavar="FILE", help="append one JSON line per request to FILE")
    args = parser.parse_args()
    record = open(args.record, "a", encoding="utf-8") if args.record else None  # noqa: SIM115
    origin = Origin(record)
    server = await asyncio.start_server(origin.serve, args.host, args.port, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    sys.exit(0)

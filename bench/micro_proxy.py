"""Micro benchmark: the Python cost of one proxied request, with no sockets.

Feeds a request to an inbound connection and the app's response to the upstream connection, over
fake transports, and reports microseconds per request. This isolates what Sidegate's own code
costs per request (parsing, routing, head rebuilding, bookkeeping) from syscalls and the kernel.

    .venv/bin/python bench/micro_proxy.py [--requests 200000] [--profile] [--extra observe.yaml]

``--extra`` appends top-level YAML to the one-route config (an ``observability:`` section, say).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.runtime import Gateway
from sidegate.server.inbound import InboundConnection
from sidegate.upstream.connection import UpstreamConnection

CONFIG = """
listeners:
  inbound: {address: "127.0.0.1:0"}
  admin: {address: "127.0.0.1:0"}
upstreams:
  app: {endpoints: ["127.0.0.1:9"]}
routes:
  - name: all
    match: {path_prefix: "/"}
    upstream: app
"""
REQUEST = b"GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 01:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nHello, world!"
)


class FakeTransport:
    """Collects writes; enough of asyncio.Transport for the connections."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def wire(
    loop: asyncio.AbstractEventLoop, config: str
) -> tuple[InboundConnection, FakeTransport, UpstreamConnection, FakeTransport]:
    """A gateway for ``config`` with one inbound connection and one pooled upstream connection
    of upstream ``app``, over fake transports: (inbound, its transport, upstream, its transport)."""
    gateway = Gateway(loop, compile_checked(check_text(config)))
    inbound = InboundConnection(gateway.ctx)
    client = FakeTransport()
    inbound.connection_made(client)  # type: ignore[arg-type]
    pool = gateway.clusters.clusters["app"].pools[0]
    upstream = UpstreamConnection(pool)
    server = FakeTransport()
    upstream.connection_made(server)  # type: ignore[arg-type]
    pool.idle.append(upstream)
    _KEEP.append(gateway)
    return inbound, client, upstream, server


_KEEP: list[Gateway] = []  # the gateways wired here live as long as the benchmark


def build(extra: str = "") -> Callable[[int], None]:
    """A gateway with one inbound and one pooled upstream connection over fake transports;
    returns ``cycle(n)``, which proxies ``n`` requests through them."""
    inbound, client, upstream, server = wire(uvloop.new_event_loop(), CONFIG + extra)

    def cycle(n: int) -> None:
        feed_request = inbound.data_received
        feed_response = upstream.data_received
        for _ in range(n):
            feed_request(REQUEST)
            feed_response(RESPONSE)

    cycle(1000)
    assert client.written == 1000 and server.written == 1000, (client.written, server.written)
    return cycle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--extra", type=Path, help="YAML appended to the config (top-level keys)")
    args = parser.parse_args()
    cycle = build(args.extra.read_text() if args.extra else "")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(cycle, args.requests)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    start = time.perf_counter()
    cycle(args.requests)
    elapsed = time.perf_counter() - start
    print(f"{elapsed / args.requests * 1e6:.2f} us per proxied request (Python work only)")


if __name__ == "__main__":
    main()

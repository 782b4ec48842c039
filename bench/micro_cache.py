"""Micro benchmark: the Python cost of one cache hit, with no sockets.

Like ``micro_proxy.py``: a gateway over fake transports, one route with ``filters: {cache: {}}`` and
its store in a temporary directory. One miss fills the store; then every request is a hit, answered
from the store without the upstream. Reports microseconds per hit.

    .venv/bin/python bench/micro_cache.py [--requests 100000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time

import uvloop

from micro_proxy import REQUEST, wire

CONFIG = """
listeners:
  inbound: {address: "127.0.0.1:0"}
  admin: {address: "127.0.0.1:0"}
cache: {dir: "%s", max_size: 64MiB}
upstreams:
  app: {endpoints: ["127.0.0.1:9"]}
routes:
  - name: all
    match: {path_prefix: "/"}
    upstream: app
    filters: {cache: {}}
"""
RESPONSE = (  # no Date: the entry is fresh from when it arrives
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nCache-Control: public, max-age=3600\r\n"
    b"Connection: keep-alive\r\n\r\nHello, world!"
)


async def run(requests: int, profile: bool, directory: str) -> None:
    inbound, client, upstream, server = wire(asyncio.get_running_loop(), CONFIG % directory)
    inbound.data_received(REQUEST)  # the miss: stored as it goes through
    upstream.data_received(RESPONSE)
    assert server.written == 1

    def hits(n: int) -> None:
        feed = inbound.data_received
        for _ in range(n):
            feed(REQUEST)

    hits(1000)
    assert server.written == 1 and client.written == 1001, (server.written, client.written)
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(hits, requests)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    start = time.perf_counter()
    hits(requests)
    elapsed = time.perf_counter() - start
    print(f"{elapsed / requests * 1e6:.2f} us per cache hit (Python work only)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sidegate-micro-cache-") as directory:
        uvloop.run(run(args.requests, args.profile, directory))


if __name__ == "__main__":
    main()

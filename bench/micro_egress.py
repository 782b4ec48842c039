"""Micro benchmark: one egress absolute-form request, over real loopback sockets, in one process.

The gateway of ``configs/egress.yaml`` (its egress listener), a minimal origin and a client all run
on one uvloop loop: the client sends ``GET http://127.0.0.1:<origin>/ HTTP/1.1`` on one keep-alive
connection, the next as soon as the response is whole, ``--requests`` times. Under callgrind
(``bench/count_egress_instructions.sh``) the instructions per request are the egress path's
(decide, guard, pool, head out, response back, audit) plus a constant share for the client, the
origin and the syscalls, which cancels out of an A/B comparison: the egress yardstick on a machine
too noisy for wall-clock figures.

    .venv/bin/python bench/micro_egress.py [--requests 20000] [--profile] [--inbound]

``--inbound`` sends the same requests in origin-form to the inbound listener instead (its one
route's upstream is the same origin): the ``sidegate`` row's path under the same harness, so the
two counts compare as the benchmark's rows do.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path

import uvloop
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import bench_config
from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.gateway import Gateway

CONFIG = Path(__file__).parent / "configs" / "egress.yaml"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 01:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nHello, world!"
)
BODY = b"Hello, world!"


class Origin(asyncio.Protocol):
    """Answers every request head it reads with RESPONSE (GETs only: no body to skip)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        heads = data.count(b"\r\n\r\n")
        self.pending = data[data.rfind(b"\r\n\r\n") + 4 :] if heads else data
        if heads:
            self.transport.write(RESPONSE * heads)  # type: ignore[attr-defined]


class Client(asyncio.Protocol):
    """Sends ``total`` requests one after the other; ``done`` when the last response is whole."""

    def __init__(self, request: bytes, total: int, done: asyncio.Future[None]) -> None:
        self.request = request
        self.left = total
        self.done = done
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        # Each response ends with the origin's body (the proxy rewrites the head: its length varies).
        data = self.tail + data
        whole = data.count(BODY)
        self.tail = data[-len(BODY) :] if not whole else data[data.rfind(BODY) + len(BODY) :]
        for _ in range(whole):
            self.left -= 1
            if self.left == 0:
                self.done.set_result(None)
                return
            self.transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"connection lost with {self.left} requests left: {exc!r}"))


async def run(requests: int, profile: bool, inbound: bool = False) -> float:
    loop = asyncio.get_running_loop()
    origin = await loop.create_server(Origin, "127.0.0.1", 0)
    origin_port = origin.sockets[0].getsockname()[1]
    doc = bench_config(CONFIG, 0, 0, origin_port, egress_port=0)
    gateway = Gateway(loop, compile_checked(check_text(yaml.safe_dump(doc))))
    await gateway.start()
    assert gateway.egress is not None
    target = "/" if inbound else f"http://127.0.0.1:{origin_port}/"
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{origin_port}\r\n"
    request += "User-Agent: wrk\r\nAccept: */*\r\n\r\n"
    assert gateway.server is not None
    port = gateway.server.sockets[0].getsockname()[1] if inbound else gateway.egress.port

    async def batch(n: int) -> float:
        done: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(
            lambda: Client(request.encode(), n, done), "127.0.0.1", port
        )
        start = time.perf_counter()
        await done
        elapsed = time.perf_counter() - start
        transport.close()
        return elapsed

    await batch(200)  # warm: the pool's connection, the remembered authority and address
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    elapsed = await batch(requests)
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    gateway.egress.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--inbound", action="store_true", help="origin-form to the inbound listener instead")
    args = parser.parse_args()
    elapsed = uvloop.run(run(args.requests, args.profile, args.inbound))
    what = "inbound" if args.inbound else "egress"
    print(
        f"{elapsed / args.requests * 1e6:.2f} us per {what} request (client and origin in the same process)"
    )


if __name__ == "__main__":
    main()

"""The Python floor: the least a proxy written in Python on uvloop can do per request.

Each client connection gets its own upstream connection and bytes are copied both ways untouched:
no parsing, no routing, no head rewriting, no keep-alive pool, no timeouts. It is not a proxy
anyone should run; it is the benchmark's reference for how fast *any* Python + uvloop proxy can be
on this machine, so Sidegate's figures can be read against what the runtime itself costs.

    python bench/floor.py --port 8081 --upstream 127.0.0.1:3000
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        if not self.client.is_closing():
            self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(lambda: _Upstream(self.transport), self.host, self.port)
        self.upstream = transport
        for data in self.early:
            transport.write(data)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(data)
        else:
            self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def _serve(port: int, upstream: str) -> None:
    host, _, up_port = upstream.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(host, int(up_port)), "127.0.0.1", port, backlog=1024)
    print(f"floor forwarder on 127.0.0.1:{port} -> {upstream}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port of the app")
    args = parser.parse_args()
    uvloop.run(_serve(args.port, args.upstream))


if __name__ == "__main__":
    main()

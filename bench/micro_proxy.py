"""Micro benchmark: the Python cost of one proxied request, with no sockets.

Feeds a request to an inbound connection and the app's response to the upstream connection, over
fake transports, and reports microseconds per request. This isolates what Sidegate's own code
costs per request (parsing, routing, head rebuilding, bookkeeping) from syscalls and the kernel.

    .venv/bin/python bench/micro_proxy.py [--requests 200000] [--profile] [--auth | --token-only] [--extra F]

``--extra`` appends top-level YAML to the one-route config (an ``observability:`` section, say).
``--auth`` runs the route of ``bench/configs/auth.yaml`` (``make bench-auth``'s sidegate-auth row): a
``jwt`` filter and a local ``rate_limit`` keyed by consumer, with a JWKS and one RS256 token made as
``bench/auth.py`` makes them for a run, sent as ``Authorization: Bearer`` on every request. So it is
the steady state of the verified-token cache, as in the real benchmark. ``--auth-dir DIR`` keeps the
key and token in ``DIR`` and reuses them while the token is fresh: generating an RSA key costs a
random number of instructions, which ``count_instructions.sh`` must not count. ``--token-only`` sends
the same request on the plain route: what carrying the token costs when nothing checks it (the
request parser reads a header of several hundred bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import cProfile
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
import yaml

from auth import Credentials, make_credentials
from gateway import bench_config
from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.ratelimit.pod import remove_table
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

AUTH_CONFIG = Path(__file__).parent / "configs" / "auth.yaml"


_REUSE_FOR = 1800.0  # seconds a kept token is reused (it is valid for an hour)


def auth_setup(keep: Path | None = None) -> tuple[str, bytes]:
    """The config of ``configs/auth.yaml`` with a JWKS and the request carrying its token: (config
    text, request bytes). The key is new, in a temporary directory removed at exit, unless ``keep``
    names a directory: then the key and token kept there are reused while fresh, else made there."""
    atexit.register(remove_table)  # the pod's rate-limit table, named after this process
    if keep is None:
        workdir = tempfile.TemporaryDirectory(prefix="sidegate-micro-")
        atexit.register(workdir.cleanup)
        credentials = make_credentials(Path(workdir.name))
    else:
        credentials = _kept_credentials(keep)
    doc = bench_config(AUTH_CONFIG, 0, 0, 9, jwks_file=credentials.jwks_file)
    name, value = credentials.header
    request = REQUEST.replace(b"\r\n\r\n", f"\r\n{name}: {value}\r\n\r\n".encode(), 1)
    return yaml.safe_dump(doc, sort_keys=False), request


def _kept_credentials(directory: Path) -> Credentials:
    token_file = directory / "token"
    jwks_file = directory / "jwks.json"
    if jwks_file.exists() and token_file.exists() and time.time() - token_file.stat().st_mtime < _REUSE_FOR:
        return Credentials(jwks_file, token_file.read_text().strip())
    directory.mkdir(parents=True, exist_ok=True)
    credentials = make_credentials(directory)
    token_file.write_text(credentials.token + "\n")
    return credentials


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
    inbound = InboundConnection(gateway.shared)
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


def build(
    extra: str = "", *, auth: bool = False, auth_dir: Path | None = None, token_only: bool = False
) -> Callable[[int], None]:
    """A gateway with one inbound and one pooled upstream connection over fake transports;
    returns ``cycle(n)``, which proxies ``n`` requests through them (with ``auth``: the route
    of ``configs/auth.yaml``, each request carrying the token; with ``token_only``: the plain
    route, each request carrying the token all the same)."""
    config, request = auth_setup(auth_dir) if auth or token_only else (CONFIG, REQUEST)
    if token_only:
        config = CONFIG
    inbound, client, upstream, server = wire(uvloop.new_event_loop(), config + extra)

    def cycle(n: int) -> None:
        feed_request = inbound.data_received
        feed_response = upstream.data_received
        for _ in range(n):
            feed_request(request)
            feed_response(RESPONSE)

    cycle(1000)
    assert client.written == 1000 and server.written == 1000, (client.written, server.written)
    return cycle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--extra", type=Path, help="YAML appended to the config (top-level keys)")
    parser.add_argument("--auth", action="store_true", help="the jwt + rate_limit route of configs/auth.yaml")
    parser.add_argument("--token-only", action="store_true", help="the plain route, sent the token of --auth")
    parser.add_argument("--auth-dir", type=Path, help="keep (and reuse) the key and token of --auth here")
    args = parser.parse_args()
    extra = args.extra.read_text() if args.extra else ""
    cycle = build(extra, auth=args.auth, auth_dir=args.auth_dir, token_only=args.token_only)
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

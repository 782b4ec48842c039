"""L4: the phase loop of one request, from routed head to the last response byte.

Theory of operation
-------------------
:class:`Proxy` is the inbound connection's request handler. For each request head it makes an
:class:`~sidegate.exchange.Exchange`, which

1. takes the current :class:`View` (snapshot, live clusters, metric children) once: a reload
   never changes a request mid-flight;
2. routes the head and runs the route's ``on_request`` filters (any may answer on its own);
3. builds the upstream request head as bytes and borrows a keep-alive connection from the
   chosen endpoint's pool (opening one only when none is idle);
4. streams the request body up and the response back, re-framing both (Content-Length kept,
   chunked re-chunked, close-delimited turned into chunked for HTTP/1.1 clients), with
   backpressure both ways: a side that cannot write pauses the side that reads;
5. after a ``101`` for an Upgrade request, joins the two sockets into a tunnel;
6. ends with metrics and ``on_log`` filters, gives the upstream connection back when it is
   reusable, and tells the inbound connection whether the client connection stays open.

Failures become JSON answers with the status the error vocabulary gives (502/503/504), or a
closed client connection when part of the response was already sent.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from sidegate.config.snapshot import Route, Snapshot
from sidegate.exchange import Exchange, RoutePlan
from sidegate.forwarding import ForwardingCache
from sidegate.server.inbound import RequestHandler

if TYPE_CHECKING:
    from sidegate.http.request_parser import ParsedRequest
    from sidegate.observe.metrics import Metrics, RouteStats
    from sidegate.server.inbound import InboundConnection
    from sidegate.upstream.cluster import Cluster


class View:
    """What a request runs on: one snapshot with the clusters and metric children built for it."""

    __slots__ = (
        "clusters",
        "forwarding",
        "no_route_stats",
        "plans",
        "router",
        "snapshot",
        "via",
        "via_line",
    )

    def __init__(
        self,
        snapshot: Snapshot,
        clusters: dict[str, Cluster],
        route_stats: dict[Route, RouteStats],
        no_route_stats: RouteStats,
    ) -> None:
        self.snapshot = snapshot
        self.router = snapshot.router
        self.clusters = clusters
        self.no_route_stats = no_route_stats
        self.plans = {
            route: RoutePlan(route, clusters[route.upstream], route_stats[route]) for route in route_stats
        }
        self.forwarding = ForwardingCache(snapshot.forwarded)
        self.via = via = snapshot.forwarded.via
        self.via_line = b"Via: " + via + b"\r\n" if via else b""


class Proxy(RequestHandler):
    """The request handler given to every inbound connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: Metrics, view: View) -> None:
        self.loop = loop
        self.metrics = metrics
        self.view = view
        self.clock = loop.time
        self.rid_prefix = os.urandom(4).hex().encode()  # request ids: per-process prefix + counter
        self.rid_count = 0
        self._tasks: set[asyncio.Task[None]] = set()  # connects in progress (kept from the GC)

    def begin(self, conn: InboundConnection, head: ParsedRequest) -> Exchange:
        exchange = Exchange(self, conn, head)
        exchange.start()
        return exchange

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def request_id(self) -> bytes:
        """16 hex digits: this process's random prefix and a 32-bit counter. Built from a table of
        hex pairs: bytes %-formatting costs several times as much, on every request."""
        self.rid_count = n = (self.rid_count + 1) & 0xFFFFFFFF
        return b"".join(
            (self.rid_prefix, _HEX[n >> 24], _HEX[(n >> 16) & 255], _HEX[(n >> 8) & 255], _HEX[n & 255])
        )


_HEX: Final = tuple(b"%02x" % i for i in range(256))

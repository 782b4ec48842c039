"""L4: what every exchange of one process shares: the current view, the metrics, the clocks,
request ids, the recorder of finished requests, and the tasks in flight.

The request handler (:class:`~sidegate.request.proxy.Proxy`) is this class with ``begin``: the
exchange holds it by this base type, so the phase loop and the handler that makes it do not
import each other.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from sidegate.request.recorder import Recorder
from sidegate.server.stream import RequestHandler

if TYPE_CHECKING:
    from sidegate.observe.metrics import Metrics
    from sidegate.request.view import View


class RequestServices(RequestHandler):
    """The shared services of the request layer (see the module's docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: Metrics, view: View) -> None:
        self.loop = loop
        self.metrics = metrics
        self.view = view  # swapped on reload; a request keeps the one it started with
        # Request timings: uvloop's loop.time() only moves in whole milliseconds, too coarse for
        # a sub-millisecond hop. Deadlines (timers) stay on loop.time().
        self.clock = time.perf_counter
        self.rid_prefix = os.urandom(4).hex().encode()  # request ids: per-process prefix + counter
        self.rid_count = 0
        self._tasks: set[asyncio.Task[None]] = set()  # connects in progress (kept from the GC)
        self.recorder = Recorder(metrics, view.snapshot.observability)

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

    def rejected(self, client_ip: str, status: int, reason: str, request_id: bytes) -> None:
        self.recorder.rejected(client_ip, status, reason, request_id)


_HEX: Final = tuple(b"%02x" % i for i in range(256))

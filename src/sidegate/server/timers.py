"""One coarse timer for every deadline in the process.

Per-request ``call_later`` handles cost an allocation, a heap push and a cancel each. Instead,
every connection keeps a single ``deadline`` (a loop-clock time, 0 for none) that it moves with a
plain attribute write, and one sweeper task checks all registered objects every ``tick`` seconds
and calls ``on_deadline`` on the expired ones. Timeouts fire up to one tick late, which is fine for
limits measured in seconds; the cost per request is one clock read and one store.

Send timeouts are the other half: a connection whose write buffer went over its high-water mark
(``pause_writing``) is *watched* until it comes back under (``resume_writing``). At each sweep the
sweeper compares the transport's buffered size with what it saw last time: smaller means the peer
took bytes, and the send deadline starts again; a peer that takes nothing for the whole timeout
gets ``on_send_timeout``. So progress costs nothing per write (no clock read, no syscall), and a
connection that never fills its buffer (nearly all of them) is never watched at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Final, Protocol

log = logging.getLogger("sidegate.timers")
_LINGER_ZERO: Final = struct.pack("ii", 1, 0)


class Timed(Protocol):
    deadline: float

    def on_deadline(self, now: float) -> None: ...


class Sending(Protocol):
    def on_send_timeout(self) -> None: ...


class _Watch:
    """One watched transport: its buffered size at the last sweep and when it must have moved."""

    def __init__(self, transport: asyncio.WriteTransport, timeout: float, now: float) -> None:
        self.transport = transport
        self.timeout = timeout
        self.deadline = now + timeout
        self.size = transport.get_write_buffer_size()


def cut(transport: asyncio.Transport) -> None:
    """Close with a TCP reset, dropping what the peer did not take, in the kernel too: a plain
    close would queue the FIN behind bytes a peer that reads nothing never takes."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


class Sweeper:
    """Checks the deadlines of registered objects every ``tick`` seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = 0.1) -> None:
        self._loop = loop
        self._tick = tick
        self._objects: set[Timed] = set()
        self._sending: dict[Sending, _Watch] = {}
        self._handle: asyncio.TimerHandle | None = None

    def add(self, obj: Timed) -> None:
        self._objects.add(obj)
        if self._handle is None:
            self._handle = self._loop.call_later(self._tick, self._sweep)

    def discard(self, obj: Timed) -> None:
        self._objects.discard(obj)

    def watch_send(self, obj: Sending, transport: asyncio.WriteTransport, timeout: float) -> None:
        """``obj`` has more for its peer than the peer takes: cut it (``on_send_timeout``) if
        ``transport``'s buffer does not shrink for ``timeout`` seconds (0: never). Watching an
        object already watched changes nothing (the peer's time keeps running)."""
        if timeout <= 0 or obj in self._sending:
            return
        self._sending[obj] = _Watch(transport, timeout, self._loop.time())
        if self._handle is None:
            self._handle = self._loop.call_later(self._tick, self._sweep)

    def unwatch_send(self, obj: Sending) -> None:
        """The peer took enough (``resume_writing``) or the connection is gone."""
        self._sending.pop(obj, None)

    @property
    def watched(self) -> int:
        """How many connections are waiting for their peer to take bytes (for stats and tests)."""
        return len(self._sending)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sweep(self) -> None:
        now = self._loop.time()
        expired = [obj for obj in self._objects if 0 < obj.deadline <= now]
        for obj in expired:
            obj.deadline = 0.0
            try:
                obj.on_deadline(now)
            except Exception:  # a broken timer must not stop the others
                log.exception("deadline handler failed")
        if self._sending:
            self._sweep_sends(now)
        self._handle = (
            self._loop.call_later(self._tick, self._sweep) if self._objects or self._sending else None
        )

    def _sweep_sends(self, now: float) -> None:
        stalled: list[Sending] = []
        for obj, watch in self._sending.items():
            size = watch.transport.get_write_buffer_size()
            if size < watch.size:  # the peer took some: its time starts again
                watch.deadline = now + watch.timeout
            watch.size = size
            if watch.deadline <= now:
                stalled.append(obj)
        for obj in stalled:
            if self._sending.pop(obj, None) is None:
                continue  # an earlier handler let it go (its connection was closed with another)
            try:
                obj.on_send_timeout()
            except Exception:
                log.exception("send timeout handler failed")

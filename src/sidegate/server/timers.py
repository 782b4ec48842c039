"""One coarse timer for every deadline in the process.

Per-request ``call_later`` handles cost an allocation, a heap push and a cancel each. Instead,
every connection keeps a single ``deadline`` (a loop-clock time, 0 for none) that it moves with a
plain attribute write, and one sweeper task checks all registered objects every ``tick`` seconds
and calls ``on_deadline`` on the expired ones. Timeouts fire up to one tick late, which is fine for
limits measured in seconds; the cost per request is one clock read and one store.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Timed(Protocol):
    deadline: float

    def on_deadline(self, now: float) -> None: ...


class Sweeper:
    """Checks the deadlines of registered objects every ``tick`` seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = 0.1) -> None:
        self._loop = loop
        self._tick = tick
        self._objects: set[Timed] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, obj: Timed) -> None:
        self._objects.add(obj)
        if self._handle is None:
            self._handle = self._loop.call_later(self._tick, self._sweep)

    def discard(self, obj: Timed) -> None:
        self._objects.discard(obj)

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
                import logging

                logging.getLogger("sidegate.timers").exception("deadline handler failed")
        self._handle = self._loop.call_later(self._tick, self._sweep) if self._objects else None

"""Requests in flight per cache key, so that concurrent misses make one trip to the app.

The first miss for a key opens a :class:`Flight`; later misses for the same key wait on it (the
cache filter answers them with a ``Wait``) and look the store up again when it lands. A flight
lands when its request ends, stored or not: a waiter then finds the entry, or goes to the app
itself without waiting again, so an uncacheable URL never queues its requests one behind another.

Flights are per process: workers share the store, not their in-flight requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio


class Flight:
    """One request fetching a key from the app; ``landed`` is done when it ends."""

    __slots__ = ("key", "landed")

    def __init__(self, key: bytes) -> None:
        # Imported here: `sidegate validate` and `schema` load every filter but never asyncio.
        from asyncio import get_running_loop

        self.key = key
        self.landed: asyncio.Future[None] = get_running_loop().create_future()


class Flights:
    """The open flights of one process, by key."""

    def __init__(self) -> None:
        self._open: dict[bytes, Flight] = {}

    def __len__(self) -> int:
        return len(self._open)

    def join(self, key: bytes) -> Flight | None:
        """The flight already fetching ``key``, or None."""
        return self._open.get(key)

    def open(self, key: bytes) -> Flight:
        flight = self._open[key] = Flight(key)
        return flight

    def land(self, flight: Flight) -> None:
        """The flight's request ended: wake its waiters."""
        if self._open.get(flight.key) is flight:
            del self._open[flight.key]
        if not flight.landed.done():
            flight.landed.set_result(None)

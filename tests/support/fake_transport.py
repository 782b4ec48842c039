"""Connections with no socket: fake transports, and a loop whose clock only moves when told.

Theory of operation
-------------------
An asyncio ``Protocol`` (the inbound connection, an upstream connection) only ever talks to its
transport: it writes bytes, closes or aborts, pauses and resumes reading. A :class:`FakeTransport`
is that transport with the *peer* (the client, or the app) played by the test:

* the gateway's side is the ``asyncio.Transport`` surface: ``write``, ``close``, ``abort``,
  ``pause_reading`` ... what is written is kept in :attr:`FakeTransport.output`;
* the test's side are the peer's actions: :meth:`~FakeTransport.send` bytes, :meth:`~FakeTransport.hang_up`
  (an EOF), :meth:`~FakeTransport.reset`, :meth:`~FakeTransport.stop_taking` (the peer reads nothing,
  so the write buffer fills: ``pause_writing``) and :meth:`~FakeTransport.take_again`.

As with a real transport, every callback into the protocol runs *on the event loop* (scheduled
with ``call_soon``), and a closed transport tells its protocol ``connection_lost`` one loop turn
later. After each peer action the transport runs the loop until nothing is left to do
(:func:`settle`), so a test reads the outcome on the next line, with no sleeps.

:class:`ManualClockLoop` is an ordinary selector event loop whose ``time()`` is a number the test
moves (:meth:`~ManualClockLoop.advance`): timers (the gateway's deadline sweeper, ``wait_for``)
fire exactly when the test says, never on a slow machine's whim.

:class:`CountingTransport` is the benchmarks' transport (``bench/micro_proxy.py``): it keeps no bytes,
only counts writes, so that a million requests cost no memory and no instructions but the count.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from typing import Any

PEER = ("127.0.0.1", 50000)
_SETTLE_TURNS = 10_000  # loop turns before settle() gives up: something reschedules itself forever


class ManualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock stands still until :meth:`advance` moves it.

    ``create_connection`` is handed to :attr:`connector` (the harness plays the network); with no
    connector it refuses, so nothing in a test can reach a real socket by accident.
    Exceptions that reach the loop's handler (a callback or task that raised) are kept in
    :attr:`errors`; :func:`settle` fails the test with them.
    """

    def __init__(self, start: float = 1000.0) -> None:
        super().__init__()
        self.now = start
        self.errors: list[dict[str, Any]] = []
        self.connector: Callable[..., Any] | None = None
        self.set_exception_handler(lambda _loop, context: self.errors.append(context))

    def time(self) -> float:
        return self.now

    async def create_connection(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None = None,
        port: int | None = None,
        **kw: Any,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        if self.connector is None:
            raise ConnectionRefusedError(f"no fake network for {host}:{port}")
        made: tuple[asyncio.Transport, asyncio.BaseProtocol]
        made = await self.connector(protocol_factory, host, port)
        return made

    def advance(self, seconds: float, step: float = 0.1) -> None:
        """Move the clock ``seconds`` forward in ``step``s, running what falls due at each step
        (the sweeper ticks every 0.1 s, so deadlines fire in the order they would for real)."""
        target = self.now + seconds
        while self.now < target:
            self.now = min(self.now + step, target)
            settle(self)


def settle(loop: asyncio.AbstractEventLoop) -> None:
    """Run ``loop`` until no callback is ready and no timer is due (timers in the future wait
    for the clock to move). Raises AssertionError with any exception the loop caught meanwhile."""
    assert isinstance(loop, asyncio.BaseEventLoop)
    for _ in range(_SETTLE_TURNS):
        loop.call_soon(loop.stop)
        loop.run_forever()
        ready: Any = loop._ready  # type: ignore[attr-defined]
        scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
        due = scheduled and heapq.nsmallest(1, scheduled)[0].when() <= loop.time()
        if not ready and not due:
            break
    else:
        raise AssertionError("the event loop did not settle")
    errors = getattr(loop, "errors", None)
    if errors:
        found = list(errors)
        errors.clear()
        raise AssertionError(f"the gateway raised on the loop: {found}")


class FakeTransport(asyncio.Transport):
    """One end of a fake connection: the gateway's protocol on one side, the test on the other.

    Gateway side (what asyncio would do): ``write`` appends to :attr:`output` (ignored once closed);
    ``close``/``abort`` mark the transport closed and call ``connection_lost(None)`` a turn later;
    ``pause_reading`` holds what the peer sends until ``resume_reading``, as the kernel would.

    Test side (the peer): :meth:`send`, :meth:`hang_up`, :meth:`reset`, :meth:`stop_taking`,
    :meth:`take_again`, and :meth:`read` / :attr:`output` for what the gateway wrote. Each runs
    the loop until it settles.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, peername: tuple[str, int] = PEER) -> None:
        super().__init__()
        self.loop = loop
        self.peername = peername
        self.protocol: Any = None  # an asyncio.Protocol in all but name (see attach)
        self.output = bytearray()  # every byte the gateway wrote, in order
        self.writes = 0  # write() calls (one per syscall, for a real socket)
        self.read_offset = 0  # how far read() has consumed output
        self.reading = True  # False while the gateway paused reading
        self.closed = False  # the gateway closed (or aborted) it
        self.aborted = False  # ... with abort(): a reset, buffered bytes dropped
        self.lost = False  # connection_lost was delivered
        self.half_closed = False  # the peer sent EOF and the gateway kept the write side open
        self.high_water: int | None = None
        self.buffered = 0  # what get_write_buffer_size() says (stop_taking() raises it)
        self._held: list[bytes] = []  # sent by the peer while reading was paused

    def attach(self, protocol: Any) -> None:
        """Connect ``protocol`` to this transport (``connection_made``), as an accept would.
        (Any: the gateway's connections have every Protocol method without deriving from it.)"""
        self.protocol = protocol
        protocol.connection_made(self)

    # -- the gateway's side: asyncio.Transport ---------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            return
        self.writes += 1
        self.output += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peername
        if name == "sockname":
            return ("127.0.0.1", 8080)
        return default  # no "socket": nothing can set socket options or ask the kernel

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high_water = high

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closed

    def is_reading(self) -> bool:
        return self.reading and not self.closed

    def close(self) -> None:
        self._close(aborted=False)

    def abort(self) -> None:
        self._close(aborted=True)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        if self.reading:
            return
        self.reading = True
        held, self._held = self._held, []
        for data in held:
            self.loop.call_soon(self._deliver, data)

    def _close(self, *, aborted: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.aborted = aborted
        self.buffered = 0
        self.loop.call_soon(self._lose, None)

    def _lose(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = self.closed = True
        if self.protocol is not None:
            self.protocol.connection_lost(exc)

    def _deliver(self, data: bytes) -> None:
        if self.lost or self.protocol is None:
            return
        if not self.reading:
            self._held.append(data)
            return
        self.protocol.data_received(data)

    # -- the test's side: the peer ---------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """The peer sends ``data`` (held while the gateway does not read, as the kernel would)."""
        assert not self.half_closed, "the peer already sent EOF"
        self.loop.call_soon(self._deliver, data)
        settle(self.loop)

    def hang_up(self) -> None:
        """The peer half-closes (EOF). Unless the protocol keeps the write side open
        (``eof_received`` returns true), the transport closes, as asyncio's do."""

        def eof() -> None:
            if self.lost or self.protocol is None:
                return
            if self.protocol.eof_received():
                self.half_closed = True
            else:
                self.close()

        self.loop.call_soon(eof)
        settle(self.loop)

    def reset(self) -> None:
        """The peer resets the connection: ``connection_lost`` with ConnectionResetError at once."""
        self.loop.call_soon(self._lose, ConnectionResetError("reset by the fake peer"))
        settle(self.loop)

    def stop_taking(self) -> None:
        """The peer stops reading: the write buffer goes over high water (``pause_writing``)."""
        self.buffered = (self.high_water or 65536) + 1
        if self.protocol is not None:
            self.loop.call_soon(self.protocol.pause_writing)
        settle(self.loop)

    def take_again(self) -> None:
        """The peer reads again and empties the buffer (``resume_writing``)."""
        self.buffered = 0
        if self.protocol is not None:
            self.loop.call_soon(self.protocol.resume_writing)
        settle(self.loop)

    def read(self) -> bytes:
        """What the gateway wrote since the last ``read()``."""
        data = bytes(self.output[self.read_offset :])
        self.read_offset = len(self.output)
        return data


class CountingTransport:
    """The benchmarks' transport: counts writes and keeps nothing (enough of asyncio.Transport
    for the connections). No bytes kept and no branch taken, so it adds no cost per request
    to what ``bench/count_instructions.sh`` measures."""

    def __init__(self) -> None:
        self.written = 0

    def attach(self, protocol: Any) -> None:
        protocol.connection_made(self)

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return PEER if name == "peername" else default

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

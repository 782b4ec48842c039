"""A tunnel's bytes moved by the kernel: ``splice(2)`` socket -> pipe -> socket, both ways.

Why: a copying tunnel reads every chunk into a new ``bytes`` (a kernel-to-user copy, an
allocation, a user-to-kernel copy) and wakes the loop per 64 KiB; the bench row
``connect-bulk`` ran at 0.40-0.72x a direct TCP copy that way. ``splice`` moves the pages
from one socket's receive queue to the other socket through a pipe without them ever reaching
Python, and a 1 MiB pipe makes each wake-up move up to 1 MiB.

When: only once the tunnel is carrying nothing of its own any more: the CONNECT SNI check has
passed (the held ClientHello went out), the early and held bytes are written and both
transports' write buffers are empty (else a spliced byte could overtake a buffered one). Until
then, and wherever it cannot start (no ``os.splice``, no file descriptor, no pipe: fd limits),
the copying path carries on; nothing else changes.

How: each socket's fd is duplicated and the transports' reading is paused for good (a
transport must never read the socket too); the loop's ``add_reader`` / ``add_writer`` watch
the duplicates. Per direction: a nonblocking pipe. Readable source: splice into the pipe up
to its free room; then drain the pipe into the other socket; what the other socket does not
take (``EAGAIN``) stays in the pipe, and the source is not watched again until the pipe is
empty: at most the pipe's capacity is held per direction (backpressure, as the copying path's
pause_reading). A source's end of file, once its pipe is drained, is passed on as
``shutdown(SHUT_WR)`` (the half-close); when both directions have ended, or on any error, the
relay closes its pipes and duplicates and then the tunnel (the transports close the sockets,
and the audit line follows as before). Bytes are counted into the audit record as they move,
and each move is activity for the tunnel's idle timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
from collections.abc import Callable

from sidegate.egress.audit import AuditRecord

#: The pipe's size per direction: the most a tunnel holds in flight per direction.
PIPE_SIZE = 1024 * 1024
#: Fill-and-drain rounds per wake-up of one direction before the loop looks at the other.
ROUNDS = 4
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)

AVAILABLE = hasattr(os, "splice")


def socket_fd(transport: asyncio.BaseTransport) -> int | None:
    """The transport's socket's fd, or None when it has none (or is not plain TCP)."""
    if transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        fd = sock.fileno()
    except (OSError, ValueError):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


class _Direction:
    """One way of the tunnel: ``src`` spliced into a pipe, the pipe into ``dst``."""

    def __init__(self, relay: SpliceRelay, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        self.relay = relay
        self.src = src
        self.dst = dst
        self.outbound = outbound  # app -> destination: counted as bytes_in
        self.pipe_r = -1
        self.pipe_w = -1
        self.held = 0  # bytes in the pipe
        self.eof = False  # the source sent all it will
        self.done = False  # ...and all of it is out, the half-close passed on
        self.reading = False
        self.writing = False
        self.size = PIPE_SIZE

    def open_pipe(self) -> None:
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self.size = fcntl.fcntl(self.pipe_w, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # over /proc/sys/fs/pipe-max-size: keep the default (64 KiB)
            self.size = 65536

    def start(self) -> None:
        self._watch_source(True)

    def _watch_source(self, on: bool) -> None:
        if on == self.reading:
            return
        self.reading = on
        loop = self.relay.loop
        if on:
            loop.add_reader(self.src.fileno(), self.readable)
        else:
            loop.remove_reader(self.src.fileno())

    def _watch_sink(self, on: bool) -> None:
        if on == self.writing:
            return
        self.writing = on
        loop = self.relay.loop
        if on:
            loop.add_writer(self.dst.fileno(), self.writable)
        else:
            loop.remove_writer(self.dst.fileno())

    def readable(self) -> None:
        """Fill the pipe from the source and drain it into the other socket, while both go on
        taking bytes (up to ``ROUNDS`` a wake-up: the other direction gets its turn)."""
        relay = self.relay
        src, pipe_w, size = self.src.fileno(), self.pipe_w, self.size
        for _ in range(ROUNDS):
            try:
                moved = os.splice(src, pipe_w, size - self.held, flags=_FLAGS)
            except BlockingIOError:
                break
            except OSError as error:
                relay.fail(error)
                return
            if moved == 0:
                self.eof = True
                self._watch_source(False)
                break
            self.held += moved
            relay.moved(moved, self.outbound)
            if not self._drain() or self.held:
                break
        self.writable()

    def _drain(self) -> bool:
        """The pipe into the other socket, as far as it takes it; False once the relay failed."""
        dst = self.dst.fileno()
        while self.held:
            try:
                moved = os.splice(self.pipe_r, dst, self.held, flags=_FLAGS)
            except BlockingIOError:
                return True
            except OSError as error:
                self.relay.fail(error)
                return False
            self.held -= moved
        return True

    def writable(self) -> None:
        relay = self.relay
        if relay.closed or not self._drain():
            return
        if self.held:  # the other side is not taking bytes: stop reading this side until it does
            self._watch_source(False)
            self._watch_sink(True)
            return
        self._watch_sink(False)
        if not self.eof:
            self._watch_source(True)
            return
        if not self.done:
            self.done = True
            with contextlib.suppress(OSError):  # gone already: its own direction will tell
                self.dst.shutdown(socket.SHUT_WR)
            relay.direction_done()

    def stop(self) -> None:
        if self.reading:
            self._watch_source(False)
        if self.writing:
            self._watch_sink(False)
        for fd in (self.pipe_r, self.pipe_w):
            if fd >= 0:
                os.close(fd)
        self.pipe_r = self.pipe_w = -1


class SpliceRelay:
    """Both directions of one tunnel (see the module's docstring). ``touch`` marks activity
    (the idle timer), ``end`` closes the tunnel once the relay has let go of its fds."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        record: AuditRecord,
        touch: Callable[[], None],
        end: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.record = record
        self.touch = touch
        self.end = end
        self.closed = False
        self.socks: list[socket.socket] = []
        self.ways: list[_Direction] = []

    def start(self, client_fd: int, destination_fd: int) -> bool:
        """Take over both sockets; False (everything undone) when the kernel says no."""
        try:
            for fd in (client_fd, destination_fd):
                copy = os.dup(fd)
                try:
                    self.socks.append(socket.socket(fileno=copy))
                except OSError:
                    os.close(copy)
                    raise
            app, dest = self.socks
            self.ways = [_Direction(self, app, dest, True), _Direction(self, dest, app, False)]
            for way in self.ways:
                way.open_pipe()
        except OSError:
            self._release()
            return False
        for way in self.ways:
            way.start()
        return True

    def moved(self, count: int, outbound: bool) -> None:
        if outbound:
            self.record.bytes_in += count
        else:
            self.record.bytes_out += count
        self.touch()

    def direction_done(self) -> None:
        if all(way.done for way in self.ways):
            self.close()

    def fail(self, error: OSError) -> None:
        """A socket error (a reset, a peer gone) ends the tunnel, as the transport's own error
        would on the copying path: nothing more is said of it in the audit line there either."""
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._release()
        self.end()

    def _release(self) -> None:
        for way in self.ways:
            way.stop()
        for sock in self.socks:
            sock.close()  # the duplicate only: the transport still holds the socket itself
        self.socks = []

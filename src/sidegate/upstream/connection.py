"""One keep-alive connection to an upstream endpoint.

The connection parses responses (:mod:`sidegate.http.response_parser`) and hands every event to
its current *user* (the proxy's exchange), which it gets from :meth:`attach` and loses at
:meth:`EndpointPool.release`. Between users it sits idle in its pool with an idle deadline.

While a user is attached the connection also carries that user's upstream deadline: response
timeout until the head arrives, then the idle timeout, refreshed on every read, so a stream
that keeps sending is never cut by a total-time limit.

Those deadlines measure the app's silence only while Sidegate reads from it: while reading is
paused (:meth:`pause_reading`: the client takes the response slower than the app sends it) the
deadline does not run, and it starts whole when reading resumes; a request still in the write
buffer does not start the response timeout either. In a tunnel, the idle timeout stops while
either direction is held. What runs instead is the send timeout: while the write buffer is over
high water, an app that takes no byte for ``send_window`` is cut (``send_timeout``).

After a ``101 Switching Protocols`` it carries one end of a tunnel: what the app sends goes to the
tunnel (:class:`TunnelEnd`, the server's :class:`~sidegate.server.tunnel.Tunnel`), never
straight to the client's socket.
"""

from __future__ import annotations

import asyncio
import fcntl
import ssl
import struct
import termios
from typing import Final, Protocol, cast

from sidegate.config.snapshot import Endpoint
from sidegate.errors import (
    UpstreamFailure,
    idle_timeout,
    protocol_error,
    reset,
    response_timeout,
    send_timeout,
)
from sidegate.http.errors import ProtocolError
from sidegate.http.response_parser import ParsedResponse, ResponseParser, ResponseSink
from sidegate.server.timers import Sweeper, cut
from sidegate.upstream.tls_origin import tls_failure

# Why the deadline is held (bit flags of ``held``).
_READ_PAUSED: Final = 1  # Sidegate stopped reading: the client is not taking the response
_WRITE_FULL: Final = 2  # the app is not taking what Sidegate writes (pause_writing)
_DRAIN_CHECK: Final = 1.0  # seconds between looks at a request still in the socket buffers
_INT: Final = b"\0\0\0\0"


def _kernel_queued(transport: asyncio.Transport) -> int:
    """Bytes written but not yet taken by the peer's kernel (SIOCOUTQ); 0 if unknown."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        queued: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, _INT))[0]
    except (OSError, ValueError):
        return 0
    return queued


class TunnelEnd(Protocol):
    """Where a tunnelling connection hands what the app sends, and says that the app closed."""

    def from_upstream(self, data: bytes) -> None: ...
    def upstream_closed(self) -> None: ...


class UpstreamUser(ResponseSink):
    """What an attached user (the proxy's exchange) must handle besides response events.

    ``upstream_read_begin``/``_end`` are called around each read (the exchange corks its client
    connection, so the bytes of one upstream read leave in one write).
    """

    def upstream_read_begin(self) -> None:
        raise NotImplementedError

    def upstream_read_end(self) -> None:
        raise NotImplementedError

    def upstream_failed(self, failure: UpstreamFailure) -> None:
        raise NotImplementedError

    def upstream_writable(self, writable: bool) -> None:
        raise NotImplementedError


class ConnectionOwner:
    """What a connection needs of the pool it belongs to (:class:`~sidegate.upstream.pool.EndpointPool`
    is the one owner): its loop, endpoint, timers and buffer sizes, and two notices. Declared here
    so the connection never imports the pool that makes it."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        endpoint: Endpoint,
        sweeper: Sweeper,
        *,
        buffer_high_water: int,
        chunk_line: int,
    ) -> None:
        self.loop = loop
        self.clock = loop.time  # the loop clock, which deadlines use
        self.endpoint = endpoint
        self.sweeper = sweeper
        self.buffer_high_water = buffer_high_water
        self.chunk_line = chunk_line  # the longest chunk line a response may have (502 above)

    def discard(self, conn: UpstreamConnection) -> None:
        """``conn`` closed: forget it if it was idle here."""
        raise NotImplementedError

    def failed(self, failure: UpstreamFailure) -> None:
        """An attempt on this endpoint failed (called on failure paths only)."""
        raise NotImplementedError


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_loop",
        "deadline",
        "held",
        "idle_window",
        "parser",
        "pool",
        "queued_seen",
        "received",
        "response_window",
        "reused",
        "send_window",
        "sent",
        "stalled_since",
        "transport",
        "tunnel_to",
        "user",
    )

    def __init__(self, pool: ConnectionOwner) -> None:
        self.pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser(_Detached(), chunk_line_max=pool.chunk_line)
        self.user: UpstreamUser | None = None
        self.deadline = 0.0
        self.response_window = 0.0
        self.idle_window = 0.0
        self.send_window = 0.0
        self.sent = False  # the whole request is written (the response timeout may run)
        self.held = 0  # _READ_PAUSED | _WRITE_FULL
        self.queued_seen = 0  # request bytes the app had still to take at the last look (0: none)
        self.stalled_since = 0.0
        self.received = False  # any response byte since attach
        self.reused = False  # this connection served a request before
        self.tunnel_to: TunnelEnd | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def attach(
        self,
        user: UpstreamUser,
        head_request: bool,
        response_timeout: float,
        idle: float,
        sent: bool,
        *,
        send: float,
    ) -> None:
        """Lend this connection to ``user``; ``sent``: the request is whole (the response timeout
        starts now; otherwise at :meth:`request_sent`); ``send``: the send timeout."""
        self.user = user
        parser = self.parser
        parser.sink = user
        parser.expect(head_request)
        self.received = False
        self.sent = sent
        self.response_window = response_timeout
        self.idle_window = idle
        self.send_window = send
        self.deadline = self._loop.time() + response_timeout if sent and response_timeout else 0.0

    def request_sent(self) -> None:
        """The whole request is out: the response timeout starts now (a slow upload is not cut),
        or once the app has taken it from the buffer."""
        self.sent = True
        if self.response_window and not self.parser.in_body and not self.held:
            self.deadline = self._loop.time() + self.response_window

    def detach(self) -> None:
        self.user = None
        self.parser.sink = _DETACHED
        self.reused = True
        self.queued_seen = 0
        if self.held & _READ_PAUSED:  # idle in the pool, it must see the app close
            self.resume_reading()

    def pause_reading(self) -> None:
        """Stop reading from the app (the client is not taking the response): its deadline stops."""
        if self.transport is not None and not self.held & _READ_PAUSED:
            self.transport.pause_reading()
        self.held |= _READ_PAUSED
        self.deadline = 0.0

    def resume_reading(self) -> None:
        """Read again; the app's time starts again, whole."""
        if not self.held & _READ_PAUSED:
            return
        self.held &= ~_READ_PAUSED
        if self.transport is not None:
            self.transport.resume_reading()
        self._rearm()

    def _rearm(self) -> None:
        """The deadline of what the connection waits for, after a hold ended."""
        window = 0.0
        if self.user is None:
            return
        if self.tunnel_to is not None:
            window = 0.0 if self.held else self.idle_window
        elif self.held & _READ_PAUSED:
            window = 0.0
        elif self.parser.in_body:
            window = self.idle_window
        elif self.sent and not self.held:
            window = self.response_window
        self.deadline = self._loop.time() + window if window else 0.0

    def abort(self) -> None:
        """Close at once with a reset, dropping what is buffered (an app that takes nothing
        never drains it)."""
        self.user = None
        if self.transport is not None:
            cut(self.transport)

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        self.user = None
        if self.transport is not None:
            self.transport.close()

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and not self.parser.in_message

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport.set_write_buffer_limits(high=self.pool.buffer_high_water)
        self.pool.sweeper.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.sweeper.discard(self)
        self.pool.sweeper.unwatch_send(self)
        self.pool.discard(self)
        self.transport = None
        tunnel = self.tunnel_to
        if tunnel is not None:
            tunnel.upstream_closed()
            self.tunnel_to = None
        user, self.user = self.user, None
        if user is None:
            return
        if self.parser.eof():
            return  # the close ended a close-delimited body: the response is complete
        if isinstance(exc, ssl.SSLError):  # TLS origination: the peer's alert (TLS 1.3 sends
            failure = tls_failure(str(self.pool.endpoint), exc)  # "certificate required" here)
        else:
            failure = reset(str(self.pool.endpoint), retryable=self.reused and not self.received)
        if tunnel is None:  # the end of a tunnel is not a failure of the endpoint
            self.pool.failed(failure)
        user.upstream_failed(failure)

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel_to
        if tunnel is not None:
            tunnel.from_upstream(data)  # may hold this side (the client is full): then no idle deadline
            if self.idle_window and not self.held:
                self.deadline = self._loop.time() + self.idle_window
            return
        user = self.user
        if user is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self.close()
            return
        self.received = True
        if self.idle_window and self.parser.in_body:
            self.deadline = self._loop.time() + self.idle_window
        user.upstream_read_begin()
        try:
            offset = self.parser.feed(data)
        except ProtocolError as error:
            self.user = None
            self.close()
            failure = protocol_error(str(self.pool.endpoint), error.reason)
            self.pool.failed(failure)
            user.upstream_failed(failure)
            offset = None
        finally:
            user.upstream_read_end()
        if offset is not None and self.tunnel_to is not None and offset < len(data):
            self.tunnel_to.from_upstream(data[offset:])

    def eof_received(self) -> bool | None:
        return False

    def pause_writing(self) -> None:
        self.held |= _WRITE_FULL
        if self.tunnel_to is not None:
            self.deadline = 0.0  # held both ways now: the send timeout governs
        if self.transport is not None:
            self.pool.sweeper.watch_send(self, self.transport, self.send_window)
        if self.user is not None:
            self.user.upstream_writable(False)

    def resume_writing(self) -> None:
        self.held &= ~_WRITE_FULL
        self.pool.sweeper.unwatch_send(self)
        if self.user is not None:
            self._rearm()
            self.user.upstream_writable(True)

    def on_send_timeout(self) -> None:
        """The app took no byte of the request (or of the tunnel) for ``send_window``."""
        user = self.user
        self.abort()
        if user is None:
            return
        failure = send_timeout(str(self.pool.endpoint), self.send_window)
        if self.tunnel_to is None:  # a stuck tunnel peer is not a failure of the endpoint
            self.pool.failed(failure)
        user.upstream_failed(failure)

    # -- deadlines -----------------------------------------------------------------------------

    def on_deadline(self, now: float) -> None:
        user = self.user
        if user is None:
            self.close()  # idle in the pool for too long
            return
        in_body = self.parser.in_body
        if not in_body and self.tunnel_to is None and self._still_taking(now):
            return
        endpoint = str(self.pool.endpoint)
        if in_body or self.tunnel_to is not None:
            failure = idle_timeout(endpoint, self.idle_window)
        else:
            failure = response_timeout(endpoint, self.response_window)
        if self.tunnel_to is None:  # a quiet tunnel timing out is not a failure of the endpoint
            self.pool.failed(failure)
        self.close()
        user.upstream_failed(failure)

    def _still_taking(self, now: float) -> bool:
        """The response timeout ran out, but the app may still be taking the request: a big
        upload sits in the socket buffers after Sidegate wrote it. While it is (looked at every
        second) the response timeout waits, and starts whole once all is taken; no progress for
        ``send_window`` is a send timeout. Only a deadline that ran out pays for the look."""
        transport = self.transport
        if transport is None:
            return False
        queued = transport.get_write_buffer_size() + _kernel_queued(transport)
        if not queued:
            if not self.queued_seen:
                return False  # the app had the whole request: a real response timeout
            self.queued_seen = 0
            self.deadline = now + self.response_window  # taken now: its answer's time starts
            return True
        if not self.queued_seen or queued < self.queued_seen:
            self.stalled_since = now
        self.queued_seen = queued
        if self.send_window and now - self.stalled_since >= self.send_window:
            self.on_send_timeout()
            return True
        self.deadline = now + _DRAIN_CHECK
        return True

    def response_started(self) -> None:
        """The response head arrived: from now on only the idle window applies (refreshed by
        every read), not the response timeout."""
        idle = self.idle_window
        self.deadline = self.pool.clock() + idle if idle else 0.0

    def start_tunnel(self, tunnel: TunnelEnd, idle: float) -> None:
        """After a 101: what the app sends goes to ``tunnel``; the idle timeout covers both ways."""
        self.tunnel_to = tunnel
        self.idle_window = idle
        self.deadline = self._loop.time() + idle if idle and not self.held else 0.0

    def tunnel_write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)  # may fill the app's buffer: then no idle deadline
        if self.idle_window and not self.held:
            self.deadline = self._loop.time() + self.idle_window


class _Detached(ResponseSink):
    """Sink of a connection with no user: a response with no request is a broken peer."""

    def on_informational(self, head: ParsedResponse) -> None:
        raise ProtocolError(502, "unsolicited response")

    def on_response_head(self, head: ParsedResponse) -> None:
        raise ProtocolError(502, "unsolicited response")

    def on_response_body(self, data: bytes) -> None:
        raise ProtocolError(502, "unsolicited response")

    def on_response_end(self) -> None:
        raise ProtocolError(502, "unsolicited response")


_DETACHED: Final = _Detached()

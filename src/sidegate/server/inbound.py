"""The inbound connection: client bytes in, requests to the handler, responses back, in order.

Theory of operation
-------------------
One :class:`InboundConnection` per client socket: the HTTP/1.1 connection of the stream interface
(:mod:`sidegate.server.stream`). It owns the transport, the strict request parser, the
per-connection deadline and the order of responses. It knows nothing of routes or upstreams: for
each request head it asks the handler (the proxy) for a :class:`RequestStream` and feeds it the
request events; the stream answers with response events, which the write side
(:class:`~sidegate.server.response_writer.ResponseWriter`, this class's base) frames and writes.
After a ``101`` the bytes go through a :class:`~sidegate.server.tunnel.Tunnel`.

Pipelining: requests are answered strictly in order. A request that arrives while another is
being answered waits in a queue with its body buffered; when the buffered bytes pass the
high-water mark the connection stops reading from the client until the queue drains.

Deadlines (see :mod:`sidegate.server.timers`) follow the read side: waiting for the first byte of
a request (keep-alive idle: close quietly), inside a head (408), inside a body (408).
While a response is being produced, the stream's upstream timeouts govern instead.
They measure the client's silence only while Sidegate reads from it: while reading is paused
(the app takes the body slower than the client sends it, or pipelined requests wait), the
deadline does not run, and it starts whole again when reading resumes. The other half is the
send timeout: while the client's write buffer is over high water, a client that takes no byte
for ``send_timeout`` is cut (its stream ends ``client_send_timeout``).

"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Final, cast

from sidegate.http.errors import ProtocolError
from sidegate.http.request_fields import special_fields
from sidegate.http.request_head import ParsedRequest
from sidegate.http.request_parser import RequestParser
from sidegate.http.writer import error_response, header_block, render_local, status_line
from sidegate.server.response_writer import ResponseWriter
from sidegate.server.stream import RequestStream
from sidegate.server.timers import cut
from sidegate.server.tunnel import Tunnel

if TYPE_CHECKING:
    from sidegate.server.shared import ListenerShared
    from sidegate.server.tunnel import TunnelPeer

log = logging.getLogger("sidegate.inbound")

# Read phases.
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2
# Reasons to stop reading from the client (bit flags).
PAUSE_UPSTREAM: Final = 1  # the upstream cannot take more request body yet
PAUSE_QUEUE: Final = 2  # pipelined requests have buffered enough
PAUSE_UPGRADE: Final = 4  # waiting for the upstream's answer to an Upgrade request


_ERROR_KINDS: Final = {
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    414: "uri_too_long",
    431: "head_too_large",
    501: "not_implemented",
    505: "version_not_supported",
}


class _Queued(RequestStream):
    """A pipelined request waiting for the ones before it to be answered."""

    def __init__(self, head: ParsedRequest) -> None:
        self.finished = False
        self.head = head
        self.chunks: list[bytes] = []
        self.ended = False
        self.size = 0

    def request_body(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)

    def request_end(self) -> None:
        self.ended = True


class InboundConnection(ResponseWriter):
    __slots__ = (
        "_closing",
        "_eof",
        "_held_error",
        "_loop",
        "_parser",
        "_paused",
        "_phase",
        "_queue",
        "_reading",
        "_shared",
        "_special_mode",
        "_stream",
        "_tunnel",
        "_upgrade_buffer",
        "client_ip",
        "deadline",
    )

    def __init__(self, shared: ListenerShared) -> None:
        super().__init__()
        self._shared = shared
        self._loop = shared.loop
        limits = shared.limits
        fields = special_fields(limits.drop_fields, limits.underscore_headers, limits.managed_fields)
        self._parser = RequestParser(
            self, limits.head_size, limits.header_count, fields, chunk_line_max=limits.chunk_line
        )
        self.client_ip = ""
        self.deadline = 0.0
        self._phase = _IDLE
        self._stream: RequestStream | None = None
        self._reading: RequestStream | None = None
        self._queue: deque[_Queued] = deque()
        self._paused = 0
        self._closing = False
        # Any of: closing, tunnelling, upgrade pending, a broken request held (off again only
        # when an upgrade is refused); data_received checks this one flag on its fast path.
        self._special_mode = False
        self._eof = False  # the client half-closed: answer what it sent, then close
        self._held_error: ProtocolError | None = None
        self._tunnel: Tunnel | None = None
        self._upgrade_buffer: list[bytes] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        transport.set_write_buffer_limits(high=self._shared.buffer_high_water)
        shared = self._shared
        shared.connections.add(self)
        shared.stats.connections_active += 1
        if shared.keep_alive_off:
            self.keep_alive_wanted = False
        self.deadline = self._loop.time() + shared.keepalive_idle
        shared.sweeper.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        shared = self._shared
        shared.connections.discard(self)
        shared.stats.connections_active -= 1
        shared.sweeper.discard(self)
        shared.sweeper.unwatch_send(self)
        self._closing = True
        self._special_mode = True
        self.keep_alive_wanted = False
        if self._tunnel is not None:
            self._tunnel.client_closed()
            self._tunnel = None
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.client_lost()
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._special_mode:
            if self._tunnel is not None:
                self._tunnel.from_client(data)
            elif self._upgrade_buffer is not None:
                self._upgrade_buffer.append(data)
            return  # closing, or a broken request is waiting for its 400: ignore the rest
        if self._phase == _IDLE:
            self._phase = _HEAD
            self.deadline = self._loop.time() + self._shared.head_timeout
        elif self._phase == _BODY:
            self.deadline = self._loop.time() + self._shared.body_idle
        self.feeding = True
        try:
            offset = self._parser.feed(data)
        except ProtocolError as error:
            self.feeding = False
            self._protocol_error(error)
            return
        self.feeding = False
        stream = self._stream
        if stream is not None:
            stream.flush_upstream()
        if offset is not None:
            if self._stream is None and not self._queue:  # answered already, by Sidegate itself
                if not self._closing:
                    self._parser.upgrade_refused()
                    if offset < len(data):
                        self.data_received(data[offset:])
                return
            # An Upgrade request: what follows its head belongs to the tunnel, if one opens.
            self._upgrade_buffer = [data[offset:]] if offset < len(data) else []
            self._special_mode = True
            self._pause(PAUSE_UPGRADE)

    def eof_received(self) -> bool:
        if self._tunnel is not None:
            self._tunnel.client_closed()
            return False
        # Half-close: answer what was asked, then close (keep the write side open meanwhile).
        # A request cut off in its head or body can never complete: that is a client gone.
        if (self._stream is None and not self._queue) or self._phase != _IDLE:
            return False
        self._eof = True
        return True

    def pause_writing(self) -> None:
        self.writable = False
        if self.transport is not None:
            self._shared.sweeper.watch_send(self, self.transport, self._shared.send_timeout)
        if self._stream is not None:
            self._stream.client_writable(False)

    def resume_writing(self) -> None:
        self.writable = True
        self._shared.sweeper.unwatch_send(self)
        if self._stream is not None:
            self._stream.client_writable(True)

    def on_send_timeout(self) -> None:
        """The client took no byte for ``send_timeout`` while Sidegate had bytes for it: cut it
        (an abort: a close would wait for the buffer to drain, which it does not)."""
        self._shared.stats.send_timeouts += 1
        self._closing = True
        self._special_mode = True
        self.keep_alive_wanted = False
        self._queue.clear()
        self._wbuf = None
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.client_stalled()
        if self.transport is not None:
            cut(self.transport)

    # -- parser sink ---------------------------------------------------------------------------

    def on_request_head(self, head: ParsedRequest) -> None:
        head.client_ip = head.peer_ip = self.client_ip  # the stream may find the real client
        if head.has_body:
            self._phase = _BODY
            self.deadline = 0.0 if self._paused else self._loop.time() + self._shared.body_idle
        if self._stream is None and not self._queue:
            self._begin_response(head)
            self._stream = self._reading = stream = self._shared.handler.begin(self, head)
            if stream.finished:  # answered on the spot (finish() has run already)
                self._stream = None
        else:
            queued = _Queued(head)
            self._queue.append(queued)
            self._reading = queued

    def on_request_body(self, data: bytes) -> None:
        reading = self._reading
        if reading is None:
            return
        reading.request_body(data)
        if type(reading) is _Queued and self._queued_bytes() > self._shared.buffer_high_water:
            self._pause(PAUSE_QUEUE)

    def on_field_dropped(self, name: bytes) -> None:
        self._shared.stats.fields_dropped += 1

    def on_request_end(self) -> None:
        self._phase = _IDLE
        if self._stream is None and not self._queue:
            self.deadline = self._loop.time() + self._shared.keepalive_idle
        else:
            self.deadline = 0.0
        reading, self._reading = self._reading, None
        if reading is not None:
            reading.request_end()

    # -- used by the stream ------------------------------------------------------------------

    def _finished(self, keep_alive: bool) -> None:
        """The current response is complete; start the next pipelined request or close."""
        self._stream = None
        if self._paused & PAUSE_UPSTREAM:
            self._resume(PAUSE_UPSTREAM)
        if not keep_alive or self._closing or (self._shared.draining and not self._queue):
            self._close_soon()
            return
        if self._queue:
            self._start_queued()
        elif self._upgrade_buffer is not None and self._tunnel is None:
            self._upgrade_declined()
        elif self._held_error is not None:  # every request before the broken one is answered
            error, self._held_error = self._held_error, None
            self._answer_error(error)
        elif self._eof:
            self._close_soon()
        elif self._phase == _IDLE:
            self.deadline = self._loop.time() + self._shared.keepalive_idle

    def pause_reading(self) -> None:
        self._pause(PAUSE_UPSTREAM)

    def resume_reading(self) -> None:
        self._resume(PAUSE_UPSTREAM)

    def switch_protocols(
        self,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        upgrade: bytes,
        added: bytes,
        peer: TunnelPeer,
    ) -> Tunnel | None:
        """Send the ``101`` and switch to tunnelling raw bytes to ``peer`` (call the tunnel's
        ``start`` once the peer is ready: it passes on what the client sent early)."""
        transport = self.transport
        if transport is None:
            return None
        self.send(
            status_line(101, reason)
            + header_block(headers)
            + b"Connection: Upgrade\r\nUpgrade: "
            + upgrade
            + b"\r\n"
            + added
            + b"\r\n"
        )
        self._tunnel = tunnel = Tunnel(transport, peer, b"".join(self._upgrade_buffer or ()))
        self._special_mode = True
        self.deadline = 0.0
        self._upgrade_buffer = None
        self._resume(PAUSE_UPGRADE)
        return tunnel

    def _upgrade_declined(self) -> None:
        """The app answered an upgrade request without switching protocols (any status but
        101): the connection is still HTTP/1.1, so what the client sent behind that request is
        read as the next requests, in order."""
        buffered = b"".join(self._upgrade_buffer or ())
        self._upgrade_buffer = None
        self._special_mode = self._held_error is not None  # nothing else turned it on
        self._parser.upgrade_refused()
        self._phase = _IDLE
        self.deadline = self._loop.time() + self._shared.keepalive_idle
        self._resume(PAUSE_UPGRADE)
        if buffered:
            self.data_received(buffered)

    @property
    def is_idle(self) -> bool:
        """Between requests with nothing owed: safe to close without cutting anything."""
        return self._stream is None and not self._queue and self._phase == _IDLE and self._tunnel is None

    def drain(self) -> None:
        """The gateway is stopping: close now if idle, else after the current response."""
        self.keep_alive_wanted = False
        if self.is_idle:
            self._close_soon()

    # -- internals -----------------------------------------------------------------------------

    def on_deadline(self, now: float) -> None:
        if self._phase == _HEAD:
            self._answer_error(ProtocolError(408, "request head not received in time"))
        elif self._phase == _BODY:
            stream, self._stream = self._stream, None
            started = self.response_started
            if stream is not None:
                stream.client_lost()
            if started:
                self._close_soon()
            else:
                self._answer_error(ProtocolError(408, "request body stalled"))
        elif self._stream is None:
            self._close_soon()  # keep-alive idle

    def _protocol_error(self, error: ProtocolError) -> None:
        self._pause(PAUSE_QUEUE)
        if self._reading is not None and self._reading is self._stream:
            # The request being answered is itself broken (e.g. a bad chunk): abort it.
            stream, self._stream = self._stream, None
            started = self.response_started
            stream.client_lost()
            if started:
                self._close_soon()
                return
        elif self._stream is not None:
            self._held_error = error  # answer after the responses already owed
            self._special_mode = True
            self._stream.flush_upstream()  # the request before the broken one was whole
            return
        self._answer_error(error)

    def _answer_error(self, error: ProtocolError) -> None:
        self._closing = True
        self._special_mode = True
        self.keep_alive_wanted = False
        self._queue.clear()
        response = error_response(error.status, _ERROR_KINDS.get(error.status, "bad_request"), error.reason)
        if self.transport is not None and not self.transport.is_closing():
            request_id = self._shared.handler.request_id()
            self.send(render_local(response, request_id, keep_alive=False))  # after what is corked
            self._shared.handler.rejected(self.client_ip, error.status, error.reason, request_id)
        self._shared.stats.protocol_errors += 1
        self._close_soon()

    def _start_queued(self) -> None:
        queued = self._queue.popleft()
        self._begin_response(queued.head)
        self._stream = stream = self._shared.handler.begin(self, queued.head)
        if stream.finished:
            self._stream = None
        if self._reading is queued:
            self._reading = stream
        for chunk in queued.chunks:
            stream.request_body(chunk)
        if queued.ended:
            stream.request_end()
        if self._paused & PAUSE_QUEUE and self._queued_bytes() <= self._shared.buffer_high_water:
            self._resume(PAUSE_QUEUE)

    def _queued_bytes(self) -> int:
        return sum(q.size for q in self._queue)

    def _open_for_local(self) -> bool:
        return self.keep_alive_wanted and not self._closing and self._held_error is None

    def _pause(self, reason: int) -> None:
        if not self._paused:
            if self.transport is not None:
                self.transport.pause_reading()
            if self._phase != _IDLE:
                self.deadline = 0.0  # the client's silence is Sidegate's doing from now on
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        was = self._paused
        self._paused &= ~reason
        if was and not self._paused and self.transport is not None and not self._closing:
            self.transport.resume_reading()
            if self._phase == _BODY:  # the client's time starts again, whole
                self.deadline = self._loop.time() + self._shared.body_idle
            elif self._phase == _HEAD:
                self.deadline = self._loop.time() + self._shared.head_timeout

    def _close_soon(self) -> None:
        self._closing = True
        self._special_mode = True
        self.keep_alive_wanted = False
        if self._wbuf is not None:
            self.uncork()
        transport = self.transport
        if transport is not None:
            transport.close()  # flushes what is buffered, then closes
            if transport.get_write_buffer_size():  # ... if the client takes it within send_timeout
                self._shared.sweeper.watch_send(self, transport, self._shared.send_timeout)

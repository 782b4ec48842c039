"""The egress listener: one connection per app socket, reading the forms an outbound proxy takes.

Theory of operation
-------------------
Each request line is peeked at first (:mod:`sidegate.egress.connect_head`):

* ``CONNECT host:port`` is read whole there and becomes a tunnel (:mod:`sidegate.egress.tunnel`);
* anything else goes to the shared strict request reader, the inbound listener's
  (:class:`~sidegate.http.request_parser.RequestParser`): the same framing rules (CL with TE,
  bad chunking, obs-fold... all 400), hop-by-hop and proxy fields (Proxy-Connection,
  Proxy-Authorization, TE, Keep-Alive and whatever Connection names) dropped, and for an
  absolute-form target its authority taken over Host. Only the scheme is remembered here.

Each request goes to an :class:`~sidegate.egress.proxy.OutboundCall` at its head, which
decides, dials and streams: the body pieces follow as they are read, the response comes back
while the body may still be coming. Reading pauses when the call says so (the destination is
not taking the body), and the client's deadline (``head_timeout`` from each read) stops while
it is paused. Requests are answered one at a time: a request pipelined behind one still being
answered closes the connection once the first is answered (clients that proxy do not pipeline).
"""

from __future__ import annotations

import asyncio
import os
from typing import cast

from sidegate.egress.answers import error_response
from sidegate.egress.audit import AuditRecord
from sidegate.egress.connect_head import peek_request_line, read_connect_head
from sidegate.egress.original_dst import redirected_destination
from sidegate.egress.proxy import OutboundCall
from sidegate.egress.state import EgressState
from sidegate.egress.transparent import TransparentPeek, transparent_request
from sidegate.http.errors import ProtocolError
from sidegate.http.request_head import ParsedRequest
from sidegate.http.request_parser import RequestParser, RequestSink

_IDLE, _REQUEST, _WAITING, _TUNNEL, _CLOSED = range(5)


class _Sink(RequestSink):
    """The reader's events, handed to the connection (a native base class: composition)."""

    def __init__(self, conn: EgressConnection) -> None:
        self.conn = conn

    def on_request_head(self, head: ParsedRequest) -> None:
        self.conn.request_head(head)

    def on_request_body(self, data: bytes) -> None:
        self.conn.request_body(data)

    def on_request_end(self) -> None:
        self.conn.request_end()


class EgressConnection(asyncio.Protocol):
    """One connection from the app (see the module's docstring)."""

    def __init__(self, server: EgressState) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.state = _IDLE
        self.pending = b""  # bytes not yet given to the reader (or held while answering)
        self.scheme = ""
        self.parser = RequestParser(_Sink(self), server.head_size, server.header_count)
        self.call: OutboundCall | None = None
        self.close_after = False
        self.deadline = 0.0  # loop time of the client's deadline, 0: none (the server's sweeper checks)
        self.original: tuple[str, int] | None = None  # where a redirected connection was going
        self.peek: TransparentPeek | None = None  # its first bytes, until they are known

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) else ""
        self.server.connections.add(self)
        self.server.sweeper.add(self)
        if self.server.spec.transparent:  # transparent mode (egress.transparent)
            self.original = redirected_destination(transport.get_extra_info("socket"))
            if self.original is not None:
                self.peek = TransparentPeek(self, self.original)
                return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _CLOSED
        self._disarm()
        self.server.sweeper.discard(self)
        self.server.connections.discard(self)
        if self.peek is not None:
            self.peek.cancel()
        call, self.call = self.call, None
        if call is not None:
            call.client_lost()

    def data_received(self, data: bytes) -> None:
        if self.peek is not None:
            self.peek.feed(data)
            return
        if self.state == _TUNNEL:
            if self.call is not None:
                self.call.from_client(data)
            return
        if self.state == _CLOSED:
            return
        self.pending += data
        self._arm()
        if self.state == _WAITING:
            if len(self.pending) > self.server.head_size and self.transport is not None:
                self.transport.pause_reading()  # resumed when the answer is out
            return
        self._read()

    def eof_received(self) -> bool | None:
        if self.state == _TUNNEL and self.call is not None:
            self.call.client_eof()
            return True  # keep the socket half-open: the destination may still answer
        return None

    def pause_writing(self) -> None:
        if self.call is not None:
            self.call.client_writable(False)

    def resume_writing(self) -> None:
        if self.call is not None:
            self.call.client_writable(True)

    # -- reading -------------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            if self.state == _IDLE:
                line = peek_request_line(self.pending, self.server.head_size)
                if line is None:
                    return
                if line.method == b"CONNECT":
                    self._connect()
                    return
                self.scheme = line.scheme
                self.state = _REQUEST
            data, self.pending = self.pending, b""
            self.parser.feed(data)
        except ProtocolError as error:
            self.answer_error(error.status, "bad_request", error.reason)

    def _connect(self) -> None:
        read = read_connect_head(self.pending, self.server.head_size)
        if read is None:
            return
        head, end = read
        early, self.pending = self.pending[end:], b""
        self.state = _WAITING
        self._disarm()
        self.call = OutboundCall(self.server, self, "CONNECT", self.client)
        self.call.start_tunnel(head, early)

    def request_head(self, head: ParsedRequest) -> None:
        if self.state != _REQUEST or self.call is not None:
            self.close_after = True  # pipelined behind a request still being answered
            return
        self.call = OutboundCall(self.server, self, head.method.decode("latin-1"), self.client)
        if self.original is not None:
            self.scheme = transparent_request(self.call, head, self.scheme, self.original)
        self.call.begin(head, self.scheme)

    def request_body(self, data: bytes) -> None:
        if self.call is not None and self.state == _REQUEST:
            self.call.request_body(data)

    def request_end(self) -> None:
        if self.call is not None and self.state == _REQUEST:
            self.state = _WAITING
            self._disarm()
            self.call.request_end()

    # -- the client's deadlines ----------------------------------------------------------------

    def _arm(self) -> None:
        """(Re)start the deadline of a connection being read: ``keepalive_idle`` between
        requests, ``head_timeout`` from each read while a request is coming in (a client that
        stops mid-request gets a 408). A deadline, not a timer: the server's sweeper looks at
        it every 100 ms, so a request costs two float stores instead of two timers."""
        server = self.server
        idle = self.state == _IDLE and not self.pending
        self.deadline = server.loop.time() + (server.keepalive_idle if idle else server.head_timeout)

    def _disarm(self) -> None:
        self.deadline = 0.0

    def on_deadline(self, now: float) -> None:
        """The sweeper: the deadline passed."""
        self._expired()

    def _expired(self) -> None:
        self.deadline = 0.0
        if self.state in (_IDLE, _REQUEST):
            if self.state == _IDLE and not self.pending:
                self.close()
                return
            call, self.call = self.call, None
            if call is not None:
                call.client_lost()
                if call.leg is not None and call.leg.head_sent:  # mid-response: no 408 can follow
                    self.close()
                    return
            self.answer_error(408, "request_timeout", "the request did not arrive in time")

    # -- what the call does to this connection -------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and self.state != _CLOSED:
            self.transport.write(data)

    def answered(self, keep_alive: bool) -> None:
        """The current request is answered; read the next one, or close."""
        self.call = None
        if self.state == _CLOSED:
            return
        if not keep_alive or self.close_after or self.state == _REQUEST:
            self.close()  # a request still being read when answered (a 403, a 413) ends here
            return
        self.state = _IDLE
        self.scheme = ""
        self._arm()
        if self.transport is not None:
            self.transport.resume_reading()
        if self.pending:
            self._read()

    def become_tunnel(self) -> None:
        """The tunnel is up: what the app sent while it was opening (held in ``pending``, the
        reading perhaps paused) goes on first, then every read."""
        self.state = _TUNNEL
        held, self.pending = self.pending, b""
        if self.transport is not None:
            self.transport.resume_reading()
        if held and self.call is not None:
            self.call.from_client(held)
        call = self.call
        if call is not None and call.tunnel is not None and self.transport is not None:
            call.tunnel.tunnel_up(self.transport)  # then zero copy, once it may

    def transparent_http(self, data: bytes) -> None:
        """A redirected connection turned out to speak HTTP: read it as any other."""
        self.data_received(data)

    def take_call(self, call: OutboundCall) -> None:
        """A redirected connection became a tunnel's (TLS or raw TCP): the call has it now."""
        self.call = call
        self.state = _WAITING
        self._disarm()

    def answer_error(self, status: int, error: str, reason: str) -> None:
        """Answer a request that could not be read (or taken) here, and close; it leaves an
        audit line too (a request the reader refused is a call the app tried to make)."""
        request_id = os.urandom(8).hex()
        self.write(error_response(status, error, reason, request_id, close=True))
        record = AuditRecord(request_id, "unreadable", "", self.client, self.server.audit.clock())
        record.status, record.reason, record.error = status, reason, error
        self.server.audit.finish(record)
        self.close()

    def write_eof(self) -> None:
        if self.transport is not None and self.state != _CLOSED and self.transport.can_write_eof():
            self.transport.write_eof()

    def close(self) -> None:
        self.state = _CLOSED
        if self.transport is not None:
            self.transport.close()

    def pause_reading(self) -> None:
        """Backpressure: stop reading the app, and its deadline with it (the silence is ours)."""
        if self.transport is not None:
            self.transport.pause_reading()
        if self.state == _REQUEST:
            self._disarm()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()
        if self.state == _REQUEST:
            self._arm()

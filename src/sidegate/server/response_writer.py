"""The write side of an HTTP/1.1 inbound connection: response events in, client bytes out.

It frames what the request logic sends (:mod:`sidegate.server.framing` decides how: the status
line, Content-Length kept, chunked re-encoding, bodiless responses, ``Connection: close`` or
``keep-alive``) and writes it, corked while one upstream read is processed so a response head and
the body bytes that came with it leave in one ``write`` (one syscall, one packet).

A base class of :class:`~sidegate.server.inbound.InboundConnection` (the read side) rather than a
member, so every call stays a direct native call when compiled; the read side says when a
response may keep the connection open (:meth:`_open_for_local`) and what follows a finished one
(:meth:`_finished`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from sidegate.http.messages import LocalResponse, ReadyResponse
from sidegate.http.request_parser import RequestSink
from sidegate.http.wire import join_head
from sidegate.http.writer import LAST_CHUNK, STATUS_LINES, chunk, header_block, render_local, status_line
from sidegate.server.framing import CHUNKED, body_framing, head_end, keep_open
from sidegate.server.stream import ResponseChannel

if TYPE_CHECKING:
    from sidegate.http.request_head import ParsedRequest

_STATUS_LINES: Final = STATUS_LINES  # Final: read from a C static when compiled, not the module dict
_join_head: Final = join_head
_CHUNKED: Final = CHUNKED


class ResponseWriter(RequestSink, ResponseChannel):
    """Frames and writes the responses of one client connection (see the module's docstring)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.writable = True
        self.feeding = False  # inside the parser: streams hold upstream bytes until it returns
        self.response_started = False
        self.keep_alive_wanted = True  # false once closing or draining: responses say Connection: close
        self._wbuf: list[bytes] | None = None
        self._cork_fresh = False  # corked before any byte of the current response
        # What framing needs of the request the current response answers (not the request
        # itself: it goes with its exchange, and the connection outlives both).
        self._method = b""
        self._version = b""
        self._keep_alive_asked = False
        self._keep = False  # the current response keeps the connection open
        self._chunked = False  # the current response body is re-chunked

    def _begin_response(self, request: ParsedRequest) -> None:
        """A new request is being answered."""
        self._method = request.method
        self._version = request.version
        self._keep_alive_asked = request.keep_alive
        self.response_started = False
        self._keep = False
        self._chunked = False

    # -- response events (ResponseChannel) -----------------------------------------------------

    def informational(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        if self._version == b"1.1":  # HTTP/1.0 has no 1xx
            self.send(status_line(status, reason) + header_block(headers) + b"\r\n")

    def response_head(
        self, status: int, headers: list[tuple[bytes, bytes]], added: list[bytes], length: bytes | None
    ) -> None:
        version = self._version
        framing = body_framing(self._method, version, status, length is not None)
        self._keep = keep = keep_open(self._keep_alive_asked, self.keep_alive_wanted, framing=framing)
        if length is not None:
            added.append(b"Content-Length: ")
            added.append(length)
            added.append(b"\r\n")
        elif framing == _CHUNKED:
            added.append(b"Transfer-Encoding: chunked\r\n")
            self._chunked = True
        added.append(head_end(keep, version))
        self.send(_join_head([_STATUS_LINES.get(status) or status_line(status)], headers, added))

    def response_body(self, data: bytes) -> None:
        self.send(chunk(data) if self._chunked else data)

    def response_end(self, reusable: bool) -> None:
        if self._chunked:
            self.send(LAST_CHUNK)
        self._finished(self._keep and reusable)

    def local_answer(
        self, response: LocalResponse | ReadyResponse, request_id: bytes, *, request_read: bool
    ) -> None:
        head_only = self._method == b"HEAD"
        keep = request_read and keep_open(
            self._keep_alive_asked, self._open_for_local(), asked_close=response.close
        )
        if isinstance(response, ReadyResponse):
            parts = [response.head, b"X-Request-Id: ", request_id, b"\r\n"]
            parts.append(b"\r\n" if keep else b"Connection: close\r\n\r\n")
            if not head_only:
                parts.append(response.body)
            self.send(b"".join(parts))
        else:
            self.send(render_local(response, request_id, keep_alive=keep, head_only=head_only))
        self._finished(keep)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- writing -------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Write response bytes (buffered while corked)."""
        self.response_started = True
        if self._wbuf is not None:
            self._wbuf.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def cork(self) -> None:
        if self._wbuf is None:
            self._wbuf = []
            self._cork_fresh = not self.response_started

    def retract(self) -> bool:
        """Take back the current response if none of it has left yet (it is all in the cork
        buffer): the upstream read that began it turned out broken, and a 502 can still be sent
        instead. False when some of it is out already."""
        if self._wbuf is None or not self._cork_fresh:
            return False
        self._wbuf = []
        self.response_started = False
        self._chunked = False
        return True

    def uncork(self) -> None:
        wbuf, self._wbuf = self._wbuf, None
        if wbuf and self.transport is not None:
            self.transport.write(wbuf[0] if len(wbuf) == 1 else b"".join(wbuf))

    # -- what the read side decides ------------------------------------------------------------

    def _open_for_local(self) -> bool:
        """Whether a local answer may leave the connection open (not closing, nothing broken
        waiting behind it)."""
        raise NotImplementedError

    def _finished(self, keep_alive: bool) -> None:
        """The current response is complete: start the next request, or close."""
        raise NotImplementedError

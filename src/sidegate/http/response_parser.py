"""Upstream response reader: bytes in, response heads and body chunks out.

llhttp reads response heads (given each head whole, trimmed of the whitespace after field
values, as the request reader does: ``held``); the body is framed here: Content-Length counted, chunked
read by :class:`~sidegate.http.chunked.ChunkedBody` (its chunk lines bounded), close-delimited
until the upstream closes; 1xx, 204 and 304 have none. llhttp cannot know the request method: a
response to HEAD has no body whatever its Content-Length says, so for HEAD the message ends at
the head. Limits: ``MAX_RESPONSE_HEAD`` bytes and ``MAX_RESPONSE_FIELDS`` fields (502 beyond).

The fast lane (``sidegate.http.wire``, in C) reads plain heads whole before llhttp sees them.

Hop-by-hop and framing headers are kept out of ``ResponseHead.headers``; the framing is described
by fields (``content_length``, ``chunked``, ``close_delimited``) and re-written by the proxy.
"""

from __future__ import annotations

from typing import Final

import httptools
from mypy_extensions import mypyc_attr

from sidegate.http.chunked import CHUNK_LINE_MAX, ChunkedBody
from sidegate.http.errors import ProtocolError
from sidegate.http.held import HELD, OVER, HeldHead, llhttp_refusal
from sidegate.http.messages import ResponseHead
from sidegate.http.syntax import PLAIN_FIELD, FieldKinds, connection_tokens, nominated_headers
from sidegate.http.wire import AVAILABLE, scan_response

# Final: compiled code reads a Final module name from a C static, any other imported name from
# the module's dict (a look-up per use).
_FAST_LANE_BUILT: Final = AVAILABLE

_CL: Final = 0
_TE: Final = 1
_CONN: Final = 2
_HOP: Final = 3
_VIA: Final = 4
_UPG: Final = 5
_SPECIAL: Final[dict[bytes, int]] = {
    b"content-length": _CL,
    b"transfer-encoding": _TE,
    b"connection": _CONN,
    b"keep-alive": _HOP,
    b"proxy-connection": _HOP,
    b"te": _HOP,
    b"trailer": _HOP,
    b"upgrade": _UPG,
    b"via": _VIA,
    b"x-request-id": _HOP,  # the proxy sets the request's own id on the response
}
_FIELDS: Final = FieldKinds(_SPECIAL)
MAX_RESPONSE_HEAD: Final = 64 * 1024
MAX_RESPONSE_FIELDS: Final = 100  # as the inbound listener's default header_count (and Envoy's)


@mypyc_attr(allow_interpreted_subclasses=True)  # tests and tools read with their own sinks
class ResponseSink:
    """What the reader calls as a response is read (a base class, so compiled calls are native)."""

    def on_informational(self, head: ParsedResponse) -> None:
        raise NotImplementedError

    def on_response_head(self, head: ParsedResponse) -> None:
        raise NotImplementedError

    def on_response_body(self, data: bytes) -> None:
        raise NotImplementedError

    def on_response_end(self) -> None:
        raise NotImplementedError


class ParsedResponse(ResponseHead):
    via: bytes = b""
    upgrade: bytes = b""  # the Upgrade header value (meaningful with a 101)
    switching = False  # a 101 Switching Protocols: the connection becomes a tunnel
    connection_tokens: tuple[bytes, ...] = ()
    content_length_raw: bytes = b""  # as received, re-sent as is


class ResponseParser(ChunkedBody):
    """One per upstream connection; ``expect(head_request)`` before each request is sent."""

    __slots__ = (
        "_after_close",
        "_close_delimited",
        "_closing_message",
        "_fast",
        "_field_count",
        "_head",
        "_head_bytes",
        "_head_request",
        "_held",
        "_idle",
        "_parser",
        "_scan",
        "_stale",
        "_until_close",
        "in_body",
        "in_message",
        "sink",
    )

    def __init__(
        self, sink: ResponseSink, fast_lane: bool = True, *, chunk_line_max: int = CHUNK_LINE_MAX
    ) -> None:
        self.sink = sink
        # Plain heads are read whole by the fast lane (when built), and their Content-Length
        # bodies counted here; llhttp reads the rest.
        self._fast = fast_lane and _FAST_LANE_BUILT
        self._scan = scan_response  # the lane itself, an attribute: no module-dict look-up per head
        super().__init__(502, chunk_line_max, MAX_RESPONSE_HEAD)
        self._idle = True  # llhttp is between messages (it holds no byte of one)
        self._parser = httptools.HttpResponseParser(self)
        self._head = ParsedResponse()
        self._close_delimited = False
        self._head_request = False
        self._head_bytes = 0
        self._field_count = 0  # special fields of the head being read (the rest: head.headers)
        self._held = HeldHead()  # a head not ended yet (see _reference_head)
        self._stale = False  # llhttp waits for a body read here: a new parser before its next head
        self._until_close = False  # a close-delimited body is being read
        self._closing_message = False  # the response being read closes the connection
        self._after_close = False  # ...and it is over: nothing may follow
        self.in_body = False
        self.in_message = False

    def expect(self, head_request: bool) -> None:
        """A request was sent: a response is owed (with no body if it answers a HEAD)."""
        self._head_request = head_request
        self.in_message = True

    def feed(self, data: bytes) -> int | None:
        """Parse ``data``; returns the offset of tunnel bytes after a 101, else None."""
        pos = 0
        size = len(data)
        try:
            while pos < size:
                if self.in_chunked:
                    pos = self._read_chunked(data, pos)
                elif self._body_left:
                    pos = self._count_body(data, pos)
                elif self._until_close:
                    self.sink.on_response_body(data[pos:] if pos else data)
                    return None
                elif self._fast and self._idle and self.in_message and not self._held.holding:
                    taken = self._lane_head(data, pos)
                    if taken < 0:
                        return -1 - taken  # a 101: the rest is the tunnel's
                    pos = taken
                else:
                    taken = self._reference_head(data, pos)
                    if taken < 0:
                        return -1 - taken
                    pos = taken
        except ProtocolError:
            raise
        except Exception:  # in the sink, as llhttp's callbacks would have raised it
            raise ProtocolError(502, "invalid response") from None
        return None

    def eof(self) -> bool:
        """The upstream closed. True if that ended a close-delimited body (a complete response)."""
        if self.in_body and self._close_delimited:
            self._until_close = False
            self._message_end()
            return True
        return False

    def _lane_head(self, data: bytes, pos: int) -> int:
        """A plain head at ``data[pos:]`` read whole by the fast lane (one call), else by
        llhttp; returns where it ends."""
        scanned = self._scan(data, pos, MAX_RESPONSE_HEAD)
        if scanned is None:
            return self._reference_head(data, pos)
        end, status, length, fields = scanned
        no_body = status in {204, 304}
        if (length < 0 and not no_body) or len(fields) > MAX_RESPONSE_FIELDS:
            return self._reference_head(data, pos)  # delimited by the close, or over the bound
        head = self._head
        spellings = _FIELDS.spellings
        for pair in fields:  # a plain field's pair is kept as the lane made it (often shared)
            kind = spellings.get(pair[0])
            if kind == PLAIN_FIELD:
                head.headers.append(pair)
            elif kind == _CL:  # the lane has read the one Content-Length there is
                head.content_length = length
                head.content_length_raw = pair[1]
            else:
                self.on_header(pair[0], pair[1])
        head.status = status  # HTTP/1.1 and no Connection but keep-alive: the lane takes no other
        self._field_count = 0
        self._closing_message = False
        self._hand_off(head)
        if self._head_request:  # a response to HEAD: what else came in this read is dropped
            self._message_end()
            return len(data)
        if no_body or not length:
            self._message_end()
        else:
            self._body_left = length
        return end

    def _reference_head(self, data: bytes, pos: int) -> int:
        """Give llhttp the head at ``data[pos:]``, whole and trimmed (``trim_field_lines``), held
        in pieces until it ends (or given as it comes past ``MAX_RESPONSE_HEAD``, for the 502).
        Returns where the head ends, ``len(data)`` when it goes on in a later read, or ``-1 -
        offset`` after a 101 (the tunnel starts at ``offset``)."""
        if self._after_close:  # as llhttp says it
            raise ProtocolError(502, "malformed response: Data after `Connection: close`")
        if self._stale:
            self._parser = httptools.HttpResponseParser(self)
            self._stale = False
        held = self._held
        # A 1xx head's bytes count until the final response ends (_head_bytes: see _message_end).
        end = held.feed(data, pos, MAX_RESPONSE_HEAD - self._head_bytes)
        if end < 0:
            if end == HELD:
                return len(data)
            if end == OVER:
                raise ProtocolError(502, "response head too large")
            raise ProtocolError(502, "malformed response: bare LF in the head")  # it never ends
        self._head_bytes = held.size + end - pos  # the whole head, before it is trimmed
        try:
            self._parser.feed_data(held.take(data, pos, end))
        except httptools.HttpParserUpgrade:
            self._stale = True
            return -1 - end
        except httptools.HttpParserError as exc:
            raise llhttp_refusal(exc, 502, "response") from None
        if self._head_request and not self.in_message:  # HEAD answered: the rest is dropped
            return len(data)
        return end

    # -- llhttp callbacks ----------------------------------------------------------------------

    # A fresh head is made ready when the previous one is handed off.

    def on_message_begin(self) -> None:
        self._idle = False  # from here to on_message_complete, the fast lane must not read

    # No on_status: the reason phrase is informational (RFC 9112 section 4) and is sent as the
    # standard one for the code, which saves a callback per response.

    def on_header(self, name: bytes, value: bytes) -> None:
        kind = _FIELDS.spellings.get(name)
        if kind is None:
            kind = _FIELDS.learn(name)
        if kind == PLAIN_FIELD:
            self._head.headers.append((name, value))
            return
        self._field_count += 1
        if kind == _CL and not self.in_body:  # the most common special one, inline
            head = self._head
            head.content_length = int(value)  # llhttp has checked: digits, one value
            head.content_length_raw = value
        else:
            self._special(kind, value)

    def _special(self, kind: int, value: bytes) -> None:
        if self.in_body:
            return  # a trailer field: dropped (the body is re-framed)
        head = self._head
        if kind == _TE:
            # Bodies are re-framed on the way out, so only plain chunked can be passed on: any
            # other coding (gzip, chunked...) would reach the client as undecodable bytes.
            if head.chunked or value.strip().lower() != b"chunked":
                raise ProtocolError(502, f"unsupported transfer coding in response: {value!r}")
            head.chunked = True
        elif kind == _CONN:
            head.connection_tokens += connection_tokens(value)
        elif kind == _VIA:
            head.via = head.via + b", " + value if head.via else value
        elif kind == _UPG:
            head.upgrade = value

    def on_headers_complete(self) -> None:
        head = self._head
        parser = self._parser
        if self._field_count + len(head.headers) > MAX_RESPONSE_FIELDS:
            raise ProtocolError(502, f"response with more than {MAX_RESPONSE_FIELDS} header fields")
        self._field_count = 0
        if self._head_bytes > MAX_RESPONSE_HEAD and _size(head) > MAX_RESPONSE_HEAD:
            raise ProtocolError(502, f"response head larger than {MAX_RESPONSE_HEAD} bytes")
        head.status = status = parser.get_status_code()
        head.keep_alive = parser.should_keep_alive()  # llhttp: version and Connection together
        # After a HEAD answer llhttp started afresh: only what it ended itself closes the stream.
        self._closing_message = not (head.keep_alive or self._head_request)
        self._hand_off(head)
        if status < 200 or (status in {204, 304} and not self._head_request):
            return  # no body: llhttp ends the message (or stops at a 101)
        if head.content_length == 0 and not self._head_request:
            return
        # llhttp is given heads only: the body is read here (with a new llhttp for the next head).
        self._stale = True
        if self._head_request:
            self._message_end()
        elif head.chunked:
            self._start_chunked()
        elif head.content_length is None:
            self._until_close = True
        else:
            self._body_left = head.content_length

    def _hand_off(self, head: ParsedResponse) -> None:
        """Give a complete head to the sink, with this reader ready for the next one."""
        status = head.status
        tokens = head.connection_tokens
        if tokens:
            nominated = nominated_headers(tokens)
            if nominated:
                head.headers = [(n, v) for n, v in head.headers if n.lower() not in nominated]
        self._head = ParsedResponse()  # ready for the next response
        if status < 200:
            if status == 101:
                head.switching = True
                head.keep_alive = False
                self.sink.on_response_head(head)
            else:
                self.sink.on_informational(head)
            return
        bodiless = self._head_request or status in {204, 304}
        close_delimited = not bodiless and head.content_length is None and not head.chunked
        if close_delimited:
            head.close_delimited = True
            head.keep_alive = False
        self._close_delimited = close_delimited
        self.in_body = True
        self.sink.on_response_head(head)

    def on_body(self, body: bytes) -> None:
        self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        if self._stale:
            return  # the body is read here (a Content-Length 0 answer to HEAD ended already)
        self._message_end()
        # After a response that closes the connection, llhttp refuses what follows: so must the lane.
        self._idle = self._parser.should_keep_alive()

    def _body_part(self, data: bytes) -> None:
        self.sink.on_response_body(data)

    def _body_complete(self) -> None:
        self._message_end()

    def _message_end(self) -> None:
        if not self.in_body:  # after an informational (1xx) head: the final response follows
            return
        self.in_body = False
        self._idle = not self._closing_message
        self._after_close = self._closing_message
        self._head_bytes = 0
        if self._head.headers:  # trailer fields landed in the next head: drop them
            self._head = ParsedResponse()
        self.in_message = False
        self.sink.on_response_end()


def _size(head: ParsedResponse) -> int:
    """Bytes of the header fields kept (checked only when a read was large enough to matter)."""
    return sum(len(name) + len(value) + 4 for name, value in head.headers)

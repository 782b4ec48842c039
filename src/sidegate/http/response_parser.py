"""Upstream response reader: bytes in, response heads and body chunks out.

llhttp frames the response (Content-Length, chunked, 1xx, 204, 304, close-delimited). What it
cannot know is the request method: a response to HEAD has no body whatever its Content-Length
says, so for HEAD the reader ends the message at the head and starts a fresh parser for the next.

The fast lane (``sidegate.http.wire``, in C) reads plain heads whole before llhttp sees them, and
their Content-Length bodies are counted here; everything else is llhttp's.

Hop-by-hop and framing headers are kept out of ``ResponseHead.headers``; the framing is described
by fields (``content_length``, ``chunked``, ``close_delimited``) and re-written by the proxy.
"""

from __future__ import annotations

from typing import Final

import httptools
from mypy_extensions import mypyc_attr

from sidegate.http.counted import CountedBody
from sidegate.http.errors import ProtocolError
from sidegate.http.messages import ResponseHead
from sidegate.http.syntax import PLAIN_FIELD, FieldKinds, connection_tokens, nominated_headers
from sidegate.http.wire import AVAILABLE as FAST_LANE_BUILT
from sidegate.http.wire import scan_response

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


class _HeadOnlyError(Exception):
    """Raised from a callback to stop llhttp after the head of a response to HEAD."""


class ResponseParser(CountedBody):
    """One per upstream connection; ``expect(head_request)`` before each request is sent."""

    __slots__ = (
        "_close_delimited",
        "_fast",
        "_head",
        "_head_bytes",
        "_head_request",
        "_idle",
        "_parser",
        "in_body",
        "in_message",
        "sink",
    )

    def __init__(self, sink: ResponseSink, fast_lane: bool = True) -> None:
        self.sink = sink
        # Plain heads are read whole by the fast lane (when built), and their Content-Length
        # bodies counted here; llhttp reads the rest.
        self._fast = fast_lane and FAST_LANE_BUILT
        super().__init__()
        self._idle = True  # llhttp is between messages (it holds no byte of one)
        self._parser = httptools.HttpResponseParser(self)
        self._head = ParsedResponse()
        self._close_delimited = False
        self._head_request = False
        self._head_bytes = 0
        self.in_body = False
        self.in_message = False

    def expect(self, head_request: bool) -> None:
        """A request was sent: a response is owed (with no body if it answers a HEAD)."""
        self._head_request = head_request
        self.in_message = True

    def feed(self, data: bytes) -> int | None:
        """Parse ``data``; returns the offset of tunnel bytes after a 101, else None."""
        taken = 0  # bytes read by the fast lane
        if self._body_left or (self._fast and self._idle and self.in_message):
            try:
                taken = self._fast_lane(data)
            except ProtocolError:
                raise
            except Exception:  # in the sink, as llhttp's callbacks would have raised it
                raise ProtocolError(502, "invalid response") from None
            if taken:
                if taken == len(data):
                    return None
                data = data[taken:]
        # The raw-byte guard counts a read only when it starts inside a head, as the llhttp path
        # does (it restarts the count at a message's end, even mid-read): a head that never ends
        # is cut one read later; the exact measure decides at the head's end either way.
        if not (self.in_body or taken):
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            return taken + (int(exc.args[0]) if exc.args else len(data))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadOnlyError):
                self._parser = httptools.HttpResponseParser(self)
                self._idle = True
                self._message_end()
                return None
            if isinstance(cause, ProtocolError):
                raise cause from None
            raise ProtocolError(502, "invalid response") from None
        except httptools.HttpParserError as exc:
            raise ProtocolError(502, f"malformed response: {exc}") from None
        if self.in_message and not self.in_body and self._head_bytes > MAX_RESPONSE_HEAD:
            raise ProtocolError(502, "response head too large")
        return None

    def eof(self) -> bool:
        """The upstream closed. True if that ended a close-delimited body (a complete response)."""
        if self.in_body and self._close_delimited:
            self.on_message_complete()
            return True
        return False

    def _fast_lane(self, data: bytes) -> int:
        """Read what the fast lane can at the start of ``data``: the rest of a counted body, then
        plain heads (one call each) and their Content-Length bodies. Returns how many bytes were
        read; llhttp reads from there."""
        taken = 0
        size = len(data)
        while taken < size:
            if self._body_left:
                taken = self._count_body(data, taken)
                continue
            if not (self._fast and self._idle and self.in_message):
                break
            scanned = scan_response(data, taken, MAX_RESPONSE_HEAD)
            if scanned is None:
                break
            end, status, length, fields = scanned
            no_body = status in {204, 304}
            if length < 0 and not no_body:
                break  # delimited by the close (or a HEAD answer llhttp would read so): llhttp reads it
            bodiless = no_body or self._head_request
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
            taken = end
            if self._hand_off(head):  # a response to HEAD: what else came in this read is dropped
                self._message_end()
                return size
            if bodiless or not length:
                self._message_end()
            else:
                self._body_left = length
        return taken

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
        elif kind == _CL and not self.in_body:  # the most common special one, inline
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
        if self._head_bytes > MAX_RESPONSE_HEAD and _size(head) > MAX_RESPONSE_HEAD:
            raise ProtocolError(502, f"response head larger than {MAX_RESPONSE_HEAD} bytes")
        head.status = parser.get_status_code()
        head.keep_alive = parser.should_keep_alive()  # llhttp: version and Connection together
        if self._hand_off(head):
            raise _HeadOnlyError

    def _hand_off(self, head: ParsedResponse) -> bool:
        """Give a complete head to the sink, with this reader ready for the next one. True when
        the message ends here though llhttp would read a body (a response to HEAD)."""
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
            return False
        bodiless = self._head_request or status in {204, 304}
        close_delimited = not bodiless and head.content_length is None and not head.chunked
        if close_delimited:
            head.close_delimited = True
            head.keep_alive = False
        self._close_delimited = close_delimited
        self.in_body = True
        self.sink.on_response_head(head)
        return self._head_request

    def on_body(self, body: bytes) -> None:
        self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        # After a response that closes the connection, llhttp refuses what follows: so must the lane.
        self._idle = self._parser.should_keep_alive()
        self._message_end()

    def _body_part(self, data: bytes) -> None:
        self.sink.on_response_body(data)

    def _body_complete(self) -> None:
        self._message_end()

    def _message_end(self) -> None:
        if not self.in_body:  # after an informational (1xx) head: the final response follows
            return
        self.in_body = False
        self._head_bytes = 0
        if self._head.headers:  # trailer fields landed in the next head: drop them
            self._head = ParsedResponse()
        self.in_message = False
        self.sink.on_response_end()


def _size(head: ParsedResponse) -> int:
    """Bytes of the header fields kept (checked only when a read was large enough to matter)."""
    return sum(len(name) + len(value) + 4 for name, value in head.headers)

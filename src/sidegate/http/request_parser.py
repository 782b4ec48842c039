"""Strict HTTP/1.1 request reader: bytes in, validated heads and body chunks out.

Theory of operation
-------------------
llhttp (through httptools) reads the heads the fast lane leaves to it and is already strict about
most of RFC 9112: CL with TE, duplicate or malformed Content-Length, bare LF/CR, obs-fold, invalid
header names and values, NUL and CR in fields all raise ``HttpParserError``. It is given each head
whole, trimmed of the whitespace after field values (held until it ends: ``held``). Bodies are
read here: Content-Length counted, chunked by :class:`~sidegate.http.chunked.ChunkedBody` (every
legal chunk line, bounded). This module adds what llhttp leaves to the application:

* limits: head size and header count (431), URI length (414), bytes received while still in a head
  (so a header that never ends cannot grow without bound);
* Host: exactly one for HTTP/1.1, a valid authority; absolute-form targets take their authority
  (``request_head``);
* Transfer-Encoding: only ``chunked`` is understood (501 for other codings, 400 on HTTP/1.0);
* versions other than 1.0 and 1.1 (505; HTTP/0.9: 400); CONNECT, unknown forms of request-target
  and fragments (400/405); ``h2c`` taken out of ``Upgrade``.

Header classification happens once, in ``on_header`` (the tables: ``request_fields``):
hop-by-hop and framing headers are kept out of ``RequestHead.headers`` (which holds only what may
be forwarded as is), the few headers the proxy rewrites (X-Forwarded-*, Forwarded, Via,
X-Request-Id) are pulled into fields, and names with an underscore that fold onto a managed one
are dropped (or refused).

Every violation raises :class:`~sidegate.http.errors.ProtocolError` out of :meth:`feed`; the
connection answers with its status and closes, so nothing ambiguous is ever forwarded.

The fast lane (``sidegate.http.wire``, in C) reads the common case before llhttp sees it: a whole,
plainly valid head in one call. Whatever it does not recognise goes to llhttp, so llhttp and this
module's checks remain the reference for every rule above (tests/unit/test_fast_lane_requests.py
holds the two to the same answers).

Substring tests are written ``data.find(sub) >= 0``: CPython 3.11's ``sub in data`` on bytes first
tries ``sub`` as an integer and formats (then discards) a TypeError, ten times the cost.
"""

from __future__ import annotations

from typing import Final

import httptools
from mypy_extensions import mypyc_attr

from sidegate.http.chunked import CHUNK_LINE_MAX, ChunkedBody
from sidegate.http.errors import ProtocolError
from sidegate.http.held import HELD, HeldHead, llhttp_refusal
from sidegate.http.request_fields import DEFAULT_FIELDS, HOST, TE, UNDERSCORE_DROP, apply_special
from sidegate.http.request_head import ParsedRequest, drop_nominated, resolve_host, split_target
from sidegate.http.syntax import PLAIN_FIELD, FieldKinds, upgrade_without_h2c
from sidegate.http.wire import AVAILABLE, scan_request

# Final: compiled code reads a Final module name from a C static, any other imported name from
# the module's dict (a look-up per use).
_FAST_LANE_BUILT: Final = AVAILABLE


@mypyc_attr(allow_interpreted_subclasses=True)  # tests and tools parse with their own sinks
class RequestSink:
    """What the reader calls as a request is read. A base class, not a ``Protocol``: compiled,
    a call through it is a native method call rather than a Python attribute look-up."""

    def on_request_head(self, head: ParsedRequest) -> None:
        raise NotImplementedError

    def on_request_body(self, data: bytes) -> None:
        raise NotImplementedError

    def on_request_end(self) -> None:
        raise NotImplementedError

    def on_field_dropped(self, name: bytes) -> None:
        """A field was dropped from the request (a name with an underscore: see special_fields)."""


class RequestParser(ChunkedBody):
    """Feeds heads to llhttp; validates; reads bodies; reports heads, body chunks and ends to a
    sink."""

    __slots__ = (
        "_after_close",
        "_closing_message",
        "_fast",
        "_fields",
        "_head",
        "_head_bytes",
        "_held",
        "_idle",
        "_in_head",
        "_max_count",
        "_max_size",
        "_parser",
        "_scan",
        "_sink",
        "_special_count",
        "_special_size",
        "_spellings",
        "_stale",
        "_te_values",
        "_tunnel_at",
        "_upgrading",
        "_url",
        "in_body",
    )

    def __init__(
        self,
        sink: RequestSink,
        max_head_size: int,
        max_header_count: int,
        fields: FieldKinds | None = None,
        *,
        fast_lane: bool = True,
        chunk_line_max: int = CHUNK_LINE_MAX,
    ) -> None:
        self._sink = sink
        # Plain heads are read whole by the fast lane (when built); llhttp reads the rest.
        self._fast = fast_lane and _FAST_LANE_BUILT
        self._scan = scan_request  # the lane itself, an attribute: no module-dict look-up per head
        self._idle = True  # llhttp is between messages (it holds no byte of one)
        super().__init__(400, chunk_line_max, max_head_size)
        self._fields = DEFAULT_FIELDS if fields is None else fields  # see special_fields()
        self._spellings = self._fields.spellings
        self._max_size = max_head_size
        self._max_count = max_header_count
        self._parser = httptools.HttpRequestParser(self)
        self._head = ParsedRequest()
        self._url = b""
        self._head_bytes = 0  # bytes received while in a head
        self._special_count = 0  # header fields classified as special in this head...
        self._special_size = 0  # ...and their size (the others are in head.headers)
        self._te_values: list[bytes] = []
        self._in_head = False
        self.in_body = False
        # llhttp is given heads only, each whole when it fits (see _reference_head); bodies are
        # read here.
        self._held = HeldHead()
        self._stale = False  # llhttp waits for a body read here: a new parser before its next head
        self._closing_message = False  # the message being read closes the connection
        self._after_close = False  # ...and it is over: nothing may follow
        self._upgrading = False  # the head handed off asks for an upgrade
        self._tunnel_at = -1  # where tunnel bytes start in the read being parsed

    # -- driving -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> int | None:
        """Parse ``data``. Returns None, or the offset where upgraded (tunnel) bytes start."""
        pos = 0
        size = len(data)
        try:
            while pos < size:
                if self.in_chunked:
                    pos = self._read_chunked(data, pos)
                elif self._body_left:
                    pos = self._count_body(data, pos)
                elif not (self._fast and self._idle and not self._held.holding):
                    pos = self._reference_head(data, pos)
                    if self._tunnel_at >= 0:
                        at, self._tunnel_at = self._tunnel_at, -1
                        return at
                else:
                    scanned = self._scan(data, pos, self._max_size, self._max_count)
                    if scanned is None:
                        pos = self._reference_head(data, pos)
                        if self._tunnel_at >= 0:
                            at, self._tunnel_at = self._tunnel_at, -1
                            return at
                    else:
                        pos = self._lane_head(scanned)
        except ProtocolError:
            raise
        except Exception:  # in the sink, as llhttp's callbacks would have raised it
            raise ProtocolError(400, "invalid request") from None
        return None

    def _lane_head(
        self, scanned: tuple[int, bytes, bytes, bytes, bytes, int, list[tuple[bytes, bytes]]]
    ) -> int:
        """A plain head the fast lane read whole (one call into the lane: see ``wire``). The
        fields go through ``on_header`` as llhttp's would; returns where the head ends."""
        end, method, target, path, query, length, fields = scanned
        head = self._head
        spellings = self._spellings
        for pair in fields:  # a plain field's pair is kept as the lane made it (often shared)
            if spellings.get(pair[0]) == PLAIN_FIELD:
                head.headers.append(pair)
            else:
                self.on_header(pair[0], pair[1])
        head.method = method  # HTTP/1.1 and kept alive: the lane takes no other
        if target[:1] == b"/":
            resolve_host(head)
            head.path = path
            head.query = query
            head.target = target
        else:  # absolute-form (the egress listener's): its authority wins over Host, as below
            split_target(head, target)
        self._hand_off(head)
        if length > 0:
            self._body_left = length
        else:
            self._body_complete()
        return end

    def _reference_head(self, data: bytes, pos: int) -> int:
        """Give llhttp the head at ``data[pos:]``, whole and trimmed of the whitespace after its
        field values (``trim_field_lines``: llhttp keeps it, and refuses ``chunked`` followed by
        a tab). A head not ended in this read is held until it is, unless it grows past the head
        size or ends in bare LFs: then llhttp reads it as it comes, for its 414, 431 or 400.
        Returns where the head ends (``len(data)`` when it goes on in a later read)."""
        if self._after_close:
            raise ProtocolError(400, "malformed request: Data after `Connection: close`")
        if self._stale:
            self._parser = httptools.HttpRequestParser(self)
            self._stale = False
        held = self._held
        end = held.feed(data, pos, self._max_size)
        if end >= 0:
            self._llhttp(held.take(data, pos, end), end)
            return end
        if end != HELD:  # too large, bare LFs, or already so: llhttp reads it as it comes
            piece = held.spill(data, pos)
            self._head_bytes += len(piece)
            self._llhttp(piece, -1)
            if self._in_head and self._head_bytes > self._max_size:
                raise ProtocolError(431, f"request head larger than {self._max_size} bytes")
        return len(data)

    def _llhttp(self, data: bytes, end: int) -> None:
        """Feed llhttp; its errors as ProtocolErrors. ``end``: where the head ends in the read."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stale = True  # llhttp stops at an upgrade; a refused one goes on with a new parser
            if self._upgrading:
                self._tunnel_at = end
        except ProtocolError:
            raise
        except httptools.HttpParserInvalidMethodError:
            raise ProtocolError(400, "invalid or unsupported method") from None
        except httptools.HttpParserInvalidURLError:
            raise ProtocolError(400, "invalid request-target") from None
        except httptools.HttpParserError as exc:
            raise llhttp_refusal(exc, 400, "request") from None

    def upgrade_refused(self) -> None:
        """The app answered an upgrade request without switching protocols: the connection is
        still HTTP/1.1, and what the client sent after that request is read as requests."""
        self._upgrading = False
        self._stale = True
        self._idle = not self._closing_message
        self._after_close = self._closing_message

    def _body_part(self, data: bytes) -> None:
        self._sink.on_request_body(data)

    def _body_complete(self) -> None:
        """A request whose body was read here is complete."""
        self.in_body = False
        if self._closing_message:  # llhttp would refuse what follows: so does this reader
            self._after_close = True
            self._idle = False
        else:
            self._idle = True
        self._sink.on_request_end()

    # -- llhttp callbacks ----------------------------------------------------------------------

    # The state for the next request is made ready when the previous head is handed off. The
    # request-target is always the first thing llhttp reports of a request.

    def on_message_begin(self) -> None:
        self._idle = False  # from here to on_message_complete, the fast lane must not read

    def on_url(self, url: bytes) -> None:
        self._in_head = True
        self._url += url
        if len(self._url) > self._max_size:
            raise ProtocolError(414, f"request-target longer than {self._max_size} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        # The common header costs one lookup and one append; limits are checked per head (see
        # on_headers_complete), and a head that never ends is cut by feed()'s byte count.
        kind = self._spellings.get(name)
        if kind is None:
            kind = self._fields.learn(name)
        if kind == PLAIN_FIELD:
            self._head.headers.append((name, value))
        elif kind == HOST and value and not (self.in_body or self._head.host_header):
            # The one special header every request has, inline (a list of hosts, "a, b", is
            # refused when the host is resolved: see _valid_host).
            self._head.host_header = value
            self._special_count += 1
            self._special_size += len(value) + 8
        else:
            self._special(kind, name, value)

    def _special(self, kind: int, name: bytes, value: bytes) -> None:
        self._special_size += len(name) + len(value) + 4
        self._special_count += 1
        if self.in_body:
            return  # a trailer field: dropped (the body is re-framed)
        if kind == TE:
            self._te_values.append(value)
        elif kind == UNDERSCORE_DROP:
            self._sink.on_field_dropped(name)
        elif apply_special(self._head, kind, name, value):  # kept in head.headers: counted there
            self._special_count -= 1
            self._special_size -= len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        head = self._head
        self._check_limits(head)  # the lane reads the common heads: this path can measure each
        self._in_head = False
        self._head_bytes = 0
        parser = self._parser
        # llhttp keeps a connection alive by default only for HTTP/1.1 (of the versions it
        # accepts: 0.9, 1.0, 1.1, 2.0), so "alive, and not asked to be" means 1.1 without
        # get_http_version(), which formats a str and costs ten times as much.
        head.keep_alive = keep_alive = parser.should_keep_alive()
        if not keep_alive or b"keep-alive" in head.connection_tokens:
            version = parser.get_http_version()
            if version != "1.1":  # b"1.1" is the default
                if version == "0.9":  # llhttp reads a request line without a version so
                    raise ProtocolError(400, "request line without an HTTP version (HTTP/0.9)")
                if version != "1.0":
                    raise ProtocolError(505, f"HTTP/{version} is not supported here; use HTTP/1.1")
                head.version = b"1.0"
        head.method = method = parser.get_method()
        if method == b"CONNECT":
            raise ProtocolError(405, "CONNECT is not accepted on the inbound listener")
        split_target(head, self._url)
        if self._te_values:
            self._transfer_encoding(head)
        self._closing_message = not keep_alive
        self._hand_off(head)
        if not self._upgrading:  # the body is read here (llhttp is given heads only)
            if head.chunked:
                self._start_chunked()
                self._stale = True
            elif head.content_length:
                self._body_left = head.content_length
                self._stale = True

    def _hand_off(self, head: ParsedRequest) -> None:
        """Give a complete head to the sink, with this reader ready for the next one."""
        tokens = head.connection_tokens
        if tokens:
            drop_nominated(head, tokens)
            if head.upgrade:
                # Upgrade without "Connection: upgrade" is not an upgrade; h2c is never passed on
                # (through a proxy it smuggles requests past it): without it, maybe no upgrade.
                head.upgrade = upgrade_without_h2c(head.upgrade) if b"upgrade" in tokens else b""
            self._upgrading = bool(head.upgrade)
        elif head.upgrade:
            head.upgrade = b""
        self.in_body = True
        self._head = ParsedRequest()  # ready for the next request on this connection
        self._url = b""
        if self._special_count:
            self._special_count = self._special_size = 0
        self._sink.on_request_head(head)

    def _check_limits(self, head: ParsedRequest) -> None:
        """431 past the header count or the head size: the target plus name + value + 4 per field
        (the fast lane measures the same way)."""
        if len(head.headers) + self._special_count > self._max_count:
            raise ProtocolError(431, f"more than {self._max_count} header fields")
        size = len(self._url) + self._special_size
        for name, value in head.headers:
            size += len(name) + len(value) + 4
        if size > self._max_size:
            raise ProtocolError(431, f"request head larger than {self._max_size} bytes")

    def _transfer_encoding(self, head: ParsedRequest) -> None:
        if head.version == b"1.0":
            raise ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
        codings = [c.strip() for c in b",".join(self._te_values).lower().split(b",")]
        self._te_values = []
        if codings[-1] != b"chunked":  # RFC 9112 section 6.3: the framing is unknowable
            raise ProtocolError(400, "Transfer-Encoding must end with chunked")
        if len(codings) > 1:
            raise ProtocolError(501, "only the chunked transfer coding is supported")
        head.chunked = True

    def on_body(self, body: bytes) -> None:
        self._sink.on_request_body(body)

    def on_message_complete(self) -> None:
        if self._body_left or self.in_chunked:
            return  # an upgrade llhttp saw and Sidegate did not (h2c): the body is read here
        # After a message that closes the connection, llhttp refuses what follows: so must the lane.
        self._idle = self._parser.should_keep_alive()
        self.in_body = False
        self._head_bytes = 0
        if self._head.headers or self._special_count:  # trailer fields landed in the next head
            self._head = ParsedRequest()
            self._special_count = self._special_size = 0
        self._sink.on_request_end()

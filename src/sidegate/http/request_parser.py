"""Strict HTTP/1.1 request reader: bytes in, validated heads and body chunks out.

Theory of operation
-------------------
llhttp (through httptools) reads the heads the fast lane leaves to it and is already strict about
most of RFC 9112: CL with TE, duplicate or malformed Content-Length, bare LF/CR, obs-fold, invalid
header names and values, NUL and CR in fields all raise ``HttpParserError``. It is given each head
whole (held in pieces until it ends) with the whitespace after field values trimmed
(``trim_field_lines``: it is not part of a value, and llhttp would keep it, or refuse
``chunked`` followed by a tab). Bodies are read here: Content-Length counted, chunked by
:class:`~sidegate.http.chunked.ChunkedBody` (every legal chunk line, bounded). This module adds
what llhttp leaves to the application:

* limits: head size and header count (431), URI length (414), bytes received while still in a head
  (so a header that never ends cannot grow without bound);
* Host: exactly one for HTTP/1.1, a valid authority; absolute-form targets take their authority;
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
from sidegate.http.messages import RequestHead
from sidegate.http.request_fields import (
    CL,
    CONN,
    DEFAULT_FIELDS,
    EXPECT,
    FWD,
    HOST,
    RID,
    TE,
    TRACE,
    UNDERSCORE_DROP,
    UNDERSCORE_REJECT,
    UPGRADE,
    VIA,
    XFF,
    XFH,
    XFP,
)
from sidegate.http.syntax import (
    PLAIN_FIELD,
    FieldKinds,
    connection_tokens,
    head_end,
    nominated_headers,
    normalize_path,
    parse_authority,
    trim_field_lines,
    upgrade_without_h2c,
    valid_request_id,
)
from sidegate.http.wire import AVAILABLE as FAST_LANE_BUILT
from sidegate.http.wire import scan_request

# Host header value -> validated host name; a pod sees few distinct hosts.
_HOSTS: Final[dict[bytes, bytes]] = {}
_HOSTS_MAX: Final = 1024


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


class ParsedRequest(RequestHead):
    """A request head plus the forwarding headers the proxy rewrites (empty when absent)."""

    host_header: bytes = b""  # Host as sent (with port), forwarded upstream unchanged
    connection_tokens: tuple[bytes, ...] = ()
    xff: bytes = b""
    xfp: bytes = b""
    xfh: bytes = b""
    forwarded: bytes = b""
    via: bytes = b""
    # True when none of the forwarding headers above came in (the common case, cached bytes).
    plain_forwarding: bool = True
    expect_continue: bool = False  # the client waits for "100 Continue" before sending the body
    traceparent: bytes = b""  # W3C trace context as sent


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
        "_idle",
        "_in_head",
        "_max_count",
        "_max_size",
        "_parser",
        "_pieces",
        "_pieces_size",
        "_raw",
        "_sink",
        "_special_count",
        "_special_size",
        "_spellings",
        "_stale",
        "_tail",
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
        self._fast = fast_lane and FAST_LANE_BUILT
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
        # llhttp is given heads only, each whole when it fits (to be trimmed: see _reference_head);
        # bodies are read here. A head that has not ended yet is held in pieces.
        self._pieces: list[bytes] = []
        self._pieces_size = 0
        self._tail = b""  # the last bytes (at most three) of a head's earlier reads
        self._raw = False  # this head goes to llhttp as it comes (too large, or bare LFs)
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
                elif not (self._fast and self._idle and not self._pieces):
                    pos = self._reference_head(data, pos)
                    if self._tunnel_at >= 0:
                        at, self._tunnel_at = self._tunnel_at, -1
                        return at
                else:
                    scanned = scan_request(data, pos, self._max_size, self._max_count)
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
        self._resolve_host(head)
        head.path = path
        head.query = query
        head.target = target
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
        tail = self._tail
        end = head_end(tail, data, pos)
        if end < 0:
            piece = data[pos:] if pos else data
            self._tail = (tail + piece[-3:])[-3:]
            if not self._raw:
                held = self._pieces_size + len(piece)
                if (
                    held <= self._max_size
                    and (tail + piece[:2]).find(b"\n\n") < 0
                    and piece.find(b"\n\n") < 0
                ):
                    self._pieces.append(piece)
                    self._pieces_size = held
                    return len(data)
                self._raw = True
                if self._pieces:
                    piece = b"".join(self._pieces) + piece
                    self._pieces = []
                    self._pieces_size = 0
            self._head_bytes += len(piece)
            self._llhttp(piece, -1)
            if self._in_head and self._head_bytes > self._max_size:
                raise ProtocolError(431, f"request head larger than {self._max_size} bytes")
            return len(data)
        head = data[pos:end] if pos or end < len(data) else data
        self._tail = b""
        if self._raw:
            self._raw = False
            self._llhttp(head, end)  # the rest of a head llhttp has been reading as it came
        else:
            if self._pieces:
                head = b"".join(self._pieces) + head
                self._pieces = []
                self._pieces_size = 0
            self._llhttp(trim_field_lines(head), end)
        return end

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
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ProtocolError):
                raise cause from None
            raise ProtocolError(400, "invalid request") from None
        except httptools.HttpParserError as exc:
            raise ProtocolError(400, f"malformed request: {exc}") from None

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
        head = self._head
        self._special_size += len(name) + len(value) + 4
        self._special_count += 1
        if self.in_body:
            return  # a trailer field: dropped (the body is re-framed)
        if kind == HOST:
            if head.host_header or value.find(b",") >= 0:
                raise ProtocolError(400, "more than one Host header")
            if not value:
                raise ProtocolError(400, "empty Host header")
            head.host_header = value
        elif kind == CL:
            head.content_length = int(value)  # llhttp has checked it is digits and unique
        elif kind == TE:
            self._te_values.append(value)
        elif kind == CONN:
            head.connection_tokens += connection_tokens(value)
        elif kind == UPGRADE:
            head.upgrade = value
        elif kind == XFF:
            head.plain_forwarding = False
            head.xff = head.xff + b", " + value if head.xff else value
        elif kind == XFP:
            head.plain_forwarding = False
            head.xfp = value
        elif kind == XFH:
            head.plain_forwarding = False
            head.xfh = value
        elif kind == FWD:
            head.plain_forwarding = False
            head.forwarded = head.forwarded + b", " + value if head.forwarded else value
        elif kind == VIA:
            head.plain_forwarding = False
            head.via = head.via + b", " + value if head.via else value
        elif kind == EXPECT:
            head.headers.append((name, value))  # end-to-end: the app answers 100 Continue itself
            self._special_count -= 1  # counted once, as one of head.headers
            self._special_size -= len(name) + len(value) + 4
            head.expect_continue = value.lower() == b"100-continue"
        elif kind == RID:
            head.request_id = value if valid_request_id(value) else b""
        elif kind == TRACE:
            # Two are invalid (a new trace starts); joined, they are forwarded as received.
            head.traceparent = head.traceparent + b", " + value if head.traceparent else value
        elif kind == UNDERSCORE_DROP:
            self._sink.on_field_dropped(name)
        elif kind == UNDERSCORE_REJECT:
            shown = name[:64].decode("latin-1")
            raise ProtocolError(400, f"header field name with an underscore refused: {shown}")
        # HOP: dropped

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
        self._target(head, self._url)
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
            _drop_nominated(head, tokens)
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

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _resolve_host(head: ParsedRequest) -> None:
        """The host name from Host (or the target's authority), validated; 400 when missing."""
        host_header = head.host_header
        if host_header:
            host = _HOSTS.get(host_header)
            if host is None:
                host = _valid_host(host_header)
            head.host = host
        elif head.version == b"1.1":
            raise ProtocolError(400, "missing Host header")

    @staticmethod
    def _target(head: ParsedRequest, url: bytes) -> None:
        """Split the request-target; resolve Host per RFC 9112 section 3.2."""
        if url.find(b"#") >= 0:  # RFC 9112 section 3.2: a fragment is never sent
            raise ProtocolError(400, "a fragment (#) has no place in a request-target")
        if url[:1] == b"/":
            path, _, query = url.partition(b"?")
        elif url[:7].lower() == b"http://" or url[:8].lower() == b"https://":
            rest = url.split(b"://", 1)[1]
            end = min(i for i in (rest.find(b"/"), rest.find(b"?"), len(rest)) if i >= 0)
            authority, path_q = rest[:end], rest[end:]
            if not authority:
                raise ProtocolError(400, "absolute-form target without an authority")
            head.host_header = authority  # the target's authority overrides Host
            path, _, query = path_q.partition(b"?")
            path = path or b"/"
            url = path + b"?" + query if query else path
        elif url == b"*" and head.method == b"OPTIONS":
            path, query = b"*", b""
        else:
            raise ProtocolError(400, "request-target must start with '/' or be an absolute URL")
        RequestParser._resolve_host(head)
        if path.find(b"/.") >= 0:  # dot-segments: route on the path the app will see
            path = normalize_path(path)
            url = path + b"?" + query if query else path
        head.path = path
        head.query = query
        head.target = url


def _valid_host(host_header: bytes) -> bytes:
    if host_header.find(b",") >= 0:  # never cached, so every such request comes here
        raise ProtocolError(400, "more than one Host header")
    host = parse_authority(host_header)
    if host is None:
        raise ProtocolError(400, "invalid Host header")
    if len(_HOSTS) >= _HOSTS_MAX:
        _HOSTS.clear()
    _HOSTS[host_header] = host
    return host


def _drop_nominated(head: ParsedRequest, tokens: tuple[bytes, ...]) -> None:
    """Remove headers that ``Connection`` names as hop-by-hop (RFC 9110 section 7.6.1)."""
    nominated = nominated_headers(tokens)
    if nominated:
        head.headers = [(n, v) for n, v in head.headers if n.lower() not in nominated]

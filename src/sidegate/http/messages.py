"""Message heads as plain values.

Header names and values stay ``bytes`` end to end: nothing on the hot path decodes to ``str``.
``headers`` keeps the order and the case the peer sent; lookups go through the few fields the
parser already pulled out (``host``, ``content_length``...) or through :func:`get_header`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = list[tuple[bytes, bytes]]
#: A whole response read by Sidegate for itself (a background request, no client):
#: (status, end-to-end headers, body, request time, response time)
Fetched = tuple[int, Headers, bytes, float, float]


class RequestHead:
    """A parsed, validated request head as received from the client.

    Fields have class-level defaults and the parser sets only what a request carries: creating a
    head per request is then one small allocation (this is the hot path).
    """

    method: bytes = b""
    target: bytes = b""  # path and query as forwarded (origin-form, dot-segments removed)
    path: bytes = b"/"
    query: bytes = b""  # without the leading "?"; empty when absent
    version: bytes = b"1.1"
    host: bytes = b""  # lower-cased, without the port
    keep_alive: bool = True
    content_length: int | None = None
    chunked: bool = False
    upgrade: bytes = b""  # the Upgrade header value when the client asks for one
    request_id: bytes = b""
    # The client's address: the direct peer's, or behind trusted proxies the one they name
    # (listeners.inbound.forwarded.trusted; see sidegate.forwarding). peer_ip: always the peer's.
    client_ip: str = ""
    peer_ip: str = ""

    def __init__(self) -> None:
        # End-to-end headers only: hop-by-hop, framing and forwarding headers are in fields.
        self.headers: Headers = []

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


class ResponseHead:
    """A response head from the upstream, editable by ``on_response`` filters."""

    status: int = 0
    reason: bytes = b""
    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    close_delimited: bool = False

    def __init__(self) -> None:
        self.headers: Headers = []


@dataclass(frozen=True, slots=True)
class LocalResponse:
    """A response made by Sidegate itself (an error, a filter's answer), sent with Content-Length."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())
    content_type: bytes = b"application/json"
    close: bool = False  # close the client connection after sending


class ReadyResponse:
    """A response already serialised (a cache hit): sent as ``head`` + the request id line (and
    ``Connection: close`` when the connection ends) + CRLF + ``body``.

    ``head`` is the status line and header lines, Content-Length included, without the blank line
    that ends the head, so nothing has to be rebuilt per request. A plain slotted class, not a
    frozen dataclass: one is made per cache hit, and a frozen ``__init__`` costs four times as much.
    Treat it as immutable.
    """

    __slots__ = ("body", "close", "head", "status")

    def __init__(self, status: int, head: bytes, body: bytes = b"", close: bool = False) -> None:
        self.status = status
        self.head = head
        self.body = body
        self.close = close

    def __repr__(self) -> str:
        return f"ReadyResponse({self.status}, {len(self.head)}-byte head, {len(self.body)}-byte body)"


def get_header(headers: Headers, lname: bytes) -> bytes | None:
    """First value of header ``lname`` (lower-case bytes), or None."""
    for name, value in headers:
        if name.lower() == lname:
            return value
    return None

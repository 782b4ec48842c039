"""Message heads as plain values.

Header names and values stay ``bytes`` end to end: nothing on the hot path decodes to ``str``.
``headers`` keeps the order and the case the peer sent; lookups go through the few fields the
parser already pulled out (``host``, ``content_length``...) or through :func:`get_header`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = list[tuple[bytes, bytes]]


class RequestHead:
    """A parsed, validated request head as received from the client."""

    __slots__ = (
        "chunked",
        "client_ip",
        "content_length",
        "headers",
        "host",
        "keep_alive",
        "method",
        "path",
        "query",
        "request_id",
        "target",
        "upgrade",
        "version",
    )

    def __init__(self) -> None:
        self.method: bytes = b""
        self.target: bytes = b""  # request-target as sent (origin-form after normalisation)
        self.path: bytes = b"/"
        self.query: bytes = b""  # without the leading "?"; empty when absent
        self.version: bytes = b"1.1"
        self.headers: Headers = []
        self.host: bytes = b""  # lower-cased, without the port
        self.keep_alive: bool = True
        self.content_length: int | None = None
        self.chunked: bool = False
        self.upgrade: bytes = b""  # the Upgrade header value when the client asks for one
        self.request_id: bytes = b""
        self.client_ip: str = ""

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


class ResponseHead:
    """A response head from the upstream, editable by ``on_response`` filters."""

    __slots__ = ("chunked", "close_delimited", "content_length", "headers", "keep_alive", "reason", "status")

    def __init__(self) -> None:
        self.status: int = 0
        self.reason: bytes = b""
        self.headers: Headers = []
        self.content_length: int | None = None
        self.chunked: bool = False
        self.keep_alive: bool = True
        self.close_delimited: bool = False


@dataclass(frozen=True, slots=True)
class LocalResponse:
    """A response made by Sidegate itself (an error, a filter's answer), sent with Content-Length."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())
    content_type: bytes = b"application/json"
    close: bool = False  # close the client connection after sending


def get_header(headers: Headers, lname: bytes) -> bytes | None:
    """First value of header ``lname`` (lower-case bytes), or None."""
    for name, value in headers:
        if name.lower() == lname:
            return value
    return None

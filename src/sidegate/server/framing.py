"""HTTP/1.1 client framing, decided in one place: how a response body is delimited, and whether
the client connection stays open after it. Pure functions of the request and the response: no
sockets, so every rule is a unit test.

The rules (RFC 9112): a body with a Content-Length keeps it; a response to HEAD, a 204 and a 304
have no body; any other body of unknown length is re-chunked for an HTTP/1.1 client, and read
until the connection closes by an HTTP/1.0 one (so that connection cannot stay open). An HTTP/1.0
client told to stay open is told so (``Connection: keep-alive``); an HTTP/1.1 one needs nothing.
"""

from __future__ import annotations

from typing import Final

# How a response body is delimited for the client.
LENGTH: Final = 0  # the Content-Length it came with
BODILESS: Final = 1  # HEAD, 204, 304: no body at all
CHUNKED: Final = 2  # re-chunked (an HTTP/1.1 client)
UNTIL_CLOSE: Final = 3  # until the connection closes (an HTTP/1.0 client)

_CLOSE: Final = b"Connection: close\r\n\r\n"
_KEEP_ALIVE: Final = b"Connection: keep-alive\r\n\r\n"
_END: Final = b"\r\n"


def body_framing(method: bytes, version: bytes, status: int, has_length: bool) -> int:
    """How the body of a response with this status to this request is delimited."""
    if has_length:
        return LENGTH
    if method == b"HEAD" or status in {204, 304}:
        return BODILESS
    return CHUNKED if version == b"1.1" else UNTIL_CLOSE


def keep_open(
    request_keep_alive: bool, connection_open: bool, *, asked_close: bool = False, framing: int = LENGTH
) -> bool:
    """Whether the connection stays open after this response: the client wants it, the
    connection is not closing, no one asked to close it, and the body's end is not the close."""
    return request_keep_alive and connection_open and not asked_close and framing != UNTIL_CLOSE


def head_end(keep: bool, version: bytes) -> bytes:
    """The last line(s) of a forwarded response head: the Connection field it needs, then CRLF."""
    if not keep:
        return _CLOSE
    return _END if version == b"1.1" else _KEEP_ALIVE

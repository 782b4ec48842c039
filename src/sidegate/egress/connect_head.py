"""The request line the egress listener peeks at, and the head of a ``CONNECT``: no I/O.

The inbound request reader refuses CONNECT (405) and keeps no scheme of an absolute-form
target; the egress listener needs both, and the inbound hot path must not pay for them. So the
egress connection peeks at each request line here first: a CONNECT head is read whole here
(it has no body, and what follows it is tunnel bytes), and any other request goes on to the
shared strict reader with only its scheme noted.

The CONNECT head is held to the same rules the shared reader enforces where they apply to it:
CRLF line ends only, no obs-fold, token field names, a version of 1.0 or 1.1, bounded size, and
no body framing (RFC 9110 section 9.3.6: content in a CONNECT request has no meaning, so a
Content-Length or Transfer-Encoding on one is a smuggling attempt and a 400).
"""

from __future__ import annotations

import re
from typing import Final

from sidegate.http.errors import ProtocolError

_TOKEN: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


class RequestLine:
    """What the egress connection needs of a request line before the reader sees it (plain
    classes, compiled: the line is peeked at once per request)."""

    def __init__(self, method: bytes, scheme: str) -> None:
        self.method = method
        self.scheme = scheme  # "http"/"https" for an absolute-form target, "" for origin-form


class ConnectHead:
    def __init__(
        self, authority: str, headers: list[tuple[bytes, bytes]], via: bytes, keep_alive: bool
    ) -> None:
        self.authority = authority
        self.headers = headers
        self.via = via  # every Via value, joined (loop detection)
        self.keep_alive = keep_alive


def peek_request_line(data: bytes, limit: int) -> RequestLine | None:
    """The method and scheme of the request line at the start of ``data``; None until the line
    is whole. 414 past ``limit`` bytes without a line end."""
    end = data.find(b"\r\n")
    if end < 0:
        if len(data) > limit:
            raise ProtocolError(414, f"request line longer than {limit} bytes")
        return None
    method, _, rest = data[:end].partition(b" ")
    target = rest[:8].lower()  # enough for "https://": the rest of the target is the reader's
    scheme = "https" if target.startswith(b"https://") else "http" if target.startswith(b"http://") else ""
    return RequestLine(method, scheme)


def read_connect_head(data: bytes, limit: int) -> tuple[ConnectHead, int] | None:
    """The CONNECT head at the start of ``data`` and where it ends; None until it is whole."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > limit:
            raise ProtocolError(431, f"request head larger than {limit} bytes")
        return None
    if end > limit:
        raise ProtocolError(431, f"request head larger than {limit} bytes")
    lines = data[:end].split(b"\r\n")
    if any(b"\n" in line or b"\r" in line or b"\0" in line for line in lines):
        raise ProtocolError(400, "a bare CR, LF or NUL in the request head")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"CONNECT":
        raise ProtocolError(400, "malformed request line")
    if parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise ProtocolError(505, "use HTTP/1.1")
    authority = parts[1]
    if not authority or authority.startswith(b"/") or b"://" in authority:
        raise ProtocolError(400, "CONNECT needs an authority-form target, host:port")
    headers: list[tuple[bytes, bytes]] = []
    via: list[bytes] = []
    keep_alive = parts[2] == b"HTTP/1.1"
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise ProtocolError(400, "obsolete line folding in the request head")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise ProtocolError(400, "invalid header field name")
        value = value.strip(b" \t")
        if not _VALUE.fullmatch(value):
            raise ProtocolError(400, "invalid header field value")
        lower = name.lower()
        if lower in (b"content-length", b"transfer-encoding"):
            raise ProtocolError(400, "a CONNECT request has no body: no Content-Length or Transfer-Encoding")
        if lower == b"via":
            via.append(value)
        elif lower == b"connection" and b"close" in value.lower():
            keep_alive = False
        headers.append((name, value))
    try:
        text = authority.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(400, "the CONNECT authority is not ASCII") from None
    return ConnectHead(text, headers, b", ".join(via), keep_alive), end + 4

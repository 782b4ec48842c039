"""Serialising heads, chunks and Sidegate's own responses to bytes. Pure functions."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Final

from sidegate.http.messages import Headers, LocalResponse

REASONS: Final[dict[int, bytes]] = {s.value: s.phrase.encode() for s in HTTPStatus}
STATUS_LINES: Final[dict[int, bytes]] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in REASONS.items()
}


def status_line(status: int, reason: bytes = b"") -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``; the standard reason unless the upstream gave another."""
    line = STATUS_LINES.get(status)
    if line is not None and (not reason or reason == REASONS.get(status)):
        return line
    return b"HTTP/1.1 %d %s\r\n" % (status, reason or REASONS.get(status, b"Unknown"))


def header_block(headers: Headers) -> bytes:
    """``Name: value\\r\\n`` for each header, in order."""
    return b"".join([name + b": " + value + b"\r\n" for name, value in headers])


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (callers skip empty data: an empty chunk ends the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK: Final = b"0\r\n\r\n"


def error_response(status: int, kind: str, detail: str, *, close: bool = False) -> LocalResponse:
    """A JSON error answered by Sidegate: ``{"error": kind, "status": ..., "detail": ...}``."""
    body = json.dumps({"error": kind, "status": status, "detail": detail}).encode() + b"\n"
    return LocalResponse(status=status, body=body, close=close)


def render_local(
    response: LocalResponse,
    request_id: bytes,
    *,
    keep_alive: bool,
    head_only: bool = False,
    extra: bytes = b"",
) -> bytes:
    """The full bytes of a local response, with Content-Length and the request id."""
    parts = [
        status_line(response.status),
        b"Content-Type: ",
        response.content_type,
        b"\r\nContent-Length: %d\r\n" % len(response.body),
    ]
    if request_id:
        parts += (b"X-Request-Id: ", request_id, b"\r\n")
    parts.append(header_block(list(response.headers)))
    parts.append(extra)
    if not keep_alive or response.close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(response.body)
    return b"".join(parts)

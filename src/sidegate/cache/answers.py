"""Responses served from a stored entry: the full hit, a 304, a 206 range, a 416; and a 206 from a
stored piece of a representation (:mod:`sidegate.cache.pieces`).

A full hit costs two concatenations: the entry's head is stored ready to send (status line and
fields, Content-Length included), and only ``Age`` and the cache-status field are added.
"""

from __future__ import annotations

from typing import Final

from sidegate.cache.entry import MUST_REVALIDATE, NO_CACHE, Entry
from sidegate.cache.pieces import span
from sidegate.http.messages import Headers, ReadyResponse
from sidegate.policy.cache_rules import (
    RequestDirectives,
    Verdict,
    choose,
    if_range_allows,
    not_modified,
    parse_range,
)

#: Fields a 304 carries from the stored response (RFC 9110 15.4.5)
_NOT_MODIFIED_FIELDS: Final = frozenset(
    (b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified")
)


class StatusField:
    """How the outcome is told to the client: ``X-Cache: HIT``, ``Cache-Status`` (RFC 9211) or both."""

    def __init__(self, style: str) -> None:
        self.x_cache = style in ("x-cache", "both")
        self.cache_status = style in ("cache-status", "both")

    def lines(self, result: str, ttl: float | None = None) -> bytes:
        """The header lines for ``result`` (HIT, MISS, STALE, REVALIDATED, BYPASS)."""
        out = b""
        if self.x_cache:
            out = b"X-Cache: " + result.encode() + b"\r\n"
        if self.cache_status:
            out += b"Cache-Status: " + _cache_status(result, ttl) + b"\r\n"
        return out

    def fields(self, result: str) -> Headers:
        """The same as header tuples, for a response going through from the app."""
        fields: Headers = []
        if self.x_cache:
            fields.append((b"X-Cache", result.encode()))
        if self.cache_status:
            fields.append((b"Cache-Status", _cache_status(result, None)))
        return fields


def _cache_status(result: str, ttl: float | None) -> bytes:
    if result in ("HIT", "STALE"):
        return b"sidegate; hit" + (b"; ttl=%d" % int(ttl) if ttl is not None else b"")
    if result == "REVALIDATED":
        return b"sidegate; fwd=stale; fwd-status=304"
    if result == "BYPASS":
        return b"sidegate; fwd=bypass"
    return b"sidegate; fwd=uri-miss"


def serve(
    entry: Entry,
    request_headers: Headers,
    age: float,
    status_lines: bytes,
    *,
    conditional: bool,
    ranged: bool,
) -> ReadyResponse:
    """The answer to a GET/HEAD from ``entry``: 200 (or its stored status), 304, 206 or 416.

    ``conditional``/``ranged``: the request carries If-None-Match/If-Modified-Since or Range (the
    filter saw it while scanning the fields, so the common request skips both look-ups here).
    """
    extra = b"Age: %d\r\n" % int(age) + status_lines
    if conditional and entry.status == 200 and not_modified(request_headers, entry.etag, entry.last_modified):
        return _not_modified(entry, extra)
    if ranged and entry.status == 200:
        answer = _range(entry, request_headers, extra)
        if answer is not None:
            return answer
    return ReadyResponse(entry.status, entry.head + extra, entry.body)


def _not_modified(entry: Entry, extra: bytes) -> ReadyResponse:
    parts = [b"HTTP/1.1 304 Not Modified\r\n"]
    for name, value in entry.headers:
        if name.lower() in _NOT_MODIFIED_FIELDS:
            parts.append(name + b": " + value + b"\r\n")
    parts.append(extra)
    return ReadyResponse(304, b"".join(parts))


def _range_fields(request_headers: Headers) -> tuple[bytes | None, bytes | None]:
    value = if_range = None
    for name, field in request_headers:
        lname = name.lower()
        if lname == b"range":
            value = field
        elif lname == b"if-range":
            if_range = field
    return value, if_range


def _range(entry: Entry, request_headers: Headers, extra: bytes) -> ReadyResponse | None:
    value, if_range = _range_fields(request_headers)
    if value is None:
        return None
    if if_range is not None and not if_range_allows(if_range, entry.etag, entry.last_modified):
        return None  # the client's copy changed: the whole representation
    size = len(entry.body)
    wanted = parse_range(value, size)
    if wanted is None:
        return None
    fields = _fields_without_length(entry)
    if wanted == "unsatisfiable":
        head = b"HTTP/1.1 416 Range Not Satisfiable\r\n" + fields + b"Content-Range: bytes */%d\r\n" % size
        return ReadyResponse(416, head + b"Content-Length: 0\r\n" + extra)
    first, last = wanted
    body = entry.body[first : last + 1]
    head = (
        b"HTTP/1.1 206 Partial Content\r\n"
        + fields
        + b"Content-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n" % (first, last, size, len(body))
    )
    return ReadyResponse(206, head + extra, body)


def _fields_without_length(entry: Entry) -> bytes:
    return b"".join([name + b": " + value + b"\r\n" for name, value in entry.headers])


#: (piece, first, last, age, verdict) of a range answered from a stored piece
PieceAnswer = tuple[Entry, int, int, float, Verdict]


def from_pieces(
    pieces: list[Entry], request_headers: Headers, directives: RequestDirectives, now: float
) -> PieceAnswer | None:
    """The stored piece that holds every byte a single-range request asks for, when it may be
    served (fresh, or stale within the client's max-stale) and If-Range, if sent, allows it;
    None otherwise (the request goes to the app: pieces are not revalidated, a new 206 replaces
    them). Several ranges, or a range past the end, are not answered from pieces either."""
    value, if_range = _range_fields(request_headers)
    if value is None:
        return None
    for piece in pieces:
        held = span(piece)
        if held is None:
            continue
        wanted = parse_range(value, held[2])
        if wanted is None or wanted == "unsatisfiable":
            return None
        first, last = wanted
        if not held[0] <= first <= last <= held[1]:
            continue
        if if_range is not None and not if_range_allows(if_range, piece.etag, piece.last_modified):
            return None
        age = piece.age(now)
        verdict = choose(
            age,
            piece.freshness,
            directives,
            must_revalidate=bool(piece.flags & MUST_REVALIDATE),
            no_cache=bool(piece.flags & NO_CACHE),
        )
        return None if verdict is Verdict.REVALIDATE else (piece, first, last, age, verdict)
    return None


def serve_piece(piece: Entry, first: int, last: int, age: float, status_lines: bytes) -> ReadyResponse:
    """A 206 of bytes ``first``-``last`` from a stored piece that holds them."""
    held = span(piece)
    assert held is not None, "from_pieces chose it by its Content-Range"
    body = piece.body[first - held[0] : last - held[0] + 1]
    fields = b"".join([n + b": " + v + b"\r\n" for n, v in piece.headers if n.lower() != b"content-range"])
    head = (
        b"HTTP/1.1 206 Partial Content\r\n"
        + fields
        + b"Content-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n" % (first, last, held[2], len(body))
    )
    return ReadyResponse(206, head + b"Age: %d\r\n" % int(age) + status_lines, body)

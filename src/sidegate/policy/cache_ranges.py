"""Byte ranges for the shared cache (RFC 9110 14, RFC 9111 3.3-3.4): what a request asks for, what a
206 holds, and how stored pieces of one representation join.

``parse_range`` and ``if_range_allows`` decide how a Range request is answered from what is
stored; ``content_range`` reads the one range a 206 carries; ``strong_validator`` says whether
two responses are the same representation (the only case in which their bytes may be combined,
RFC 9111 3.4); ``join_pieces`` joins a new piece with the stored ones it overlaps or touches.
Pure functions on bytes and ints, as the rest of :mod:`sidegate.policy`.
"""

from __future__ import annotations

from typing import Final, Literal

from sidegate.http.messages import Headers
from sidegate.policy.cache_control import parse_http_date

Span = tuple[int, int, int]  # first, last (inclusive), complete length
ByteRange = tuple[int, int]  # first, last (inclusive)
_HUGE: Final = 10**18  # any position beyond a stored body


def _position(digits: bytes) -> int | None:
    if not digits.isdigit():
        return None
    return _HUGE if len(digits) > 18 else int(digits)


def parse_range(value: bytes, length: int) -> ByteRange | None | Literal["unsatisfiable"]:  # noqa: RUF036
    """The single byte range of a Range value, clipped to a body of ``length`` bytes.

    None means "serve the whole 200": several ranges, another unit or bad syntax (a server may
    always ignore Range). "unsatisfiable" means a 416.
    """
    unit, eq, ranges = value.partition(b"=")
    if not eq or unit.strip().lower() != b"bytes":
        return None
    specs = [spec for spec in (part.strip() for part in ranges.split(b",")) if spec]
    if len(specs) != 1:
        return None
    first_text, dash, last_text = specs[0].partition(b"-")
    if not dash:
        return None
    if not first_text:  # suffix: the last N bytes
        suffix = _position(last_text)
        if suffix is None:
            return None
        if suffix == 0 or length <= 0:
            return "unsatisfiable"
        return max(0, length - suffix), length - 1
    first = _position(first_text)
    last = _position(last_text) if last_text else _HUGE
    if first is None or last is None or last < first:
        return None
    if first >= length:
        return "unsatisfiable"
    return first, min(last, length - 1)


def if_range_allows(value: bytes, etag: bytes | None, last_modified: bytes | None) -> bool:
    """Whether If-Range ``value`` lets the Range apply: a strong etag match, or the exact date."""
    value = value.strip()
    if value.startswith((b'"', b"W/")):
        mine = opaque_tag(value)
        stored = opaque_tag(etag) if etag is not None else None
        return mine is not None and stored is not None and not mine[0] and not stored[0] and mine == stored
    if last_modified is None:
        return False
    date = parse_http_date(value)
    return date is not None and date == parse_http_date(last_modified)


def opaque_tag(etag: bytes) -> tuple[bool, bytes] | None:
    """(weak, opaque-tag with its quotes) of an entity-tag, or None when it is not one."""
    tag = etag.strip()
    weak = tag.startswith(b"W/")
    opaque = tag[2:] if weak else tag
    if len(opaque) < 2 or opaque[0] != 0x22 or opaque.find(b'"', 1) != len(opaque) - 1:
        return None
    return weak, opaque


def content_range(value: bytes) -> Span | None:
    """(first, last, complete length) of a 206's ``Content-Range: bytes first-last/complete``;
    None for another unit, an unknown length (``/*``), or a range that does not fit in it."""
    unit, space, rest = value.strip().partition(b" ")
    if not space or unit.lower() != b"bytes":
        return None
    span, slash, complete_text = rest.strip().partition(b"/")
    first_text, dash, last_text = span.partition(b"-")
    if not (slash and dash):
        return None
    first, last, complete = _position(first_text), _position(last_text), _position(complete_text)
    if first is None or last is None or complete is None or not first <= last < complete < _HUGE:
        return None
    return first, last, complete


def strong_validator(headers: Headers) -> bytes | None:
    """What makes two responses the same representation, byte for byte (RFC 9110 8.8): a strong
    ETag, else a Last-Modified at least a second before the response's Date (8.8.2.2); None when
    the response has neither, and its bytes must not be combined with another's."""
    etag = modified = date = None
    for name, value in headers:
        lname = name.lower()
        if lname == b"etag" and etag is None:
            etag = value
        elif lname == b"last-modified" and modified is None:
            modified = value
        elif lname == b"date" and date is None:
            date = value
    if etag is not None:
        tag = opaque_tag(etag)
        return b"etag:" + tag[1] if tag is not None and not tag[0] else None
    if modified is None or date is None:
        return None
    modified_at, dated = parse_http_date(modified), parse_http_date(date)
    if modified_at is None or dated is None or dated - modified_at < 1:
        return None
    return b"last-modified:%d" % int(modified_at)


def join_pieces(stored: list[tuple[int, bytes]], first: int, body: bytes) -> tuple[int, bytes, list[int]]:
    """The new piece (``body`` from byte ``first``) joined with every stored ``(first, body)`` it
    overlaps or touches, transitively: (first, body, indexes of the stored pieces taken in).
    Where they overlap the new bytes win; the caller has checked that all are one representation.
    """
    start, end = first, first + len(body)  # end exclusive
    taken: list[int] = []
    grew = True
    while grew:
        grew = False
        for index, (other, data) in enumerate(stored):
            if index not in taken and other <= end and start <= other + len(data):
                taken.append(index)
                start, end = min(start, other), max(end, other + len(data))
                grew = True
    joined = bytearray(end - start)
    for index in taken:
        other, data = stored[index]
        joined[other - start : other - start + len(data)] = data
    joined[first - start : first - start + len(body)] = body
    return start, bytes(joined), taken

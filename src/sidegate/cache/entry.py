"""One cached response as a value: what is stored, how it is encoded, and how old it is.

An entry keeps the response head ready to send (status line and header lines, with
Content-Length and without the final CRLF): a cache hit writes ``head``, an ``Age`` line, CRLF
and ``body`` with no per-header work. The freshness inputs are stored as numbers fixed when the
response arrived, so any reader (another process, another language) decides freshness with the
same arithmetic: ``age = initial_age + max(0, now - response_time)``, fresh while
``age < freshness`` (RFC 9111 4.2).

Value layout (little-endian; docs/cache-layout.md is the contract for other languages)::

    0  4s magic b"SGC1" | 4 H status | 6 H flags | 8 d response_time | 16 d initial_age
    24 d freshness | 32 d stale_while_revalidate | 40 d stale_if_error | 48 I head_len
    52 I body_len | 56 I tags_len | 60 I reserved (0) | 64.. head, body, tags (UTF-8, "\\n"-separated)
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, Final, cast

from sidegate.errors import SidegateError
from sidegate.http.messages import Headers
from sidegate.http.syntax import connection_tokens
from sidegate.http.writer import status_line

MUST_REVALIDATE: Final = 1  # flags bit: once stale, never served without revalidation
NO_CACHE: Final = 2  # flags bit: always revalidate before use

MAGIC: Final = b"SGC1"
LAYOUT: Final = struct.Struct("<4sHHdddddIIII")
HEADER_SIZE: Final = LAYOUT.size  # 64
_unpack = LAYOUT.unpack_from

# Never stored: hop-by-hop fields (RFC 9110 7.6.1), framing, and what Sidegate adds per hit.
_DROPPED: Final = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"age",
        b"content-length",
        b"x-cache",
        b"cache-status",
    )
)
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BODYLESS: Final = frozenset((204, 304))


class CorruptEntry(SidegateError):  # noqa: N818 (the name the spec gives)
    """A stored value that is not a valid entry (truncated, foreign or damaged)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored response and the numbers that decide its freshness (see the module docstring)."""

    status: int
    head: bytes  # b"HTTP/1.1 200 OK\r\n" + b"Name: value\r\n"... + b"Content-Length: N\r\n" (no final CRLF)
    body: bytes
    response_time: float  # unix time the response arrived
    initial_age: float  # corrected initial age at response_time (RFC 9111 4.2.3)
    freshness: float  # freshness lifetime, seconds
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    flags: int = 0
    tags: tuple[str, ...] = ()

    def age(self, now: float) -> float:
        """Current age in seconds (RFC 9111 4.2.3)."""
        return self.initial_age + max(0.0, now - self.response_time)

    def fresh(self, now: float) -> bool:
        """Servable without revalidation: younger than its freshness lifetime and not no-cache."""
        return not self.flags & NO_CACHE and self.age(now) < self.freshness

    @property
    def headers(self) -> Headers:
        """Header fields of ``head`` in order, without the status line and Content-Length."""
        out: Headers = []
        for line in self.head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if sep and name.lower() != b"content-length":
                out.append((name, value.strip()))
        return out

    @property
    def etag(self) -> bytes | None:
        return self._field(b"etag")

    @property
    def last_modified(self) -> bytes | None:
        return self._field(b"last-modified")

    def _field(self, lname: bytes) -> bytes | None:
        for name, value in self.headers:
            if name.lower() == lname:
                return value
        return None

    @classmethod
    def build(
        cls,
        status: int,
        headers: Headers,
        body: bytes,
        *,
        response_time: float,
        initial_age: float,
        freshness: float,
        stale_while_revalidate: float = 0.0,
        stale_if_error: float = 0.0,
        flags: int = 0,
        tags: Iterable[str] = (),
    ) -> Entry:
        """An entry whose ``head`` is made from ``status`` (standard reason), ``headers`` and
        ``len(body)``; hop-by-hop fields (and those Connection names), Age, Content-Length,
        Transfer-Encoding, X-Cache and Cache-Status are dropped.

        ValueError for a status outside 200-599, a body on 204/304, a header name that is not
        a token or a value with a control character (the head is sent as is), or a tag that is
        empty or holds a newline.
        """
        if not 200 <= status <= 599:
            raise ValueError(f"status {status}: only final responses (200-599) are cached")
        if status in _BODYLESS and body:
            raise ValueError(f"status {status} has no body")
        dropped = set(_DROPPED)
        for name, value in headers:
            if name.lower() == b"connection":
                dropped.update(connection_tokens(value))
        parts = [status_line(status)]
        for name, value in headers:
            if name.lower() in dropped:
                continue
            if _TOKEN.fullmatch(name) is None:
                raise ValueError(f"header name {name!r} is not a token")
            if _BAD_VALUE.search(value) is not None:
                raise ValueError(f"header {name!r}: the value holds a control character")
            parts += (name, b": ", value.strip(), b"\r\n")
        if status not in _BODYLESS:
            parts.append(b"Content-Length: %d\r\n" % len(body))
        tag_tuple = tuple(tags)
        for tag in tag_tuple:
            if not tag or "\n" in tag:
                raise ValueError(f"cache tag {tag!r}: must be non-empty, without a newline")
        return cls(
            status,
            b"".join(parts),
            body,
            response_time,
            initial_age,
            freshness,
            stale_while_revalidate,
            stale_if_error,
            flags,
            tag_tuple,
        )

    def encode(self) -> bytes:
        """The stored value (layout in the module docstring)."""
        tags = "\n".join(self.tags).encode()
        header = LAYOUT.pack(
            MAGIC,
            self.status,
            self.flags,
            self.response_time,
            self.initial_age,
            self.freshness,
            self.stale_while_revalidate,
            self.stale_if_error,
            len(self.head),
            len(self.body),
            len(tags),
            0,
        )
        return b"".join((header, self.head, self.body, tags))

    @classmethod
    def decode(cls, raw: bytes | memoryview) -> Entry:
        """The entry in a stored value (``bytes``, or a buffer valid for the call); raises
        CorruptEntry when the value is not one. Head and body are copied out of ``raw``."""
        try:
            (magic, status, flags, rtime, iage, fresh, swr, sie, head_len, body_len, tags_len, _) = _unpack(
                raw
            )
        except struct.error:
            raise CorruptEntry("value shorter than the 64-byte entry header") from None
        body_at = HEADER_SIZE + head_len
        tags_at = body_at + body_len
        if magic != MAGIC or tags_at + tags_len != len(raw) or raw[HEADER_SIZE : HEADER_SIZE + 5] != b"HTTP/":
            raise CorruptEntry("not a Sidegate cache entry (bad magic, lengths or status line)")
        if tags_len:
            try:
                tags = tuple(bytes(raw[tags_at:]).decode().split("\n"))
            except UnicodeDecodeError:
                raise CorruptEntry("entry tags are not UTF-8") from None
        else:
            tags = ()
        # The hit path: setting the slots directly costs half of the frozen __init__ (which
        # goes through object.__setattr__ once per field).
        entry = _new(cls)
        _set_status(entry, status)
        _set_head(entry, bytes(raw[HEADER_SIZE:body_at]))
        _set_body(entry, bytes(raw[body_at:tags_at]))
        _set_response_time(entry, rtime)
        _set_initial_age(entry, iage)
        _set_freshness(entry, fresh)
        _set_swr(entry, swr)
        _set_sie(entry, sie)
        _set_flags(entry, flags)
        _set_tags(entry, tags)
        return entry


_new = object.__new__
_Setter = Callable[[Entry, Any], None]
(
    _set_status,
    _set_head,
    _set_body,
    _set_response_time,
    _set_initial_age,
    _set_freshness,
    _set_swr,
    _set_sie,
    _set_flags,
    _set_tags,
) = cast(tuple[_Setter, ...], tuple(getattr(Entry, field.name).__set__ for field in fields(Entry)))


def value_tags(raw: bytes | memoryview) -> tuple[str, ...]:
    """The tags of a stored value without copying head and body; () when it is not an entry."""
    try:
        magic, *_, head_len, body_len, tags_len, _ = _unpack(raw)
    except struct.error:
        return ()
    tags_at = HEADER_SIZE + head_len + body_len
    if magic != MAGIC or not tags_len or tags_at + tags_len != len(raw):
        return ()
    try:
        return tuple(bytes(raw[tags_at:]).decode().split("\n"))
    except UnicodeDecodeError:
        return ()

"""The cache filter's common case, compiled with the hot path: a GET or HEAD with nothing special
whose entry is stored and fresh, answered with the bytes stored for it.

:meth:`PlainHits.lookup` scans the request's fields once, builds the key, reads the store and,
when the entry is fresh and the request neither conditional nor ranged nor carrying cache
directives, returns the answer. Anything else comes back as a :class:`Lookup` for the filter's
general path (:mod:`sidegate.filters.cache`), with what was learned so far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from sidegate.cache.urlkey import request_url
from sidegate.http.messages import ReadyResponse, RequestHead

if TYPE_CHECKING:
    from sidegate.cache.entry import Entry
    from sidegate.cache.store import Store

#: Lookup.flags: what the request carries that takes it off the plain-hit path
DIRECTIVES: Final = 1  # Cache-Control or Pragma
CONDITIONAL: Final = 2  # If-None-Match or If-Modified-Since
RANGED: Final = 4  # Range
BYPASS: Final = 8  # one of the route's bypass headers

DIRECTIVE_FIELDS: Final = frozenset((b"cache-control", b"pragma"))
CONDITIONAL_FIELDS: Final = frozenset((b"if-none-match", b"if-modified-since"))
_NO_CACHE_FLAG: Final = 2  # sidegate.cache.entry.NO_CACHE (not imported: entry is not compiled)


class Lookup:
    """What the plain path learned about a request it could not answer."""

    def __init__(self, flags: int, url: bytes, partition: str, entry: Entry | None, looked_up: bool) -> None:
        self.flags = flags
        self.url = url
        self.partition = partition
        self.entry = entry
        self.looked_up = looked_up  # False: the store was not read (directives or bypass)


class PlainHits:
    """One route's plain-hit path: its bypass fields, key rules and status line."""

    def __init__(
        self,
        bypass: frozenset[bytes],
        *,
        sort_query: bool,
        ignored: frozenset[bytes],
        partition: str,
        x_cache: bool,
        cache_status: bool,
    ) -> None:
        self.bypass = bypass
        self.special = bypass | DIRECTIVE_FIELDS | CONDITIONAL_FIELDS | {b"range"}
        self.sort_query = sort_query
        self.ignored = ignored
        self.partition = partition
        self.x_cache = x_cache
        self.cache_status = cache_status

    def lookup(
        self, store: Store, request: RequestHead, host: bytes, tenant: str, now: float
    ) -> ReadyResponse | Lookup:
        flags = 0
        special = self.special
        for name, _ in request.headers:
            lname = name.lower()
            if lname in special:
                if lname in DIRECTIVE_FIELDS:
                    flags |= DIRECTIVES
                elif lname in CONDITIONAL_FIELDS:
                    flags |= CONDITIONAL
                elif lname == b"range":
                    flags |= RANGED
                else:
                    flags |= BYPASS
        url = request_url(host, request.path, request.query, self.sort_query, self.ignored)
        partition = self.partition or tenant
        if flags & (DIRECTIVES | BYPASS):
            return Lookup(flags, url, partition, None, False)
        entry = store.lookup(partition, url, request.headers, now)
        if entry is not None and not flags:
            age: float = entry.initial_age + now - entry.response_time
            freshness: float = entry.freshness
            if age < freshness and not entry.flags & _NO_CACHE_FLAG:
                head: bytes = entry.head
                body: bytes = entry.body
                status: int = entry.status
                return ReadyResponse(
                    status, head + b"Age: %d\r\n" % int(age) + self.lines(freshness - age), body
                )
        return Lookup(flags, url, partition, entry, True)

    def lines(self, ttl: float) -> bytes:
        """The cache-status header lines of a hit."""
        out = b"X-Cache: HIT\r\n" if self.x_cache else b""
        if self.cache_status:
            out += b"Cache-Status: sidegate; hit; ttl=%d\r\n" % int(ttl)
        return out

"""One request's dealings with the cache, and the store a route's cache filter reaches it through.

:class:`StoreHandle` opens the shared store on first use (never at config load: a config may be
checked without being served, and LMDB must be opened after a worker forks). When the directory
is unusable it logs why, serves uncached, and tries again ten seconds later.

:class:`CacheSession` carries what the filter learns about a request from lookup to log: the key,
the stale entry being revalidated, the response body being captured. Every store operation goes
through :meth:`CacheSession.guard`: a failing store costs the request its caching, never its answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Final, TypeVar

from sidegate.cache.counters import COUNTERS
from sidegate.cache.entry import MUST_REVALIDATE, NO_CACHE, Entry
from sidegate.cache.flights import Flight
from sidegate.cache.refresh import Refetch, revalidation_headers
from sidegate.cache.store import Store, StoreError, open_store
from sidegate.http.messages import Fetched, Headers, RequestHead, ResponseHead
from sidegate.policy.cache_ranges import Span, content_range
from sidegate.policy.cache_rules import (
    RequestDirectives,
    freshness_lifetime,
    initial_age,
    invalidation_urls,
    merge_not_modified,
    response_directives,
    storable,
    vary_names,
)

log = logging.getLogger("sidegate.cache")
T = TypeVar("T")
_RETRY_OPEN: Final = 10.0  # seconds between attempts to open an unusable store
_REFRESH_BOUND: Final = 30.0  # a revalidation on a route with no response timeout still ends


class StoreHandle:
    """A route's way to the shared store, and to its upstream for background revalidations."""

    def __init__(
        self, directory: str, *, max_size: int, max_entry_size: int, quotas: Mapping[str, int], timeout: float
    ) -> None:
        """The top-level ``cache:`` settings, and the route's response timeout (0: none)."""
        self.directory = directory
        self.max_size = max_size
        self.max_entry_size = max_entry_size  # a larger response streams through uncached
        self.quotas = quotas
        self.timeout = timeout or _REFRESH_BOUND  # the longest a background revalidation may take
        self.refetch: Refetch | None = None  # given by the serving layer (see sidegate.cache.refresh)
        self.current: Store | None = None  # the open store (None until opened, or while unusable)
        self._retry_at = 0.0

    def store(self) -> Store | None:
        """The open store, or None while it is unusable (the reason was logged)."""
        store = self.current
        if store is not None:
            return store
        now = time.monotonic()
        if now < self._retry_at:
            return None
        try:
            self.current = open_store(self.directory, max_size=self.max_size, quotas=self.quotas)
        except StoreError as exc:
            self._retry_at = now + _RETRY_OPEN
            COUNTERS.store_errors["open"] += 1
            log.warning("cache: store unusable, serving uncached (retry in %ds): %s", _RETRY_OPEN, exc)
            return None
        return self.current

    def failed(self, exc: Exception, url: bytes) -> None:
        """A store operation failed: counted and logged; the request goes on uncached."""
        COUNTERS.store_errors[type(exc).__name__] += 1
        log.warning("cache: %s on %s, going on uncached: %s", type(exc).__name__, url.decode("latin-1"), exc)


class CacheSession:
    """What the cache filter keeps about one request (in ``ctx.cache``, the request context)."""

    MUST_REVALIDATE: Final = MUST_REVALIDATE
    NO_CACHE: Final = NO_CACHE

    def __init__(
        self,
        handle: StoreHandle,
        request: RequestHead,
        partition: str,
        url: bytes,
        directives: RequestDirectives,
        *,
        key_headers: tuple[bytes, ...] = (),
        default_ttl: float = 0.0,
        unsafe: bool = False,
    ) -> None:
        self.handle = handle
        self.request = request
        self.client_headers = request.headers  # kept: the filter may swap in its own validators
        self.partition = partition
        self.url = url
        self.identity = b""  # the consumer's identity header lines (set by the filter), for revalidations
        self.directives = directives
        self.key_headers = key_headers
        self.default_ttl = default_ttl
        self.unsafe = unsafe
        self.conditional = False
        self.ranged = False
        self.result = ""
        self.waited = False
        self.flight: Flight | None = None
        self.stale: Entry | None = None
        self.request_time = time.time()
        self.body: list[bytes] | None = None  # the response body while it is being captured
        self._size = 0
        self._response: ResponseHead | None = None
        self._vary: tuple[bytes, ...] = ()
        self._span: Span | None = None  # a 206 being captured: its first, last, complete length

    def guard(self, operation: Callable[[], T]) -> T | None:
        """Run a store operation; a failure is logged and counted, and becomes None."""
        try:
            return operation()
        except Exception as exc:  # the store is a cache: no failure of it may reach the client
            COUNTERS.store_errors[type(exc).__name__] += 1
            log.warning(
                "cache: %s on %s, going on uncached: %s", type(exc).__name__, self.url.decode("latin-1"), exc
            )
            return None

    def flight_key(self) -> bytes:
        """The key concurrent misses collapse on: partition, URL, the route's key headers and
        the Range asked for, if any."""
        key = self.partition.encode() + b"\x1f" + self.url
        for name in self.key_headers:
            key += b"\x00" + b", ".join(v for n, v in self.client_headers if n.lower() == name)
        if self.ranged:  # another range is another trip: it need not wait for this one
            key += b"\x00range=" + b", ".join(v for n, v in self.client_headers if n.lower() == b"range")
        return key

    # -- storing -------------------------------------------------------------------------------

    def consider(self, response: ResponseHead, default_ttl: float) -> None:
        """Decide whether the response may be stored; if so, start capturing its body."""
        request = self.request
        headers = response.headers
        has_auth = any(n.lower() == b"authorization" for n, _ in self.client_headers)
        rcc = response_directives(headers)
        reason = storable(
            request.method, response.status, self.directives, has_auth, rcc, headers, default_ttl=default_ttl
        )
        personal = any(n.lower() == b"set-cookie" for n, _ in headers)
        if reason is None and personal and not (rcc.public or rcc.s_maxage is not None):
            reason = "set-cookie"  # a personal answer unless the app says it is public
        length = response.content_length
        if reason is None and length is not None and length > self.handle.max_entry_size:
            reason = "too-large"
        if reason is None and response.status == 206:
            reason = self._partial(headers, length)
        vary = vary_names(headers)
        if reason is not None or vary is None:
            return
        self._vary = tuple(dict.fromkeys(self.key_headers + vary))
        self._response = response
        self.body = []

    def _partial(self, headers: Headers, length: int | None) -> str | None:
        """Why a 206 cannot be stored as a piece (None: it can; its span is kept)."""
        if not self.ranged:
            return "partial"  # an answer to a Range the client did not send
        value = next((v for n, v in headers if n.lower() == b"content-range"), None)
        piece = content_range(value) if value is not None else None
        if piece is None:
            return "partial"  # several ranges (multipart/byteranges) or an unknown length: passed through
        first, last, complete = piece
        if complete > self.handle.max_entry_size:
            return "too-large"  # the pieces could never make an entry
        if length is not None and length != last - first + 1:
            return "partial"
        self._span = piece
        return None

    def capture(self, data: bytes) -> None:
        assert self.body is not None
        self._size += len(data)
        if self._size > self.handle.max_entry_size:
            self.body = None  # streams through uncached
        else:
            self.body.append(data)

    def finish(self) -> None:
        """The response ended cleanly: store it (unless its body was not what its head said)."""
        response, body, self.body = self._response, self.body, None
        if response is None or body is None:
            return
        data = b"".join(body)
        if response.content_length is not None and len(data) != response.content_length:
            return
        span = self._span
        if response.status != 206:
            self._store(response.status, response.headers, data, self.request_time, time.time())
        elif span is not None and len(data) == span[1] - span[0] + 1:
            self._store_piece(response.headers, data, time.time())

    def _store_piece(self, headers: Headers, body: bytes, response_time: float) -> None:
        piece = self._entry(206, headers, body, self.request_time, response_time)
        store = self.handle.store()
        if store is not None:
            vary = self._vary
            stored = self.guard(
                lambda: store.store_piece(self.partition, self.url, vary, self.client_headers, piece)
            )
            if stored is not None:
                COUNTERS.stored += 1
                COUNTERS.stored_bytes += len(body)

    def _store(
        self, status: int, headers: Headers, body: bytes, request_time: float, response_time: float
    ) -> Entry:
        entry = self._entry(status, headers, body, request_time, response_time)
        store = self.handle.store()
        if store is not None:
            vary = self._vary
            stored = self.guard(
                lambda: store.store(self.partition, self.url, vary, self.client_headers, entry)
            )
            if stored:
                COUNTERS.stored += 1
                COUNTERS.stored_bytes += len(entry.head) + len(entry.body)
        return entry

    def _entry(
        self, status: int, headers: Headers, body: bytes, request_time: float, response_time: float
    ) -> Entry:
        rcc = response_directives(headers)
        flags = (
            MUST_REVALIDATE if rcc.must_revalidate or rcc.proxy_revalidate or rcc.s_maxage is not None else 0
        ) | (NO_CACHE if rcc.no_cache else 0)
        return Entry.build(
            status,
            headers,
            body,
            response_time=response_time,
            initial_age=initial_age(headers, request_time, response_time),
            freshness=freshness_lifetime(status, headers, rcc, default_ttl=self.default_ttl),
            stale_while_revalidate=float(rcc.stale_while_revalidate or 0),
            stale_if_error=float(rcc.stale_if_error or 0),
            flags=flags,
            tags=_tags(headers),
        )

    # -- revalidating --------------------------------------------------------------------------

    def refresh(self, stale: Entry, update: Headers) -> Entry:
        """A 304 for ``stale``: its headers updated, stored again, fresh from now."""
        self._vary = tuple(dict.fromkeys(self.key_headers + (vary_names(stale.headers) or ())))
        merged = merge_not_modified(stale.headers, update)
        return self._store(stale.status, merged, stale.body, self.request_time, time.time())

    def may_serve_stale_on_error(self) -> bool:
        stale = self.stale
        if stale is None or stale.flags & MUST_REVALIDATE:
            return False
        return stale.age(time.time()) - stale.freshness <= stale.stale_if_error

    def refresh_in_background(self, entry: Entry, flight: Flight, land: Callable[[Flight], None]) -> None:
        """Serve ``entry`` stale now; have the route's upstream client fetch it again
        conditionally, and store the answer (the flight lands either way)."""
        handle = self.handle
        refetch = handle.refetch
        if refetch is None:  # no upstream client: the entry stays stale until a miss refreshes it
            land(flight)
            return
        self._vary = tuple(dict.fromkeys(self.key_headers + (vary_names(entry.headers) or ())))

        def done(fetched: Fetched | None) -> None:
            try:
                if fetched is not None:
                    self._refreshed(entry, fetched)
            finally:
                land(flight)

        refetch(
            self.request,
            revalidation_headers(self.client_headers, entry.headers),
            identity=self.identity,
            timeout=handle.timeout,
            max_body=handle.max_entry_size,
            done=done,
        )

    def _refreshed(self, entry: Entry, fetched: Fetched) -> None:
        status, headers, body, request_time, response_time = fetched
        if status == 304:
            self.request_time = request_time
            self.refresh(entry, headers)
            return
        rcc = response_directives(headers)
        if (
            storable(b"GET", status, self.directives, False, rcc, headers, default_ttl=self.default_ttl)
            is None
        ):
            vary = vary_names(headers)
            if vary is not None:
                self._vary = tuple(dict.fromkeys(self.key_headers + vary))
                self._store(status, headers, body, request_time, response_time)

    # -- invalidating --------------------------------------------------------------------------

    def invalidate_after(self, response: ResponseHead) -> None:
        """RFC 9111 4.4: a successful unsafe request invalidates its URL and the ones it names."""
        if not 200 <= response.status < 400:
            return
        store = self.handle.store()
        if store is None:
            return
        partition = self.partition
        for url in [self.url, *invalidation_urls(self.url, response.headers)]:
            self.guard(partial(store.invalidate, partition, url))


def _tags(headers: Headers) -> tuple[str, ...]:
    """Purge tags: ``Surrogate-Key`` (space-separated) and ``Cache-Tag`` (comma-separated)."""
    tags: list[str] = []
    for name, value in headers:
        lname = name.lower()
        if lname == b"surrogate-key":
            tags += value.decode("latin-1").split()
        elif lname == b"cache-tag":
            tags += [t.strip() for t in value.decode("latin-1").split(",") if t.strip()]
    return tuple(dict.fromkeys(tags))

"""``cache``: serve and store responses in the pod's shared cache (RFC 9111, a shared cache).

    filters:
      cache: {default_ttl: 30, key_headers: [accept-language], ignore_query: [utm_source]}

Theory of operation
-------------------
``on_request`` looks a GET or HEAD up in the store (:mod:`sidegate.cache.store`, LMDB in the
directory of the top-level ``cache:``) under the effective URL ``http://host/path?query``, in the
route's partition (the request's tenant when one is known):

* fresh (or stale within the client's ``max-stale``): answered from the store, 304/206/416 when
  the request is conditional or asks for a range; a range whose full response is not stored is
  answered from a stored 206 piece that holds it (:mod:`sidegate.cache.pieces`);
* stale within ``stale-while-revalidate``: answered stale, and revalidated in the background;
* stale otherwise: forwarded with the entry's validators; a 304 refreshes and serves the entry,
  a 5xx or a failed connection serves it stale within ``stale-if-error``;
* missing: forwarded, while later misses for the same key wait for that one request.

``on_response`` decides whether the app's answer may be stored (:mod:`sidegate.policy.cache_rules`)
and ``on_response_body``/``on_response_end`` write it as it streams, up to ``max_entry_size`` (a
206 as a piece, joined with the stored pieces of the same representation). A
request with any method not known to be safe (POST, PUT, PATCH, DELETE, but also PROPFIND, PURGE
or any extension method) that succeeds invalidates its URL (and its Location/Content-Location).
Any store failure is logged and the request goes on uncached: a client never sees a cache error.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import time
from typing import Annotated, Final, Literal

from annotated_types import Ge, Gt

from sidegate.cache.answers import StatusField, from_pieces, serve, serve_piece
from sidegate.cache.counters import COUNTERS
from sidegate.cache.entry import Entry
from sidegate.cache.flights import Flights
from sidegate.cache.hitpath import (
    BYPASS,
    CONDITIONAL,
    CONDITIONAL_FIELDS,
    DIRECTIVES,
    RANGED,
    Lookup,
    PlainHits,
)
from sidegate.cache.refresh import Refetch
from sidegate.cache.session import CacheSession, StoreHandle
from sidegate.cache.urlkey import request_url
from sidegate.filters.base import Answer, Filter, FilterConfig, FilterServices, RequestContext, Wait
from sidegate.filters.registry import register
from sidegate.http.messages import LocalResponse, ReadyResponse, RequestHead, ResponseHead
from sidegate.http.writer import error_response
from sidegate.policy.cache_rules import (
    RequestDirectives,
    Verdict,
    choose,
    conditional_headers,
    invalidates,
    request_directives,
)

_LOOKUP_METHODS: Final = frozenset((b"GET", b"HEAD"))
_NO_DIRECTIVES: Final = RequestDirectives()


@dataclass(frozen=True, slots=True)
class CacheConfig(FilterConfig):
    default_ttl: Annotated[float, Ge(0)] = 0.0
    """seconds a storable response without freshness information stays fresh (0: RFC 9111 rules only)"""
    key_headers: tuple[str, ...] = ()
    """request headers that are part of the key, as if every response had `Vary` on them"""
    ignore_query: tuple[str, ...] = ()
    """query parameters left out of the key (tracking parameters such as utm_source)"""
    sort_query: bool = False
    """sort query parameters in the key, so that ?a=1&b=2 and ?b=2&a=1 share one entry"""
    bypass_headers: tuple[str, ...] = ()
    """a request carrying any of these headers skips the cache (X-Cache: BYPASS)"""
    partition: str = ""
    """store partition (see top-level cache.partitions); empty: the request's tenant, if known"""
    status_header: Literal["x-cache", "cache-status", "both"] = "x-cache"
    """how the outcome is shown: X-Cache: HIT|MISS|STALE|REVALIDATED|BYPASS, RFC 9211 Cache-Status, or both"""
    collapse_timeout: Annotated[float, Gt(0)] = 10.0
    """how long a miss waits for another request already fetching the same key, in seconds"""


@register
class Cache(Filter):
    name = "cache"
    answer_flags = {200: "", 206: "", 304: "", 504: "cache_only_if_cached"}
    config_model = CacheConfig
    header_fields = ("key_headers", "bypass_headers")
    header_alternatives = {
        "tenant": "leave it out: each tenant's entries are kept apart already (partition)",
        "host": "leave it out: the host is part of the key already",
    }

    def __init__(self, config: CacheConfig) -> None:
        super().__init__(config)
        self.cfg = config
        self.status = StatusField(config.status_header)
        self.counts = COUNTERS.route("")
        self.plain = PlainHits(
            frozenset(name.lower().encode() for name in config.bypass_headers),
            sort_query=config.sort_query,
            ignored=frozenset(name.encode() for name in config.ignore_query),
            partition=config.partition,
            x_cache=self.status.x_cache,
            cache_status=self.status.cache_status,
        )
        self.key_headers = tuple(name.lower().encode() for name in config.key_headers)
        self.flights = Flights()
        self.handle: StoreHandle | None = None
        self.route = ""

    def bind(self, services: FilterServices) -> None:
        self.route = services.route
        self.counts = COUNTERS.route(services.route)
        cache = services.cache
        self.handle = StoreHandle(
            cache.dir,
            max_size=cache.max_size,
            max_entry_size=cache.max_entry_size,
            quotas=cache.quotas,
            timeout=services.response_timeout,
        )

    def use_upstream(self, refetch: Refetch) -> None:
        """The route's upstream client for background revalidations (given when it is served)."""
        assert self.handle is not None, "bind() runs at config load"
        self.handle.refetch = refetch

    # -- request -------------------------------------------------------------------------------

    def on_request(self, request: RequestHead, ctx: RequestContext) -> Answer | Wait | None:
        session = ctx.cache
        if session is not None:  # asked again after a Wait
            return self._retry(session, request, ctx)
        if ctx.cache_result:
            return None
        method = request.method
        if method not in _LOOKUP_METHODS:
            if invalidates(method):
                ctx.cache = self._session(request, ctx, _NO_DIRECTIVES, unsafe=True)
            return None
        handle = self.handle
        assert handle is not None, "bind() runs at config load"
        store = handle.current or handle.store()
        if store is None:
            ctx.cache_result = "BYPASS"
            return None
        now = time()
        host = ctx.host or request.host
        try:
            found = self.plain.lookup(store, request, host, ctx.tenant, now)
        except Exception as exc:  # the store is a cache: its failure costs the caching only
            handle.failed(exc, request.path)
            ctx.cache_result = "BYPASS"
            return None
        if type(found) is ReadyResponse:
            ctx.cache_result = "HIT"
            return found
        assert isinstance(found, Lookup)
        return self._general(found, request, ctx, now)

    def _general(
        self, found: Lookup, request: RequestHead, ctx: RequestContext, now: float
    ) -> Answer | Wait | None:
        """Everything but the plain fresh hit: directives, conditionals, ranges, stale entries, misses."""
        flags = found.flags
        if flags & BYPASS:
            ctx.cache_result = "BYPASS"
            return None
        directives = request_directives(request.headers) if flags & DIRECTIVES else _NO_DIRECTIVES
        if directives.no_store:
            ctx.cache_result = "BYPASS"
            return None
        session = self._session(request, ctx, directives, url=found.url, partition=found.partition)
        session.conditional, session.ranged = bool(flags & CONDITIONAL), bool(flags & RANGED)
        ctx.cache = session
        entry = found.entry
        if not found.looked_up:
            store = session.handle.current
            entry = (
                None
                if store is None
                else session.guard(lambda: store.lookup(session.partition, session.url, request.headers, now))
            )
        if entry is None:
            return self._from_pieces(session, request, now) or self._miss(session, ctx)
        return self._found(session, request, entry, now)

    def _retry(
        self, session: CacheSession, request: RequestHead, ctx: RequestContext
    ) -> Answer | Wait | None:
        """The same request once the flight it waited for has landed: look again."""
        if session.flight is not None or session.unsafe:
            return None
        store = session.handle.current
        if store is None:
            return None
        now = time()
        entry = session.guard(lambda: store.lookup(session.partition, session.url, request.headers, now))
        if entry is None:
            return self._from_pieces(session, request, now) or self._miss(session, ctx)
        return self._found(session, request, entry, now)

    def _session(
        self,
        request: RequestHead,
        ctx: RequestContext,
        directives: RequestDirectives,
        *,
        unsafe: bool = False,
        url: bytes | None = None,
        partition: str | None = None,
    ) -> CacheSession:
        cfg = self.cfg
        handle = self.handle
        assert handle is not None
        if url is None:
            url = request_url(
                ctx.host or request.host, request.path, request.query, cfg.sort_query, self.plain.ignored
            )
        if partition is None:
            partition = cfg.partition or ctx.tenant
        session = CacheSession(
            handle,
            request,
            partition,
            url,
            directives,
            key_headers=self.key_headers,
            default_ttl=cfg.default_ttl,
            unsafe=unsafe,
        )
        session.identity = ctx.upstream_lines  # a revalidation carries the consumer's identity too
        return session

    def _from_pieces(self, session: CacheSession, request: RequestHead, now: float) -> Answer | None:
        """A GET for one range whose full response is not stored: a stored 206 piece that holds
        the range answers it (RFC 9111 3.3), when it may be served."""
        store = session.handle.current
        if not session.ranged or request.method != b"GET" or store is None:
            return None
        pieces = session.guard(lambda: store.pieces(session.partition, session.url, request.headers, now))
        found = from_pieces(pieces, session.client_headers, session.directives, now) if pieces else None
        if found is None:
            return None
        piece, first, last, age, verdict = found
        session.result = "HIT" if verdict is Verdict.FRESH else "STALE"
        return serve_piece(piece, first, last, age, self.status.lines(session.result, piece.freshness - age))

    def _miss(self, session: CacheSession, ctx: RequestContext) -> Wait | LocalResponse | None:
        if session.directives.only_if_cached:
            session.result = "MISS"
            return error_response(504, "not_cached", "only-if-cached and nothing stored for this URL")
        if not session.waited:
            key = session.flight_key()
            flight = self.flights.join(key)
            if flight is not None:
                session.waited = True  # once: after that landing, go to the app even on a miss
                return Wait(flight.landed, self.cfg.collapse_timeout)
            session.flight = self.flights.open(key)
        session.result = "MISS"
        return None

    def _found(self, session: CacheSession, request: RequestHead, entry: Entry, now: float) -> Answer | None:
        age = entry.age(now)
        verdict = choose(
            age,
            entry.freshness,
            session.directives,
            must_revalidate=bool(entry.flags & session.MUST_REVALIDATE),
            no_cache=bool(entry.flags & session.NO_CACHE),
        )
        if verdict is Verdict.FRESH:
            return self._hit(session, request, entry, age, "HIT")
        if verdict is Verdict.STALE_OK:
            return self._hit(session, request, entry, age, "STALE")
        staleness = age - entry.freshness
        if (
            entry.stale_while_revalidate > staleness >= 0
            and not session.directives.no_cache
            and not entry.flags & (session.MUST_REVALIDATE | session.NO_CACHE)
        ):
            key = session.flight_key()
            if self.flights.join(key) is None:
                session.refresh_in_background(entry, self.flights.open(key), self.flights.land)
            return self._hit(session, request, entry, age, "STALE")
        if session.directives.only_if_cached:
            session.result = "MISS"
            return error_response(504, "not_cached", "only-if-cached and the stored response is stale")
        session.stale = entry
        session.result = "MISS"
        request.headers = [(n, v) for n, v in request.headers if n.lower() not in CONDITIONAL_FIELDS]
        request.headers += conditional_headers(entry.headers)
        return None

    def _hit(
        self, session: CacheSession, request: RequestHead, entry: Entry, age: float, result: str
    ) -> Answer:
        session.result = result
        ttl = entry.freshness - age
        return serve(
            entry,
            session.client_headers,
            age,
            self.status.lines(result, ttl),
            conditional=session.conditional,
            ranged=session.ranged,
        )

    # -- response ------------------------------------------------------------------------------

    def on_response(self, request: RequestHead, response: ResponseHead, ctx: RequestContext) -> Answer | None:
        session = ctx.cache
        if session is None:
            if ctx.cache_result == "BYPASS":
                response.headers += self.status.fields("BYPASS")
            return None
        if session.unsafe:
            session.invalidate_after(response)
            return None
        stale = session.stale
        if stale is not None:
            if response.status == 304:
                refreshed = session.refresh(stale, response.headers)
                session.result = "REVALIDATED"
                return serve(
                    refreshed,
                    session.client_headers,
                    refreshed.age(time()),
                    self.status.lines("REVALIDATED"),
                    conditional=session.conditional,
                    ranged=session.ranged,
                )
            if response.status >= 500 and session.may_serve_stale_on_error():
                return self._stale_on_error(session, request)
        session.consider(response, self.cfg.default_ttl)
        response.headers += self.status.fields("MISS")
        return None

    def explain(self, ctx: RequestContext) -> str:
        """The cache status of the request: HIT, MISS, STALE, REVALIDATED, BYPASS..."""
        session = ctx.cache
        if session is not None:
            return "INVALIDATE" if session.unsafe else (session.result or "MISS")
        return ctx.cache_result

    def on_response_body(self, data: bytes, ctx: RequestContext) -> None:
        session = ctx.cache
        if session is not None and session.body is not None:
            session.capture(data)

    def on_response_end(self, ctx: RequestContext) -> None:
        session = ctx.cache
        if session is not None and session.body is not None:
            session.finish()

    def on_upstream_failure(self, request: RequestHead, kind: str, ctx: RequestContext) -> Answer | None:
        session = ctx.cache
        if session is not None and session.stale is not None and session.may_serve_stale_on_error():
            return self._stale_on_error(session, request)
        return None

    def _stale_on_error(self, session: CacheSession, request: RequestHead) -> Answer:
        stale = session.stale
        assert stale is not None
        return self._hit(session, request, stale, stale.age(time()), "STALE")

    def on_log(self, request: RequestHead, ctx: RequestContext) -> None:
        session = ctx.cache
        result = ctx.cache_result
        if session is not None:
            flight, session.flight = session.flight, None
            if flight is not None:
                self.flights.land(flight)
            session.body = None  # a capture the response never finished: not kept with the request
            result = session.result
        if result:
            self.counts[result] += 1

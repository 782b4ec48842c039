"""A route's requests of its own: cache revalidations, sent as the route's proxied requests are.

No client waits for a background revalidation (``stale-while-revalidate``), but the app must see
it as it sees the route's proxied requests: the route's rewrite and request header edits, the
forwarding headers of the client whose request set it off (X-Forwarded-*, Forwarded, Via), that
client's identity headers, and a request id of its own (a new one: it is not the client's
request). :class:`RouteFetch` builds that head with the one head builder
(:func:`~sidegate.request.upstream_head.upstream_head`) and sends it through the route's cluster
with the one upstream client (:func:`sidegate.upstream.fetch.fetch`: the pool, the connection).

The :class:`View` gives one to each route's cache filter (:func:`lend_to_cache`), which calls
it through :class:`sidegate.cache.refresh.Refetch`: the cache never imports this layer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from sidegate.http.messages import Fetched, Headers, RequestHead
from sidegate.http.request_head import ParsedRequest
from sidegate.request.upstream_head import upstream_head
from sidegate.upstream.fetch import fetch

if TYPE_CHECKING:
    from sidegate.filters.cache import Cache
    from sidegate.forwarding import ForwardingCache
    from sidegate.request.plan import RoutePlan


def lend_to_cache(plan: RoutePlan, forwarding: ForwardingCache) -> None:
    """Give the route's cache filter, if it has one, the route's way upstream."""
    cache = plan.cache_filter
    if cache is not None:  # registered as "cache": the one class of that name
        cast("Cache", cache).use_upstream(RouteFetch(plan, forwarding))


class RouteFetch:
    """Sends GET requests of the cache's own upstream on one route (a :class:`Refetch`)."""

    def __init__(self, plan: RoutePlan, forwarding: ForwardingCache) -> None:
        self.plan = plan
        self.forwarding = forwarding

    def __call__(
        self,
        request: RequestHead,
        headers: Headers,
        *,
        identity: bytes,
        timeout: float,
        max_body: int,
        done: Callable[[Fetched | None], None],
    ) -> None:
        plan = self.plan
        head = upstream_head(
            _get_like(request, headers),
            plan,
            self.forwarding.lines(request) if isinstance(request, ParsedRequest) else b"",
            identity=identity,
            request_id_line=b"X-Request-Id: " + new_request_id() + b"\r\n",
            trace=None,  # the client's traceparent, if any, goes on as it came
        )
        fetch(
            plan.single_pool or plan.cluster.pick(),
            head,
            connect_timeout=plan.connect_timeout,
            timeout=timeout,
            max_body=max_body,
            clock=time.time,  # the cache computes ages on the wall clock
            done=done,
            purpose=f"cache revalidation of {request.path.decode('latin-1')} (route {plan.name})",
        )


def new_request_id() -> bytes:
    """16 random hex digits, the shape of the proxy's ids (which count per process)."""
    return os.urandom(8).hex().encode()


def _get_like(request: RequestHead, headers: Headers) -> ParsedRequest:
    """A bodiless GET for ``request``'s target and Host, with ``headers`` as its fields."""
    get = ParsedRequest()
    get.method = b"GET"
    get.target, get.path, get.query = request.target, request.path, request.query
    get.host = request.host
    get.headers = headers
    if isinstance(request, ParsedRequest):
        get.host_header = request.host_header
        get.traceparent = request.traceparent
    else:
        get.host_header = request.host
    return get

"""The per-request context that filters share, compiled with the hot path.

The exchange (compiled) makes one :class:`RequestContext` for every request on a route with
filters. A filter instance is shared by every request of its route and holds only its compiled
config: whatever it learns about one request lives here, in a typed field, so that two requests
in flight on one route never see each other's state. As a native class its creation is one small
allocation and its fields are struct slots, for the compiled exchange and the compiled fast paths
of filters (:mod:`sidegate.filters.fastpath`) alike; interpreted filters use it like any object.

Fields are named for what they hold, not for a filter: ``claims`` are a verified token's (set by
``jwt``, read by ``access``), the ``limit_*`` fields the ``rate_limit`` decision, ``cache`` the
``cache`` filter's session. It lives apart from :mod:`sidegate.filters.base`, which stays
interpreted (its config dataclasses are read by pydantic), and is re-exported there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sidegate.policy.gcra import Decision

if TYPE_CHECKING:  # types only (a compiled field of these is a plain object slot)
    from sidegate.cache.session import CacheSession
    from sidegate.ratelimit.store import Pending


class RequestContext:
    """Per-request state that filters share; one per request, created by the proxy."""

    def __init__(self, route_name: str, host: bytes = b"") -> None:
        self.route_name = route_name
        self.host = host  # the Host header as the client sent it (port included)
        self.status = 0
        self.consumer = ""  # set by an authentication filter: who called...
        self.tenant = ""  # ...and for which tenant
        self.upstream_lines = b""  # header lines a filter adds to the upstream request
        self.claims: Mapping[str, Any] | None = None  # the verified token's claims (jwt)
        self.keys_waited = False  # the request waited once for a key set (jwt): never twice
        self.cors_origin: bytes | None = None  # an allowed Origin, echoed on the response (cors)
        # The tightest limit's index and decision, for the RateLimit response headers (None: no
        # decision to show); the first limit not decided yet and the decision waited for (a Wait).
        self.limit: Decision | None = None
        self.limit_index = 0
        self.limit_next = 0
        self.limit_pending: Pending | None = None
        # The cache filter's outcome: its session (a lookup that goes on to the app, or an unsafe
        # method's invalidation), or only a result when there is none (HIT, BYPASS).
        self.cache: CacheSession | None = None
        self.cache_result = ""

"""The per-request context that filters share, compiled with the hot path.

The exchange (compiled) makes one :class:`RequestContext` for every request on a route with
filters, and filters read and write its fields on every request: as a native class its creation
is one small allocation and its fields are struct slots, for the compiled exchange and for the
compiled fast paths of filters (:mod:`sidegate.filters.fastpath`) alike. Interpreted filters use it
like any object. It lives apart from :mod:`sidegate.filters.base`, which stays interpreted (its
config dataclasses are read by pydantic), and is re-exported there.
"""

from __future__ import annotations

from typing import Any


class RequestContext:
    """Per-request state that filters share; one per request, created by the proxy."""

    def __init__(self, route_name: str, host: bytes = b"") -> None:
        self.route_name = route_name
        self.host = host  # the Host header as the client sent it (port included)
        self.status = 0
        self.consumer = ""  # set by an authentication filter: who called...
        self.tenant = ""  # ...and for which tenant
        self.upstream_lines = b""  # header lines a filter adds to the upstream request
        self.vars: dict[str, Any] = {}
        # The compiled rate_limit path's tightest limit and decision (for its response headers):
        # fields, not ``vars`` entries, since they are written and read on every request.
        self.limit: object = None
        self.limit_index = 0

"""The filter interface: the extension point of the request path.

A filter is configured per route (``filters: {name: config}``), compiled once at config load
into an instance shared by every request on that route, and called at the phases it implements.
Only overridden hooks are called: the compiled route keeps, per phase, the tuple of filters that
do work there, so an unused phase costs nothing.

Phase chart (see docs/architecture.md)::

    head parsed -> route matched -> on_request (in chain order; the first answer wins)
                -> upstream request ... upstream response head
                -> on_response (in chain order; may edit the head)
                -> body streamed -> on_log (after the last byte, or on failure)
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from sidegate.http.messages import LocalResponse, RequestHead, ResponseHead


class FilterConfig(BaseModel):
    """Base of every filter's config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestContext:
    """Per-request state that filters share; one per request, created by the proxy."""

    __slots__ = ("route_name", "status", "vars")

    def __init__(self, route_name: str) -> None:
        self.route_name = route_name
        self.status = 0
        self.vars: dict[str, Any] = {}


class Filter:
    """Base class of filters. Subclasses set ``name`` and ``config_model`` and override hooks."""

    name: ClassVar[str] = ""
    config_model: ClassVar[type[FilterConfig]] = FilterConfig

    def __init__(self, config: FilterConfig) -> None:
        self.config = config

    def on_request(self, request: RequestHead, ctx: RequestContext) -> LocalResponse | None:
        """Called after routing, before the upstream is chosen.

        Return a :class:`LocalResponse` to answer the client without calling the upstream (the
        remaining filters' ``on_request`` are skipped); return None to go on.
        """
        return None

    def on_response(self, request: RequestHead, response: ResponseHead, ctx: RequestContext) -> None:
        """Called with the upstream's response head before it is sent; may edit ``response.headers``."""

    def on_log(self, request: RequestHead, ctx: RequestContext) -> None:
        """Called once the exchange is over (completed, answered locally, or failed)."""

    @classmethod
    def implements(cls, hook: str) -> bool:
        """True when this filter overrides ``hook`` (so the compiled chain should call it)."""
        return getattr(cls, hook) is not getattr(Filter, hook)

"""The phases a filter may act at, as the request loop calls them: the hooks and their answers.

Phase chart (see docs/architecture.md)::

    head parsed -> route matched -> on_request (in chain order; the first answer wins;
                                            a Wait parks the request, then the chain goes on)
                -> upstream request ... upstream response head
                -> on_response (in chain order; may edit the head, or replace the response)
                -> body streamed through on_response_body -> on_response_end (clean end only)
                -> on_log (after the last byte, or on failure; always once)
    upstream failed before any response byte -> on_upstream_failure (may answer instead)

This module is the request loop's side of the filter interface, apart from
:mod:`sidegate.filters.base` (the config side: config classes, ``bind`` and the services a filter
gets at config load). It imports nothing from the config, so that the compiled route
(:class:`sidegate.config.snapshot.Route`) can name the type of its filters without an import
circle between the snapshot and the filters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from sidegate.filters.context import RequestContext
from sidegate.http.messages import LocalResponse, ReadyResponse, RequestHead, ResponseHead

__all__ = ["Answer", "FilterHooks", "Wait"]


@dataclass(frozen=True, slots=True)
class Wait:
    """An ``on_request`` answer: park the request until ``until`` is done (or ``timeout`` seconds
    pass), then call the same filter's ``on_request`` again and go on with the chain."""

    until: Awaitable[object]
    timeout: float


#: What ``on_request`` may answer: a response made here, a stored one, or a wait.
Answer = LocalResponse | ReadyResponse


class FilterHooks:
    """The hooks of a filter, each a no-op here; a filter overrides the ones it needs.

    Only overridden hooks are called: the compiled route keeps, per phase, the tuple of filters
    that implement it (:meth:`implements`), so an unused phase costs nothing. One instance serves
    every request of its route: per-request state lives in the :class:`RequestContext`.
    """

    name: ClassVar[str] = ""
    #: The response flag (access log, explain) of an answer this filter gave, by status; a status
    #: not listed is flagged with the filter's name.
    answer_flags: ClassVar[Mapping[int, str]] = {}

    def on_request(self, request: RequestHead, ctx: RequestContext) -> Answer | Wait | None:
        """Called after routing, before the upstream is chosen.

        Return a :class:`LocalResponse` or :class:`ReadyResponse` to answer the client without
        calling the upstream (the remaining filters' ``on_request`` are skipped); a :class:`Wait`
        to park the request and be asked again; None to go on. May edit ``request.headers``:
        the upstream request is built after the chain.
        """
        return None

    def on_response(self, request: RequestHead, response: ResponseHead, ctx: RequestContext) -> Answer | None:
        """Called with the upstream's response head before it is sent; may edit ``response.headers``.

        Return an answer to send it instead of the upstream's response: the upstream body is then
        read and dropped, the later filters' hooks are not called for it, and the answer goes out
        when the upstream response ends.
        """
        return None

    def on_response_body(self, data: bytes, ctx: RequestContext) -> None:
        """Called with each piece of the upstream response body as it goes to the client."""

    def on_response_end(self, ctx: RequestContext) -> None:
        """Called when the upstream response ended cleanly (every body byte seen)."""

    def on_upstream_failure(self, request: RequestHead, kind: str, ctx: RequestContext) -> Answer | None:
        """Called when the upstream failed before any response byte went out (``kind``: refused,
        timeout, reset...). Return an answer to send it instead of the 502/503/504."""
        return None

    def on_log(self, request: RequestHead, ctx: RequestContext) -> None:
        """Called once the exchange is over (completed, answered locally, or failed)."""

    def response_flag(self, status: int) -> str:
        """Why a request this filter answered ended as it did (read only when logged or explained)."""
        flag = self.answer_flags.get(status)
        return self.name if flag is None else flag

    def explain(self, ctx: RequestContext) -> str:
        """What this filter decided for a finished request, for ``GET /explain`` ("" = nothing to
        add). Read long after the request: only ``ctx`` is left."""
        return ""

    @classmethod
    def implements(cls, hook: str) -> bool:
        """True when this filter overrides ``hook`` (so the compiled chain should call it)."""
        return getattr(cls, hook) is not getattr(FilterHooks, hook)

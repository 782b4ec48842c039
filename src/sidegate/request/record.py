"""L4: the one record of a request: what happened to it, read by the metrics, the access log,
tracing and explain alike (:mod:`sidegate.request.outcome`) and by nothing else.

The exchange makes the record when the request arrives and writes its facts (why it ended, the
filter that answered, failed upstream tries, byte counts, timings) straight into it; at the end
:meth:`RequestRecord.seal` adds the final status and what the readers need of the request and its
route. The proxy keeps the last sealed records in a ring for explain. A record keeps only a few
references to what already exists: keeping whole exchanges (heads, header lists, buffers) for
2,048 requests cost more memory traffic than all of the access log (the Python work of a request
ran ~15 % slower), so the request's head itself is kept only when no route took it (the router
explains why with it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidegate.filters.context import RequestContext
    from sidegate.http.request_head import ParsedRequest
    from sidegate.observe.trace_context import TraceContext
    from sidegate.request.plan import RoutePlan
    from sidegate.request.view import View
    from sidegate.upstream.pool import EndpointPool


class RequestRecord:
    """What became of one request (see the module's docstring)."""

    # Set by seal(), which every record passes before anything reads it (not before: one
    # store each per request instead of two).
    status: int
    route: RoutePlan | None
    ctx: RequestContext | None
    pool: EndpointPool | None
    method: bytes
    host: bytes
    path: bytes
    version: bytes
    client: str
    peer: str

    def __init__(
        self, request_id: bytes, client_id: bool, trace: TraceContext | None, started_at: float
    ) -> None:
        self.request_id = request_id
        self.client_id = client_id  # the id came from the client (escaped when logged)
        self.trace = trace  # the sampled trace context, None when tracing is off
        self.started_at = started_at
        self.upstream_at = 0.0  # when the upstream request was started (0: never)
        self.response_at = 0.0  # when the upstream response head arrived
        self.ended_at = 0.0
        self.flag = ""  # why it ended as it did, when not simply answered by the app
        self.answered_by = -1  # index in the route's on_request chain of the filter that answered
        self.tries: list[tuple[str, str]] | None = None  # failed upstream attempts: (endpoint, why)
        self.bytes_in = 0  # request body bytes from the client
        self.bytes_out = 0  # response body bytes to the client
        self.view: View | None = None  # only when no route took the request (explain's routing)
        self.unrouted: ParsedRequest | None = None

    def seal(
        self,
        request: ParsedRequest,
        status: int,
        *,
        route: RoutePlan | None,
        ctx: RequestContext | None,
        pool: EndpointPool | None,
        view: View,
        ended_at: float,
    ) -> None:
        """The request is over: its final status and what the readers need of it."""
        self.status = status
        self.ended_at = ended_at
        self.route = route
        self.ctx = ctx
        self.pool = pool
        self.method = request.method
        self.host = request.host
        self.path = request.path
        self.version = request.version
        self.client = request.client_ip
        self.peer = request.peer_ip
        if route is None:
            self.view = view
            self.unrouted = request

    def add_try(self, endpoint: str, why: str) -> None:
        """A failed upstream attempt."""
        tries = self.tries
        if tries is None:
            self.tries = [(endpoint, why)]
        else:
            tries.append((endpoint, why))

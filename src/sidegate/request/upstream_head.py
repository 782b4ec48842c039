"""The head Sidegate sends upstream for a request: the one builder every upstream request uses.

Proxied requests and background revalidations alike go out with the route's rewrite and header
edits, the forwarding headers, the identity headers of an authenticated consumer, the request id
and the trace context, framed for HTTP/1.1. Pure: bytes in, bytes out, no sockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from sidegate.http.wire import join_head

if TYPE_CHECKING:
    from sidegate.http.request_head import ParsedRequest
    from sidegate.observe.trace_context import TraceContext
    from sidegate.request.plan import RoutePlan


_join_head: Final = join_head  # Final: a C static when compiled (a module-dict look-up otherwise)


def upstream_head(
    head: ParsedRequest,
    route: RoutePlan,
    forwarding: bytes,
    *,
    identity: bytes,
    request_id_line: bytes,
    trace: TraceContext | None,
) -> bytes:
    """The HTTP/1.1 head for ``head`` on ``route``.

    ``forwarding`` is the forwarding block for this client (``ForwardingCache.lines``), ``identity``
    the consumer's identity header lines (empty when none), ``request_id_line`` the complete
    ``X-Request-Id`` line, ``trace`` the sampled trace context (None: the caller's traceparent, if
    any, goes on as it came).
    """
    target = head.target
    if route.rewrite is not None:
        path = route.rewrite.apply(head.path)
        target = path + b"?" + head.query if head.query else path
    edits = route.request_headers
    headers = edits.apply(head.headers) if edits is not None else head.headers
    lead = [head.method, b" ", target, b" HTTP/1.1\r\nHost: ", head.host_header or b"localhost", b"\r\n"]
    parts = [forwarding]  # what follows the fields
    if edits is not None:
        parts.append(edits.block)
    if identity:
        parts.append(identity)  # identity headers of an authenticated consumer
    parts.append(request_id_line)
    if trace is not None:
        parts.append(trace.header_line())
    elif head.traceparent:  # tracing is off: the caller's trace context goes on as it came
        parts += (b"traceparent: ", head.traceparent, b"\r\n")
    if head.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif head.content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % head.content_length)
    if head.upgrade:
        parts += (b"Connection: upgrade\r\nUpgrade: ", head.upgrade, b"\r\n")
    parts.append(b"\r\n")
    return _join_head(lead, headers, parts)

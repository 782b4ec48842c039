"""L4: what became of a finished request, told three ways: a JSON access log line, a trace span,
and the decision record that ``GET /explain/{request-id}`` returns.

All three read the finished :class:`~sidegate.request.exchange.Exchange`, which keeps what they need in
plain slots (flag, answering filter, failed tries, timings, byte counts). The access line and the
span are made when a request ends, only when their feature is on; the explain record is made on
demand from the exchanges the proxy remembers (a ring), so remembering costs one list store.

Response flags (the ``flags`` field) say why a request ended as it did; empty when the app
answered normally: ``no_route``, ``body_too_large``, ``client_closed``, ``upstream_<kind>`` (kind:
``connect_refused``, ``connect_timeout``, ``connect_error``, ``response_timeout``,
``idle_timeout``, ``send_timeout``, ``reset``, ``protocol_error``; ``..._mid_response`` when the
response was cut), ``client_send_timeout`` (the client took no byte for ``send_timeout``: cut),
and for answers a filter gave: ``auth_failed``, ``auth_forbidden``, ``access_denied``,
``rate_limited``, ``rate_limit_unavailable``, ``cors_preflight``, ``cors_denied``,
``direct_response``...
"""

from __future__ import annotations

import time
from json.encoder import encode_basestring_ascii as quote_ascii
from typing import TYPE_CHECKING, Any, Final

from sidegate.observe.tracing import Span

if TYPE_CHECKING:
    from sidegate.filters.context import RequestContext
    from sidegate.http.request_head import ParsedRequest
    from sidegate.observe.trace_context import TraceContext
    from sidegate.request.exchange import Exchange
    from sidegate.request.plan import RoutePlan
    from sidegate.request.proxy import View
    from sidegate.upstream.pool import EndpointPool

_MILLIS: Final = tuple(f".{n:03d}Z" for n in range(1000))
# Values that repeat (names, flags, addresses) -> their JSON; bounded, then not grown.
_SEEN_TEXT: Final[dict[str, str]] = {}
_SEEN_MAX: Final = 512


class _Stamps:
    """ISO 8601 UTC timestamps with milliseconds: one made per millisecond (requests under load
    share it), its seconds part once per second. (Instance attributes: a compiled module's
    globals are dict entries, an object's slots are not.)"""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""
        self.milli = -1
        self.stamp = ""

    def at(self, wall: float) -> str:
        milli = int(wall * 1000)
        if milli == self.milli:
            return self.stamp
        second = milli // 1000
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self.milli = milli
        self.stamp = stamp = self.prefix + _MILLIS[milli - second * 1000]
        return stamp


_STAMPS: Final = _Stamps()


def _wire(raw: bytes) -> str:
    """Bytes from the wire as a JSON string, escaped to ASCII by the json module's C encoder (one
    call); undecodable bytes replaced."""
    return quote_ascii(raw.decode("utf-8", "replace"))


def _text(text: str) -> str:
    """A name (route, consumer, tenant, flag, address) as a JSON string, remembered."""
    quoted = _SEEN_TEXT.get(text)
    return quoted if quoted is not None else _remember(_SEEN_TEXT, text, quote_ascii(text))


def _remember(table: dict[Any, str], key: object, quoted: str) -> str:
    if len(table) < _SEEN_MAX:  # bounded: past it, values are quoted each time
        table[key] = quoted
    return quoted


def response_flag(exchange: Exchange) -> str:
    """Why the request ended as it did ("" when the app answered, or a filter passed it on)."""
    return _flag(exchange.flag, exchange.answered_by, exchange.route, exchange.status)


def _flag(flag: str, answered_by: int, route: RoutePlan | None, status: int) -> str:
    if flag:
        return flag
    if answered_by >= 0 and route is not None:
        return route.on_request[answered_by].response_flag(status)
    return ""


def endpoint_of(exchange: Exchange) -> str:
    """The endpoint ("host:port") the request went to, "" when it went to none."""
    return _endpoint(exchange.pool, exchange.route, exchange.upstream_at)


def _endpoint(pool: EndpointPool | None, route: RoutePlan | None, upstream_at: float) -> str:
    if pool is None or route is None or not upstream_at:
        return ""
    return route.endpoint_stats[pool].endpoint  # made once per endpoint, not per request


def cache_status(exchange: Exchange) -> str:
    """HIT, MISS, STALE... when the route caches, else ""."""
    route, ctx = exchange.route, exchange.ctx
    if route is None or route.cache_filter is None or ctx is None:
        return ""
    return route.cache_filter.explain(ctx)


class LineMemo:
    """A route's last access line after its time, ids and durations, and what that text was made
    of. A route called the same way again (same client, method, host, path, status, sizes,
    endpoint, consumer...: a polling client, a health check, a busy endpoint) reuses the text.
    Comparing the fields costs less than hashing the request's fresh bytes to look a text up."""

    def __init__(self, route: str) -> None:
        self.route = quote_ascii(route) if route else "null"
        self.client = ""
        self.peer = ""
        self.method = b""
        self.host = b""
        self.path = b""
        self.version = b""
        self.status = -1
        self.flag = ""
        self.bytes_in = -1
        self.bytes_out = -1
        self.endpoint = ""
        self.consumer = ""
        self.tenant = ""
        self.cache = ""
        self.text = ""

    def same(
        self, exchange: Exchange, *, flag: str, endpoint: str, consumer: str, tenant: str, cache: str
    ) -> bool:
        head = exchange.head
        return (
            self.status == exchange.status
            and self.bytes_out == exchange.bytes_out
            and self.bytes_in == exchange.bytes_in
            and self.path == head.path
            and self.host == head.host
            and self.method == head.method
            and self.client == head.client_ip
            and self.peer == head.peer_ip
            and self.version == head.version
            and self.flag == flag
            and self.endpoint == endpoint
            and self.consumer == consumer
            and self.tenant == tenant
            and self.cache == cache
        )

    def remember(
        self, exchange: Exchange, *, flag: str, endpoint: str, consumer: str, tenant: str, cache: str
    ) -> str:
        head = exchange.head
        self.client, self.peer, self.method, self.host = head.client_ip, head.peer_ip, head.method, head.host
        self.path, self.version, self.status = head.path, head.version, exchange.status
        self.bytes_in, self.bytes_out, self.flag = exchange.bytes_in, exchange.bytes_out, flag
        self.endpoint, self.consumer, self.tenant, self.cache = endpoint, consumer, tenant, cache
        self.text = text = (
            f'"client":{_text(head.client_ip)},"peer":{_text(head.peer_ip)},'
            f'"method":{_wire(head.method)},"host":{_wire(head.host)},'
            f'"path":{_wire(head.path)},"protocol":{_wire(b"HTTP/" + head.version)},"route":{self.route},'
            f'"status":{exchange.status},"flags":{_text(flag)},"bytes_received":{exchange.bytes_in},'
            f'"bytes_sent":{exchange.bytes_out},"upstream":{_text(endpoint)},"consumer":{_text(consumer)},'
            f'"tenant":{_text(tenant)},"cache":{_text(cache)}}}\n'
        )
        return text


_NO_ROUTE: Final = LineMemo("")  # requests no route matched


def access_line(exchange: Exchange, wall_offset: float) -> bytes:
    """The request's access log line: one JSON object and its newline. Never holds credentials:
    no headers, no query string (API keys may travel there). Durations in microseconds.

    What changes with every request (time, ids, durations) comes first; the rest is the route's
    :class:`LineMemo` text when the request looks like the route's previous one, else made anew.
    Strings from the wire go through the json module's C encoder (ASCII out), so the line is
    ASCII and encodes with a copy."""
    route = exchange.route
    ctx = exchange.ctx
    consumer = tenant = ""
    if ctx is not None and ctx.consumer:
        consumer, tenant = ctx.consumer, ctx.tenant
    flag = response_flag(exchange)
    endpoint = endpoint_of(exchange)
    cache = cache_status(exchange)
    memo = route.log_memo if route is not None else _NO_ROUTE
    if memo.same(exchange, flag=flag, endpoint=endpoint, consumer=consumer, tenant=tenant, cache=cache):
        rest = memo.text
    else:
        rest = memo.remember(
            exchange, flag=flag, endpoint=endpoint, consumer=consumer, tenant=tenant, cache=cache
        )
    started = exchange.started_at
    ended = exchange.ended_at
    upstream_at = exchange.upstream_at
    upstream_us = str(int((ended - upstream_at) * 1e6)) if upstream_at else "null"
    request_id = exchange.request_id
    # Sidegate's own request ids are hex; a client's is escaped.
    rid = _wire(request_id)[1:-1] if exchange.head.request_id else request_id.decode()
    trace = exchange.trace
    if trace is None:
        line = (
            f'{{"time":"{_STAMPS.at(wall_offset + started)}","request_id":"{rid}","trace_id":null,'
            f'"duration_us":{int((ended - started) * 1e6)},"upstream_us":{upstream_us},{rest}'
        )
    else:
        line = (
            f'{{"time":"{_STAMPS.at(wall_offset + started)}","request_id":"{rid}",'
            f'"trace_id":"{trace.trace_id.decode()}","duration_us":{int((ended - started) * 1e6)},'
            f'"upstream_us":{upstream_us},{rest}'
        )
    return line.encode()


def rejected_line(request_id: bytes, client: str, status: int, reason: str, wall: float) -> bytes:
    """The access log line of a request the connection refused before it could be read (bad
    framing, a head too large or too slow): what little is known, flagged ``protocol_error`` (or
    ``request_timeout``), with the reason the client was told. ``client`` is the direct peer: no
    forwarding header of a request that could not be read is believed."""
    flag = "request_timeout" if status == 408 else "protocol_error"
    address = _text(client)
    line = (
        f'{{"time":"{_STAMPS.at(wall)}","request_id":"{request_id.decode()}","trace_id":null,'
        f'"client":{address},"peer":{address},"method":null,"host":null,"path":null,"protocol":null,'
        f'"route":null,"status":{status},"flags":"{flag}","reason":{quote_ascii(reason)},'
        f'"bytes_received":0,"bytes_sent":0,"duration_us":null,"upstream_us":null,"upstream":"",'
        f'"consumer":"","tenant":"","cache":""}}\n'
    )
    return line.encode()


def span_of(exchange: Exchange, wall_offset: float) -> Span:
    """The server span of a sampled request (OpenTelemetry HTTP semantic conventions)."""
    trace = exchange.trace
    assert trace is not None
    head = exchange.head
    route = exchange.route
    method = head.method.decode("latin-1")
    attributes: dict[str, str | int | float] = {
        "http.request.method": method,
        "url.path": head.path.decode("utf-8", "replace"),
        "url.scheme": "http",
        "server.address": head.host.decode("latin-1"),
        "client.address": head.client_ip,
        "network.peer.address": head.peer_ip,
        "network.protocol.version": head.version.decode("latin-1"),
        "http.response.status_code": exchange.status,
        "sidegate.request_id": exchange.request_id.decode("latin-1"),
    }
    if route is not None:
        attributes["http.route"] = route.name
    endpoint = endpoint_of(exchange)
    if endpoint:
        attributes["sidegate.upstream.endpoint"] = endpoint
    flag = response_flag(exchange)
    if flag:
        attributes["sidegate.response_flags"] = flag
    ctx = exchange.ctx
    if ctx is not None and ctx.consumer:
        attributes["sidegate.consumer"] = ctx.consumer
        attributes["sidegate.tenant"] = ctx.tenant
    return Span(
        trace_id=trace.trace_id.decode(),
        span_id=trace.span_id.decode(),
        parent_span_id=trace.parent_span_id.decode(),
        name=f"{method} {route.name}" if route is not None else method,
        start=wall_offset + exchange.started_at,
        end=wall_offset + exchange.ended_at,
        error=exchange.status >= 500 or exchange.status == 0,
        attributes=attributes,
    )


class Finished:
    """What the explain record needs of a finished request, kept in the proxy's ring in place of
    the exchange. Keeping whole exchanges kept every request's heads, header lists and buffers alive
    for 2,048 requests, and the memory traffic of that cost more than all of the access log (the
    Python work of a request ran ~15 % slower); this keeps a few references to what already exists.
    The request's head is kept only when no route took it (the router explains why with it)."""

    def __init__(self, exchange: Exchange) -> None:
        head = exchange.head
        self.request_id = exchange.request_id
        self.method = head.method
        self.host = head.host
        self.path = head.path
        self.client = head.client_ip
        self.peer = head.peer_ip
        self.status = exchange.status
        self.flag = exchange.flag
        self.answered_by = exchange.answered_by
        self.route = route = exchange.route
        self.ctx: RequestContext | None = exchange.ctx
        self.tries = exchange.tries
        self.pool = exchange.pool
        self.trace: TraceContext | None = exchange.trace
        self.started_at = exchange.started_at
        self.upstream_at = exchange.upstream_at
        self.response_at = exchange.response_at
        self.ended_at = exchange.ended_at
        self.unrouted: tuple[View, ParsedRequest] | None = (
            None if route is not None else (exchange.view, head)
        )


def explain(done: Finished, wall_offset: float) -> dict[str, Any]:
    """The decision record of a finished request: route, filters, upstream tries, timings, flag."""
    route = done.route
    ctx = done.ctx
    flag = _flag(done.flag, done.answered_by, route, done.status)
    record: dict[str, Any] = {
        "request_id": done.request_id.decode("latin-1"),
        "time": _STAMPS.at(wall_offset + done.started_at),
        "request": {
            "method": done.method.decode("latin-1"),
            "host": done.host.decode("latin-1"),
            "path": done.path.decode("utf-8", "replace"),
            "client": done.client,
            "peer": done.peer,
        },
        "status": done.status,
        "response_flags": flag,
        "summary": _summary(done, flag),
    }
    if route is None:
        record["route"] = None
        if done.unrouted is not None:
            view, head = done.unrouted
            record["routing"] = [
                {"route": name, "result": reason} for name, reason in view.router.explain(head)
            ]
    else:
        record["route"] = route.name
        record["filters"] = _filter_decisions(done, route)
        if ctx is not None and ctx.consumer:
            record["consumer"] = ctx.consumer
            record["tenant"] = ctx.tenant
        tries = [{"endpoint": ep, "result": why} for ep, why in done.tries or ()]
        if done.response_at:
            endpoint = _endpoint(done.pool, route, done.upstream_at)
            tries.append({"endpoint": endpoint, "result": f"responded {done.status}"})
        record["upstream"] = {"cluster": route.upstream, "tries": tries} if done.upstream_at else None
    record["timings_ms"] = _timings(done)
    trace = done.trace
    if trace is not None:
        record["trace"] = {
            "trace_id": trace.trace_id.decode(),
            "span_id": trace.span_id.decode(),
            "sampled": trace.sampled,
        }
    return record


def _summary(done: Finished, flag: str) -> str:
    route = done.route
    if route is None:
        return "no route matched the request; see routing for why each route did not"
    if done.answered_by >= 0:
        name = route.on_request[done.answered_by].name
        return f"route {route.name!r}: filter {name} answered {done.status} ({flag or 'served'})"
    if done.tries and flag.startswith("upstream_"):
        endpoint, why = done.tries[-1]
        return f"route {route.name!r}: upstream {route.upstream} endpoint {endpoint} failed: {why}"
    if flag:
        return f"route {route.name!r}: ended {done.status} ({flag})"
    return f"route {route.name!r}: the app answered {done.status}"


def _filter_decisions(done: Finished, route: RoutePlan) -> list[dict[str, str]]:
    ctx = done.ctx
    answered = done.answered_by
    on_request = route.on_request
    out = []
    for flt in route.route.filters:
        if flt in on_request:
            index = on_request.index(flt)
            if answered < 0 or index < answered:
                decision = "passed"
            elif index == answered:
                decision = f"answered {done.status}"
            else:
                decision = "not run"
        else:
            decision = "no request phase"
        detail = flt.explain(ctx) if ctx is not None else ""
        out.append({"filter": flt.name, "decision": decision + (f": {detail}" if detail else "")})
    return out


def _timings(done: Finished) -> dict[str, float]:
    start, end = done.started_at, done.ended_at
    out = {"total": round((end - start) * 1000, 3)}
    if done.upstream_at:
        out["before_upstream"] = round((done.upstream_at - start) * 1000, 3)
        if done.response_at:
            out["upstream_first_byte"] = round((done.response_at - done.upstream_at) * 1000, 3)
            out["response_body"] = round((end - done.response_at) * 1000, 3)
        else:
            out["upstream"] = round((end - done.upstream_at) * 1000, 3)
    return out

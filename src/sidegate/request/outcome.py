"""L4: what became of a finished request, told three ways: a JSON access log line, a trace span,
and the decision record that ``GET /explain/{request-id}`` returns.

All three read only the request's :class:`~sidegate.request.record.RequestRecord` (as do the
metrics, see :mod:`sidegate.request.recorder`). The access line and the span are made when a
request ends, only when their feature is on; the explain record is made on demand from the
records the recorder remembers (a ring), so remembering costs one list store.

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

from json.encoder import encode_basestring_ascii as quote_ascii
from typing import TYPE_CHECKING, Any, Final

from sidegate.observe.tracing import Span
from sidegate.request.access_text import STAMPS, LineMemo, name_text, wire_text

if TYPE_CHECKING:
    from sidegate.request.plan import RoutePlan
    from sidegate.request.record import RequestRecord
    from sidegate.upstream.pool import EndpointPool


def response_flag(record: RequestRecord) -> str:
    """Why the request ended as it did ("" when the app answered, or a filter passed it on)."""
    return _flag(record.flag, record.answered_by, record.route, record.status)


def _flag(flag: str, answered_by: int, route: RoutePlan | None, status: int) -> str:
    if flag:
        return flag
    if answered_by >= 0 and route is not None:
        return route.on_request[answered_by].response_flag(status)
    return ""


def endpoint_of(record: RequestRecord) -> str:
    """The endpoint ("host:port") the request went to, "" when it went to none."""
    return _endpoint(record.pool, record.route, record.upstream_at)


def _endpoint(pool: EndpointPool | None, route: RoutePlan | None, upstream_at: float) -> str:
    if pool is None or route is None or not upstream_at:
        return ""
    return route.endpoint_stats[pool].endpoint  # made once per endpoint, not per request


def cache_status(record: RequestRecord) -> str:
    """HIT, MISS, STALE... when the route caches, else ""."""
    route, ctx = record.route, record.ctx
    if route is None or route.cache_filter is None or ctx is None:
        return ""
    return route.cache_filter.explain(ctx)


_NO_ROUTE: Final = LineMemo("")  # requests no route matched


def access_line(record: RequestRecord, wall_offset: float) -> bytes:
    """The request's access log line: one JSON object and its newline. Never holds credentials:
    no headers, no query string (API keys may travel there). Durations in microseconds.

    What changes with every request (time, ids, durations) comes first; the rest is the route's
    :class:`LineMemo` text when the request looks like the route's previous one, else made anew.
    Strings from the wire go through the json module's C encoder (ASCII out), so the line is
    ASCII and encodes with a copy."""
    route = record.route
    ctx = record.ctx
    consumer = tenant = ""
    if ctx is not None and ctx.consumer:
        consumer, tenant = ctx.consumer, ctx.tenant
    flag = response_flag(record)
    endpoint = endpoint_of(record)
    cache = cache_status(record)
    memo = route.log_memo if route is not None else _NO_ROUTE
    rest = memo.text_for(
        client=record.client,
        peer=record.peer,
        method=record.method,
        host=record.host,
        path=record.path,
        version=record.version,
        status=record.status,
        bytes_in=record.bytes_in,
        bytes_out=record.bytes_out,
        flag=flag,
        endpoint=endpoint,
        consumer=consumer,
        tenant=tenant,
        cache=cache,
    )
    started = record.started_at
    ended = record.ended_at
    upstream_at = record.upstream_at
    upstream_us = str(int((ended - upstream_at) * 1e6)) if upstream_at else "null"
    request_id = record.request_id
    # Sidegate's own request ids are hex; a client's is escaped.
    rid = wire_text(request_id)[1:-1] if record.client_id else request_id.decode()
    trace = record.trace
    if trace is None:
        line = (
            f'{{"time":"{STAMPS.at(wall_offset + started)}","request_id":"{rid}","trace_id":null,'
            f'"duration_us":{int((ended - started) * 1e6)},"upstream_us":{upstream_us},{rest}'
        )
    else:
        line = (
            f'{{"time":"{STAMPS.at(wall_offset + started)}","request_id":"{rid}",'
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
    address = name_text(client)
    line = (
        f'{{"time":"{STAMPS.at(wall)}","request_id":"{request_id.decode()}","trace_id":null,'
        f'"client":{address},"peer":{address},"method":null,"host":null,"path":null,"protocol":null,'
        f'"route":null,"status":{status},"flags":"{flag}","reason":{quote_ascii(reason)},'
        f'"bytes_received":0,"bytes_sent":0,"duration_us":null,"upstream_us":null,"upstream":"",'
        f'"consumer":"","tenant":"","cache":""}}\n'
    )
    return line.encode()


def span_of(record: RequestRecord, wall_offset: float) -> Span:
    """The server span of a sampled request (OpenTelemetry HTTP semantic conventions)."""
    trace = record.trace
    assert trace is not None
    route = record.route
    method = record.method.decode("latin-1")
    attributes: dict[str, str | int | float] = {
        "http.request.method": method,
        "url.path": record.path.decode("utf-8", "replace"),
        "url.scheme": "http",
        "server.address": record.host.decode("latin-1"),
        "client.address": record.client,
        "network.peer.address": record.peer,
        "network.protocol.version": record.version.decode("latin-1"),
        "http.response.status_code": record.status,
        "sidegate.request_id": record.request_id.decode("latin-1"),
    }
    if route is not None:
        attributes["http.route"] = route.name
    endpoint = endpoint_of(record)
    if endpoint:
        attributes["sidegate.upstream.endpoint"] = endpoint
    flag = response_flag(record)
    if flag:
        attributes["sidegate.response_flags"] = flag
    ctx = record.ctx
    if ctx is not None and ctx.consumer:
        attributes["sidegate.consumer"] = ctx.consumer
        attributes["sidegate.tenant"] = ctx.tenant
    return Span(
        trace_id=trace.trace_id.decode(),
        span_id=trace.span_id.decode(),
        parent_span_id=trace.parent_span_id.decode(),
        name=f"{method} {route.name}" if route is not None else method,
        start=wall_offset + record.started_at,
        end=wall_offset + record.ended_at,
        error=record.status >= 500 or record.status == 0,
        attributes=attributes,
    )


def explain(record: RequestRecord, wall_offset: float) -> dict[str, Any]:
    """The decision record of a finished request: route, filters, upstream tries, timings, flag."""
    route = record.route
    ctx = record.ctx
    flag = _flag(record.flag, record.answered_by, route, record.status)
    out: dict[str, Any] = {
        "request_id": record.request_id.decode("latin-1"),
        "time": STAMPS.at(wall_offset + record.started_at),
        "request": {
            "method": record.method.decode("latin-1"),
            "host": record.host.decode("latin-1"),
            "path": record.path.decode("utf-8", "replace"),
            "client": record.client,
            "peer": record.peer,
        },
        "status": record.status,
        "response_flags": flag,
        "summary": _summary(record, flag),
    }
    if route is None:
        out["route"] = None
        view, head = record.view, record.unrouted
        if view is not None and head is not None:
            out["routing"] = [{"route": name, "result": reason} for name, reason in view.router.explain(head)]
    else:
        out["route"] = route.name
        out["filters"] = _filter_decisions(record, route)
        if ctx is not None and ctx.consumer:
            out["consumer"] = ctx.consumer
            out["tenant"] = ctx.tenant
        tries = [{"endpoint": ep, "result": why} for ep, why in record.tries or ()]
        if record.response_at:
            endpoint = _endpoint(record.pool, route, record.upstream_at)
            tries.append({"endpoint": endpoint, "result": f"responded {record.status}"})
        out["upstream"] = {"cluster": route.upstream, "tries": tries} if record.upstream_at else None
    out["timings_ms"] = _timings(record)
    trace = record.trace
    if trace is not None:
        out["trace"] = {
            "trace_id": trace.trace_id.decode(),
            "span_id": trace.span_id.decode(),
            "sampled": trace.sampled,
        }
    return out


def _summary(record: RequestRecord, flag: str) -> str:
    route = record.route
    if route is None:
        return "no route matched the request; see routing for why each route did not"
    if record.answered_by >= 0:
        name = route.on_request[record.answered_by].name
        return f"route {route.name!r}: filter {name} answered {record.status} ({flag or 'served'})"
    if record.tries and flag.startswith("upstream_"):
        endpoint, why = record.tries[-1]
        return f"route {route.name!r}: upstream {route.upstream} endpoint {endpoint} failed: {why}"
    if flag:
        return f"route {route.name!r}: ended {record.status} ({flag})"
    return f"route {route.name!r}: the app answered {record.status}"


def _filter_decisions(record: RequestRecord, route: RoutePlan) -> list[dict[str, str]]:
    ctx = record.ctx
    answered = record.answered_by
    on_request = route.on_request
    out = []
    for flt in route.route.filters:
        if flt in on_request:
            index = on_request.index(flt)
            if answered < 0 or index < answered:
                decision = "passed"
            elif index == answered:
                decision = f"answered {record.status}"
            else:
                decision = "not run"
        else:
            decision = "no request phase"
        detail = flt.explain(ctx) if ctx is not None else ""
        out.append({"filter": flt.name, "decision": decision + (f": {detail}" if detail else "")})
    return out


def _timings(record: RequestRecord) -> dict[str, float]:
    start, end = record.started_at, record.ended_at
    out = {"total": round((end - start) * 1000, 3)}
    if record.upstream_at:
        out["before_upstream"] = round((record.upstream_at - start) * 1000, 3)
        if record.response_at:
            out["upstream_first_byte"] = round((record.response_at - record.upstream_at) * 1000, 3)
            out["response_body"] = round((end - record.response_at) * 1000, 3)
        else:
            out["upstream"] = round((end - record.upstream_at) * 1000, 3)
    return out

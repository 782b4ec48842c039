"""The admin API's request history: ``GET /explain/{request-id}`` and ``GET /traces``.

    curl localhost:9901/explain/5f2c9a0100000007     # why did this request end as it did?
    curl 'localhost:9901/traces?trace_id=4bf92f3577b34da6a3ce929d0e0e4736'
    curl 'localhost:9901/traces?limit=20'            # the newest sampled spans

Every response carries ``X-Request-Id``; explain finds the request among the last
``observability.explain.recent`` of each worker (404 once it has been pushed out). Traces are the
last ``observability.tracing.recent`` sampled spans.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sidegate.admin.app import AdminRequest, AdminResponse, Handler, error_response

#: Finds the decision record of a recent request by its id (None: not among the recent ones).
ExplainLookup = Callable[[str], Awaitable[dict[str, Any] | None]]
#: The recent sampled spans (of one trace id, or all when empty), at most ``limit``.
TraceLookup = Callable[[str, int], Awaitable[dict[str, Any]]]

_MAX_ID = 200  # X-Request-Id values Sidegate keeps are 1-200 visible characters


def explain_routes(explain: ExplainLookup, traces: TraceLookup) -> dict[tuple[str, str], Handler]:
    """Admin routes over a backend's ``explain(request_id)`` and ``traces(trace_id, limit)``."""

    async def by_path(request: AdminRequest) -> AdminResponse:
        return await _explain(request.path.rpartition("/")[2])

    async def by_query(request: AdminRequest) -> AdminResponse:
        ids = request.query.get("id") or request.query.get("request_id")
        if not ids:
            return error_response(
                400, "give the request id: /explain/{request-id} (the X-Request-Id a response carried)"
            )
        return await _explain(ids[0])

    async def _explain(request_id: str) -> AdminResponse:
        if not request_id or len(request_id) > _MAX_ID or not request_id.isprintable():
            return error_response(400, "a request id is 1-200 visible characters (a response's X-Request-Id)")
        record = await explain(request_id)
        if record is None:
            return error_response(
                404,
                f"no recent request with id {request_id!r}: it is older than the last "
                "observability.explain.recent requests, or never came through this pod",
            )
        return AdminResponse.json(200, record, pretty=True)

    async def recent_traces(request: AdminRequest) -> AdminResponse:
        trace_id = (request.query.get("trace_id") or [""])[0].lower()
        if trace_id and (len(trace_id) != 32 or any(c not in "0123456789abcdef" for c in trace_id)):
            return error_response(400, "trace_id is 32 hex digits, as in a traceparent header")
        limit_text = (request.query.get("limit") or ["100"])[0]
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 10_000:
            return error_response(400, "limit is a whole number from 1 to 10000")
        return AdminResponse.json(200, await traces(trace_id, int(limit_text)), pretty=True)

    return {
        ("GET", "/explain/*"): by_path,
        ("GET", "/explain"): by_query,
        ("GET", "/traces"): recent_traces,
    }

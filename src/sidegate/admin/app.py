"""The admin API's vocabulary and endpoints: requests, responses, the backend and the route table.

:class:`AdminApp` is a plain dict of ``(method, path) -> handler``; features add endpoints with
:meth:`AdminApp.add`. ``HEAD`` falls back to the ``GET`` handler and drops the body; a known path
with another method is a 405 with ``Allow``; an unknown path is a 404 that lists the endpoints.
:func:`default_routes` wires the probes, metrics, config dump and reload to an :class:`AdminBackend`.
The connection handling is in :mod:`sidegate.admin.server`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

from sidegate.observe.prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE
from sidegate.observe.prometheus import OPENMETRICS_CONTENT_TYPE, wants_openmetrics

log = logging.getLogger("sidegate.admin")


def http_date() -> str:
    """The current time as an HTTP date (RFC 9110 section 5.6.7), without importing ``email``."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())


class AdminBackend(Protocol):
    """What the admin server needs from the runtime.

    ``readiness()`` is ``(ready, reason)``; ``metrics_text(openmetrics)`` is the exposition
    (Prometheus text 0.0.4, or OpenMetrics 1.0 when ``openmetrics``) merged across workers, with
    the app's own metrics when configured; ``config_dump()`` is the running config (secrets
    redacted) with its version and the last reload error, if any; ``reload()`` answers
    ``(ok, message)`` and on failure the old config keeps serving.
    """

    def is_live(self) -> bool: ...
    def readiness(self) -> tuple[bool, str]: ...
    def metrics_text(self, openmetrics: bool = False) -> bytes | Awaitable[bytes]: ...
    def config_dump(self) -> dict[str, Any]: ...
    async def reload(self) -> tuple[bool, str]: ...


@dataclass(frozen=True, slots=True)
class AdminRequest:
    """One complete request as a handler sees it (path and query undecoded, body whole)."""

    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    peer: str = ""  # the client's address ("" when unknown): for loopback-only endpoints


@dataclass(frozen=True, slots=True)
class AdminResponse:
    """A complete response; the server adds Date, Content-Length and Connection."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(
        cls, status: int, obj: Any, *, pretty: bool = False, headers: tuple[tuple[str, str], ...] = ()
    ) -> AdminResponse:
        """A JSON response; values JSON cannot encode are written with ``str()``."""
        text = json.dumps(obj, indent=2 if pretty else None, default=str)
        return cls(status, (text + "\n").encode(), "application/json", headers)


Handler = Callable[[AdminRequest], AdminResponse | Awaitable[AdminResponse]]
Routes = Mapping[tuple[str, str], Handler]
#: Runs before dispatch: None lets the request through, a response refuses it (e.g. a 401).
Guard = Callable[[AdminRequest], AdminResponse | None]


# Stable error words for clients to match on (Python's reason phrases change between versions).
_ERRORS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "content_too_large",
    414: "uri_too_long",
    431: "request_header_fields_too_large",
    500: "internal_error",
}


def error_response(status: int, reason: str, **extra: Any) -> AdminResponse:
    """``{"error": "<word>", "reason": ...}`` with the given status (``not_found``, ``bad_request``...)."""
    word = _ERRORS.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    return AdminResponse.json(status, {"error": word, "reason": reason, **extra})


class AdminApp:
    """The route table and dispatch rules (guard, HEAD fallback, 404, 405, 500)."""

    def __init__(self, routes: Routes | None = None, guard: Guard | None = None) -> None:
        self.routes: dict[tuple[str, str], Handler] = dict(routes or {})
        self.guard = guard

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method path`` with ``handler`` (replacing any previous one)."""
        self.routes[(method.upper(), path)] = handler

    def endpoints(self) -> list[str]:
        return sorted(f"{m} {p}" for m, p in self.routes)

    def _template(self, path: str) -> str:
        """The route key of ``path``: itself, or ``/a/*`` when only a ``/a/*`` route (one that
        takes the rest of the path, like ``/explain/{request-id}``) serves it."""
        if any(p == path for _, p in self.routes):
            return path
        head, sep, rest = path.rpartition("/")
        if sep and rest and any(p == head + "/*" for _, p in self.routes):
            return head + "/*"
        return path

    async def handle(self, request: AdminRequest) -> AdminResponse:
        """Answer one request; never raises."""
        if self.guard is not None:
            try:
                refused = self.guard(request)
            except Exception as exc:  # a guard that fails refuses: never serve unchecked
                log.exception("admin guard for %s %s failed", request.method, request.path)
                return error_response(500, f"{type(exc).__name__}: {exc}")
            if refused is not None:
                return refused
        path = self._template(request.path)
        handler = self.routes.get((request.method, path))
        if handler is None and request.method == "HEAD":
            handler = self.routes.get(("GET", path))
        if handler is None:
            allowed = {m for m, p in self.routes if p == path}
            if not allowed:
                return error_response(
                    404, f"no endpoint {request.path} on this listener", endpoints=self.endpoints()
                )
            if "GET" in allowed:
                allowed.add("HEAD")
            allow = ", ".join(sorted(allowed))
            resp = error_response(405, f"{request.method} not allowed on {request.path}", allowed=allow)
            return AdminResponse(resp.status, resp.body, resp.content_type, (("Allow", allow),))
        try:
            result = handler(request)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as exc:
            log.exception("admin handler for %s %s failed", request.method, request.path)
            return error_response(500, f"{type(exc).__name__}: {exc}")


def default_routes(backend: AdminBackend) -> dict[tuple[str, str], Handler]:
    """The built-in endpoints: live, ready, metrics, config_dump, reload."""
    reload_lock = asyncio.Lock()  # one reload at a time, whoever asks

    def live(_: AdminRequest) -> AdminResponse:
        if backend.is_live():
            return AdminResponse.json(200, {"status": "live"})
        return AdminResponse.json(503, {"status": "not_live"})

    def ready(_: AdminRequest) -> AdminResponse:
        ok, reason = backend.readiness()
        return AdminResponse.json(
            200 if ok else 503, {"status": "ready" if ok else "not_ready", "reason": reason}
        )

    async def metrics(request: AdminRequest) -> AdminResponse:
        accept = b", ".join(v for n, v in request.headers if n.lower() == b"accept")
        openmetrics = wants_openmetrics(accept.decode("latin-1"))
        # A supervisor gathers its workers' numbers, and the app's are fetched: awaitable.
        text = backend.metrics_text(openmetrics)
        if inspect.isawaitable(text):
            text = await text
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else METRICS_CONTENT_TYPE
        return AdminResponse(200, text, content_type, (("Vary", "Accept"),))

    def config_dump(_: AdminRequest) -> AdminResponse:
        return AdminResponse.json(200, backend.config_dump(), pretty=True)

    async def reload(_: AdminRequest) -> AdminResponse:
        async with reload_lock:
            ok, message = await backend.reload()
        if not ok:
            return AdminResponse.json(400, {"status": "rejected", "error": message})
        body: dict[str, Any] = {"status": "reloaded", "message": message}
        version = backend.config_dump().get("version")
        if version is not None:
            body["version"] = version
        return AdminResponse.json(200, body)

    return {
        ("GET", "/live"): live,
        ("GET", "/ready"): ready,
        ("GET", "/metrics"): metrics,
        ("GET", "/config_dump"): config_dump,
        ("POST", "/reload"): reload,
    }

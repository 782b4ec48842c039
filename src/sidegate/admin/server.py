"""The admin listener: a small, strict HTTP/1.1 server for probes, Prometheus and operators.

Theory of operation
-------------------
Each connection is an :class:`asyncio.Protocol` that feeds bytes to ``httptools``. Parser callbacks
collect one request at a time into an :class:`AdminRequest` and append it to a per-connection
queue; one worker task per busy connection answers the queue in order (handlers may be sync or
async), so pipelined requests get their responses in the order they were sent. The worker exits
when the queue is empty; the next request starts a new one.

Dispatch is a plain dict of ``(method, path) -> handler`` held by :class:`AdminApp`: features add
endpoints with :meth:`AdminApp.add` (or the ``routes`` argument of :func:`start_admin_server`).
``HEAD`` falls back to the ``GET`` handler and drops the body; a known path with another method is a
405 with ``Allow``; an unknown path is a 404 that lists the endpoints.

Robustness: every response has ``Content-Length``. Malformed bytes are a 400 with a JSON reason,
limits (head size, header count, target length, 1 MiB body) a 431/414/413, a request that does not
arrive in time a 408: each then closes, gracefully (FIN first, then drain). An idle keep-alive
connection is closed quietly. Reading pauses when many pipelined requests wait, writing waits for
the transport to drain, and a handler that raises is a 500 that keeps the connection.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NoReturn, Protocol, cast
from urllib.parse import parse_qs

import httptools

from sidegate.observe.prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger("sidegate.admin")


def http_date() -> str:
    """The current time as an HTTP date (RFC 9110 section 5.6.7), without importing ``email``."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())


class AdminBackend(Protocol):
    """What the admin server needs from the runtime.

    ``readiness()`` is ``(ready, reason)``; ``metrics_text()`` is Prometheus text, merged across
    workers; ``config_dump()`` is the running config (secrets redacted) with its version and the last
    reload error, if any; ``reload()`` answers ``(ok, message)`` and on failure the old config keeps
    serving.
    """

    def is_live(self) -> bool: ...
    def readiness(self) -> tuple[bool, str]: ...
    def metrics_text(self) -> bytes | Awaitable[bytes]: ...
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


# Stable error words for clients to match on (Python's reason phrases change between versions).
_ERRORS = {
    400: "bad_request",
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
    """The route table and dispatch rules (HEAD fallback, 404, 405, 500)."""

    def __init__(self, routes: Routes | None = None) -> None:
        self.routes: dict[tuple[str, str], Handler] = dict(routes or {})

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method path`` with ``handler`` (replacing any previous one)."""
        self.routes[(method.upper(), path)] = handler

    def endpoints(self) -> list[str]:
        return sorted(f"{m} {p}" for m, p in self.routes)

    async def handle(self, request: AdminRequest) -> AdminResponse:
        """Answer one request; never raises."""
        handler = self.routes.get((request.method, request.path))
        if handler is None and request.method == "HEAD":
            handler = self.routes.get(("GET", request.path))
        if handler is None:
            allowed = {m for m, p in self.routes if p == request.path}
            if not allowed:
                return error_response(404, f"no admin endpoint {request.path}", endpoints=self.endpoints())
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

    async def metrics(_: AdminRequest) -> AdminResponse:
        text = backend.metrics_text()  # a supervisor gathers its workers' numbers: awaitable
        if inspect.isawaitable(text):
            text = await text
        return AdminResponse(200, text, METRICS_CONTENT_TYPE)

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


@dataclass(frozen=True, slots=True)
class AdminLimits:
    """Per-connection limits of the admin listener."""

    max_body: int = 1024 * 1024
    max_head: int = 32 * 1024
    max_headers: int = 100
    max_target: int = 8 * 1024
    request_timeout: float = 10.0  # from the first byte of a request to its end
    idle_timeout: float = 60.0  # keep-alive connection with no request
    linger_timeout: float = 2.0  # after our FIN, how long to drain what the client still sends
    max_queued: int = 16  # pipelined requests waiting before reading pauses


class _RejectError(Exception):
    """Raised from a parser callback to stop parsing; the response is in ``_error``."""


class _Pending:
    """A request waiting for its answer, or an answer already decided (an error)."""

    __slots__ = ("head_only", "http10", "keep_alive", "request", "response")

    def __init__(
        self, request: AdminRequest | None, response: AdminResponse | None, keep_alive: bool, http10: bool
    ) -> None:
        self.request, self.response, self.keep_alive, self.http10 = request, response, keep_alive, http10
        self.head_only = request is not None and request.method == "HEAD"


class AdminConnection(asyncio.Protocol):
    """One admin client connection (see the module docstring)."""

    def __init__(self, app: AdminApp, limits: AdminLimits) -> None:
        self._app, self._limits = app, limits
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[_Pending] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._drained: asyncio.Future[None] | None = None
        self._reading = True  # the transport is not paused
        self._done_reading = False  # no more requests: an error, an upgrade or the client's EOF
        self._eof = False
        self._closing = False  # no more responses either
        self._error: AdminResponse | None = None
        self._in_message = False
        self._url = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._body = bytearray()
        self._keep_alive = True
        self._http10 = False

    # -- transport events ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._arm(self._limits.idle_timeout, self._on_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._cancel_timer()
        if self._worker is not None:
            self._worker.cancel()
        self._wake_writer()

    def eof_received(self) -> bool | None:
        self._eof = True
        if self._closing or (self._worker is None and not self._queue):
            return None  # nothing (more) to answer: let the transport close
        self._stop_reading()
        return True  # half-open: the worker writes what is queued, then closes

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        if self._done_reading:
            return  # lingering close, or bytes after an error: discarded
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades are not served here: answer the request (already queued), then close.
            if self._queue:
                self._queue[-1].keep_alive = False
            self._stop_reading()
        except httptools.HttpParserError as exc:
            self._fail(self._error or error_response(400, str(exc) or "malformed request"))
        self._start_worker()

    # -- parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._url.clear()
        self._headers = []
        self._head_size = 0
        self._body.clear()
        self._arm(self._limits.request_timeout, self._on_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_target:
            self._reject(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        if len(self._headers) > self._limits.max_headers or self._head_size > self._limits.max_head:
            self._reject(431, "request header fields too large")

    def on_headers_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()
        self._http10 = self._parser.get_http_version() == "1.0"
        for name, value in self._headers:
            lname = name.lower()
            if lname == b"content-length" and int(value) > self._limits.max_body:
                self._reject(413, f"body larger than {self._limits.max_body} bytes")
            if lname == b"expect" and value.lower() == b"100-continue" and not self._busy():
                assert self._transport is not None
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if len(self._body) + len(chunk) > self._limits.max_body:
            self._reject(413, f"body larger than {self._limits.max_body} bytes")
        self._body += chunk

    def on_message_complete(self) -> None:
        self._in_message = False
        self._cancel_timer()
        target = bytes(self._url)
        if target.startswith(b"/"):
            path, _, query = target.partition(b"?")
        else:  # absolute-form (or "*"): servers must accept it (RFC 9112, 3.2.2)
            try:
                url = httptools.parse_url(target)
            except httptools.HttpParserInvalidURLError:
                self._reject(400, "invalid request target")
            path, query = url.path or b"/", url.query or b""
        request = AdminRequest(
            self._parser.get_method().decode("ascii", "replace"),
            path.decode("latin-1"),
            parse_qs(query.decode("latin-1"), keep_blank_values=True),
            tuple(self._headers),
            bytes(self._body),
        )
        self._queue.append(_Pending(request, None, self._keep_alive, self._http10))
        if len(self._queue) >= self._limits.max_queued:
            self._set_reading(False)

    def _reject(self, status: int, reason: str) -> NoReturn:
        self._error = error_response(status, reason)
        raise _RejectError(reason)

    # -- answering -------------------------------------------------------------------------------

    def _busy(self) -> bool:
        return self._worker is not None or bool(self._queue)

    def _start_worker(self) -> None:
        if self._worker is None and self._queue and not self._closing:
            self._worker = self._loop.create_task(self._answer_queue())

    async def _answer_queue(self) -> None:
        try:
            while self._queue and not self._closing:
                item = self._queue.popleft()
                response = item.response or await self._app.handle(cast(AdminRequest, item.request))
                if self._drained is not None:
                    await self._drained
                if self._transport is None or self._closing:  # lost while we awaited
                    return
                self._write(response, item)
                if not item.keep_alive:
                    self._close_gracefully()
                    return
                if len(self._queue) < self._limits.max_queued // 2 and not self._done_reading:
                    self._set_reading(True)
        except Exception:  # a bug here must not leave the client hanging
            log.exception("admin connection failed")
            self._closing = True
            if self._transport is not None:
                self._transport.abort()
        finally:
            self._worker = None
        if self._closing:
            return
        if self._done_reading and not self._queue:
            self._close_gracefully()
        elif self._queue:
            self._start_worker()  # requests arrived while the last one was written
        elif not self._in_message:
            self._arm(self._limits.idle_timeout, self._on_timeout)

    def _write(self, response: AdminResponse, item: _Pending) -> None:
        assert self._transport is not None
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = ""
        lines = [
            f"HTTP/1.1 {response.status} {phrase}",
            f"Date: {http_date()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-store",
            *(f"{name}: {value}" for name, value in response.headers),
        ]
        if not item.keep_alive:
            lines.append("Connection: close")
        elif item.http10:  # HTTP/1.0 keep-alive must be confirmed
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._transport.write(head if item.head_only else head + response.body)

    # -- closing, flow control and timers --------------------------------------------------------

    def _fail(self, response: AdminResponse) -> None:
        """Answer the requests already queued, then ``response``, then close."""
        self._queue.append(_Pending(None, response, keep_alive=False, http10=False))
        self._stop_reading()

    def _stop_reading(self) -> None:
        self._done_reading = True
        self._set_reading(False)
        self._cancel_timer()

    def _close_gracefully(self) -> None:
        """Send FIN, then discard what the client still sends until it closes (or time runs out).

        Closing at once with unread bytes in the socket (the rest of a refused body, pipelined
        requests) makes the kernel send a reset that can destroy our response before the client
        reads it; hence this "lingering close" (RFC 9112, section 9.6).
        """
        assert self._transport is not None
        self._closing = self._done_reading = True
        self._cancel_timer()
        if self._eof or not self._transport.can_write_eof():
            self._transport.close()
            return
        self._transport.write_eof()
        self._set_reading(True)
        self._arm(self._limits.linger_timeout, self._transport.close)

    def _set_reading(self, on: bool) -> None:
        if self._transport is None or on == self._reading or self._transport.is_closing():
            return
        self._reading = on
        if on:
            self._transport.resume_reading()
        else:
            self._transport.pause_reading()

    def _wake_writer(self) -> None:
        if self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None

    def _arm(self, delay: float, callback: Callable[[], object]) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self._closing or self._transport is None:
            return
        if self._in_message:  # a request started and did not finish in time
            self._fail(error_response(408, "request not received in time"))
            self._start_worker()
        elif not self._busy():
            self._closing = True
            self._transport.close()  # idle keep-alive connection: nothing to say


async def start_admin_server(
    host: str,
    port: int,
    backend: AdminBackend,
    *,
    sock: socket.socket | None = None,
    routes: Routes | None = None,
    limits: AdminLimits | None = None,
) -> asyncio.Server:
    """Listen on ``host:port`` (or on ``sock``, already bound) and serve the admin API.

    ``routes`` adds or replaces endpoints on top of :func:`default_routes`. The caller owns the
    returned server: ``server.close()`` stops accepting.
    """
    app = AdminApp(default_routes(backend))
    for (method, path), handler in (routes or {}).items():
        app.add(method, path, handler)
    conn_limits = limits or AdminLimits()
    loop = asyncio.get_running_loop()

    def factory() -> AdminConnection:
        return AdminConnection(app, conn_limits)

    if sock is not None:
        return await loop.create_server(factory, sock=sock)
    return await loop.create_server(factory, host, port, reuse_address=True)

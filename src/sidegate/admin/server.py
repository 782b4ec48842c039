"""The admin listener: a small, strict HTTP/1.1 server for probes, Prometheus and operators.

Theory of operation
-------------------
Each connection is an :class:`asyncio.Protocol` that feeds bytes to ``httptools``. Parser callbacks
collect one request at a time into an :class:`AdminRequest` and append it to a per-connection
queue; one worker task per busy connection answers the queue in order (handlers may be sync or
async), so pipelined requests get their responses in the order they were sent. The worker exits
when the queue is empty; the next request starts a new one.

Dispatch (the route table, the request and response types, the backend interface) lives in
:mod:`sidegate.admin.app`; features add endpoints there or through the ``routes`` argument of
:func:`start_admin_server`.

Robustness: every response has ``Content-Length``. Malformed bytes are a 400 with a JSON reason,
limits (head size, header count, target length, 1 MiB body) a 431/414/413, a request that does not
arrive in time a 408: each then closes, gracefully (FIN first, then drain). An idle keep-alive
connection is closed quietly. Reading pauses when many pipelined requests wait, writing waits for
the transport to drain, and a handler that raises is a 500 that keeps the connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import NoReturn, cast
from urllib.parse import parse_qs

import httptools

from sidegate.admin.app import (
    AdminApp,
    AdminBackend,
    AdminRequest,
    AdminResponse,
    Guard,
    Routes,
    default_routes,
    error_response,
    http_date,
)

log = logging.getLogger("sidegate.admin")


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
        self._peer = ""

    # -- transport events ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""
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
            self._peer,
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
    guard: Guard | None = None,
) -> asyncio.Server:
    """Listen on ``host:port`` (or on ``sock``, already bound) and serve the admin API.

    ``routes`` adds or replaces endpoints on top of :func:`default_routes`; ``guard`` (e.g. the
    bearer token check of :mod:`sidegate.admin.token`) sees every request first. The caller owns
    the returned server: ``server.close()`` stops accepting.
    """
    app = AdminApp(default_routes(backend), guard)
    for (method, path), handler in (routes or {}).items():
        app.add(method, path, handler)
    return await serve_app(app, host, port, sock=sock, limits=limits)


async def serve_app(
    app: AdminApp,
    host: str,
    port: int,
    *,
    sock: socket.socket | None = None,
    limits: AdminLimits | None = None,
) -> asyncio.Server:
    """Listen on ``host:port`` (or on ``sock``) and answer with ``app``'s route table; the admin
    API and the read-only health listener (:mod:`sidegate.admin.health`) are two such tables."""
    conn_limits = limits or AdminLimits()
    loop = asyncio.get_running_loop()

    def factory() -> AdminConnection:
        return AdminConnection(app, conn_limits)

    if sock is not None:
        return await loop.create_server(factory, sock=sock)
    return await loop.create_server(factory, host, port, reuse_address=True)

"""The destination's side of an absolute-form or named egress call, streamed both ways.

Theory of operation
-------------------
:class:`UpstreamLeg` is the one upstream client's user (:class:`~sidegate.upstream.connection.
UpstreamUser`) for one call: a keep-alive connection lent by the checked address's
:class:`~sidegate.upstream.pool.EndpointPool` (or a new one), the request head written as soon as
the call is admitted, resolved and its credential ready, then each body piece as the app sends it,
and the response passed back as it arrives: head first, then body pieces. Nothing is buffered
whole, so a download, an SSE stream or a long poll goes through at the speed of the slower side:

* the destination not taking the request (its write buffer over high water) pauses reading the
  app, and the app not taking the response pauses reading the destination;
* request bytes that come before the connection is open are held (reading the app pauses past
  :data:`HOLD_LIMIT`), and the first :data:`REPLAY_LIMIT` bytes sent are kept, so a pooled
  connection the destination had closed while it sat idle (a reset before any response byte)
  is retried once on a new connection, as the inbound proxy does;
* the response is framed for the app by the inbound listener's rules
  (:mod:`sidegate.server.framing`): Content-Length kept, chunked passed as chunked to an HTTP/1.1
  app (and a close-delimited body re-chunked, so the app's connection stays open), read until
  close by an HTTP/1.0 one; HEAD, 204 and 304 end at the head; 1xx passed on (not a second
  ``100 Continue`` when Sidegate already sent one).

Deadlines are the upstream connection's: the destination's ``response`` timeout runs from the
moment the whole request is out until the response head; after that only ``idle`` applies,
refreshed by every read, as Envoy's stream idle timeout (a total-response limit would cut every
download and stream). The leg decides nothing: a failure goes to its owner
(:class:`~sidegate.egress.proxy.OutboundCall`), which tries the next checked address, answers
502/504 or, once the response head is out, cuts the app's connection.
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

from sidegate.egress.credentials import with_credential
from sidegate.egress.guard import Target
from sidegate.errors import UpstreamFailure
from sidegate.http.request_head import ParsedRequest
from sidegate.http.response_parser import ParsedResponse
from sidegate.http.wire import join_head
from sidegate.http.writer import LAST_CHUNK, chunk, header_block, status_line
from sidegate.server.framing import CHUNKED, body_framing, head_end, keep_open
from sidegate.upstream.connection import UpstreamConnection, UpstreamUser
from sidegate.upstream.pool import ConnectFailedError, EndpointPool

#: Request bytes held while the connection opens before reading the app pauses.
HOLD_LIMIT: Final = 64 * 1024
#: Request bytes kept to send again on a new connection after a pooled one turned out closed.
REPLAY_LIMIT: Final = 64 * 1024
_CHUNKED: Final = CHUNKED
_join_head: Final = join_head
_TASKS: set[asyncio.Task[None]] = set()  # connects under way (kept from the garbage collector)


def request_head(
    head: ParsedRequest,
    target: Target,
    via: bytes,
    injected: tuple[bytes, bytes] | None,
    *,
    traceparent: bytes,
    default_port: int = 80,
) -> bytes:
    """The request head in origin-form: Host is the target's authority (not the app's Host),
    the reader already dropped hop-by-hop and proxy fields, Sidegate's ``via`` is added, and
    ``injected`` (a credential's header) replaces the app's of that name. The body keeps the
    app's framing (chunked stays chunked). No X-Forwarded-For of Sidegate's own: the pod's
    addresses are not the destination's business. ``traceparent`` is the one to send (the egress
    span's when the call is traced, else the app's); ``default_port`` the scheme's (443 for TLS)."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    authority = (host if target.port == default_port else f"{host}:{target.port}").encode("latin-1")
    lead = [head.method, b" ", head.target, b" HTTP/1.1\r\nHost: ", authority, b"\r\n"]
    headers = head.headers if injected is None else with_credential(head.headers, *injected)
    trail: list[bytes] = []
    # The fields the shared reader keeps apart for the inbound side to rewrite (forwarding,
    # request id, trace context): on the way out they are the app's, and go on unchanged.
    for name, value in (
        (b"X-Forwarded-For", head.xff),
        (b"X-Forwarded-Proto", head.xfp),
        (b"X-Forwarded-Host", head.xfh),
        (b"Forwarded", head.forwarded),
        (b"X-Request-Id", head.request_id),
        (b"traceparent", traceparent),
    ):
        if value:
            trail += (name, b": ", value, b"\r\n")
    trail += (b"Via: ", head.via + b", " + via if head.via else via, b"\r\n")
    if head.chunked:
        trail.append(b"Transfer-Encoding: chunked\r\n")
    elif head.content_length is not None:
        trail.append(b"Content-Length: %d\r\n" % head.content_length)
    elif head.method in (b"POST", b"PUT", b"PATCH"):
        trail.append(b"Content-Length: 0\r\n")
    trail.append(b"\r\n")
    return _join_head(lead, headers, trail)


class LegOwner(Protocol):
    """What the leg tells the call it belongs to (:class:`~sidegate.egress.proxy.OutboundCall`)."""

    def leg_failed(self, failure: UpstreamFailure) -> None: ...
    def leg_done(self, keep_alive: bool) -> None: ...


class AppSide(Protocol):
    """The app's connection, as the leg writes to it (the egress listener's connection)."""

    def write(self, data: bytes) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class LegSettings:
    """How one call's leg behaves: the request it answers and the destination's deadlines."""

    def __init__(
        self,
        *,
        head_request: bool,
        version: bytes,
        keep_alive: bool,
        chunked: bool,
        continued: bool,
        connect_timeout: float,
        response_timeout: float,
        idle_timeout: float,
        request_id: bytes,
    ) -> None:
        self.head_request = head_request  # a HEAD: the response ends at its head
        self.version = version  # the app's HTTP version (1.0: no 1xx, no chunked)
        self.keep_alive = keep_alive  # the app asked to keep its connection open
        self.chunked = chunked  # the request body is chunked (and sent on chunked)
        self.continued = continued  # Sidegate answered the app's Expect: 100-continue itself
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.idle_timeout = idle_timeout
        self.request_id_line = b"X-Request-Id: " + request_id + b"\r\n"


class UpstreamLeg(UpstreamUser):
    """One call's request to the destination and its response to the app (see the module)."""

    def __init__(
        self,
        owner: LegOwner,
        app: AppSide,
        settings: LegSettings,
        head: bytes,
        *,
        held: list[bytes],
        done: bool,
    ) -> None:
        self.owner = owner
        self.app = app
        self.settings = settings
        self.pool: EndpointPool | None = None
        self.conn: UpstreamConnection | None = None
        self.pending: list[bytes] = [head]
        self.pending_size = len(head)
        self.replay: list[bytes] | None = []  # what was sent, while it stays under REPLAY_LIMIT
        self.replay_size = 0
        self.retried = False
        self.request_done = False
        self.sent = False  # a byte of the request went out on the current connection
        self.dropped = False  # the call is over: events are ignored
        self.app_full = False  # the app is not taking the response
        self.head_sent = False  # the response head went to the app
        self.status = 0
        self.bytes_out = 0  # response body bytes to the app
        self.framing = 0
        self.keep = False  # the app's connection may stay open after this response
        self.upstream_keep_alive = False
        self.cork: list[bytes] | None = None
        for data in held:
            self.send_body(data)
        if done:
            self.request_end()

    # -- the request ---------------------------------------------------------------------------

    def start(self, pool: EndpointPool) -> None:
        """Send the request to ``pool``'s address (again to the next one, when this one could
        not be connected to: nothing was sent, the held bytes are all still here)."""
        self.pool = pool
        conn = pool.acquire()
        if conn is not None:
            self._attach(conn)
            return
        task = pool.loop.create_task(self._open(pool))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    async def _open(self, pool: EndpointPool) -> None:
        try:
            conn = await pool.connect(self.settings.connect_timeout)
        except ConnectFailedError as failed:
            if not self.dropped:
                self.owner.leg_failed(failed.failure)
            return
        if self.dropped:
            pool.release(conn)  # nothing was written on it: still clean
            return
        self._attach(conn)

    def _attach(self, conn: UpstreamConnection) -> None:
        settings = self.settings
        self.conn = conn
        conn.attach(
            self,
            settings.head_request,
            settings.response_timeout,
            settings.idle_timeout,
            self.request_done,
            send=settings.idle_timeout,
        )
        if self.app_full:
            conn.pause_reading()
        pending, self.pending = self.pending, []
        over = self.pending_size > HOLD_LIMIT
        self.pending_size = 0
        self._write(pending[0] if len(pending) == 1 else b"".join(pending))
        if over:
            self.app.resume_reading()

    def send_body(self, data: bytes) -> None:
        """A piece of the request body, as the app sent it (de-framed)."""
        if self.settings.chunked:
            data = chunk(data)
        self._send(data)

    def request_end(self) -> None:
        self.request_done = True
        if self.settings.chunked:
            self._send(LAST_CHUNK)
        conn = self.conn
        if conn is not None:
            conn.request_sent()

    def _send(self, data: bytes) -> None:
        if self.conn is not None:
            self._write(data)
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > HOLD_LIMIT:
            self.app.pause_reading()  # resumed once the connection takes what is held

    def _write(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        replay = self.replay
        if replay is not None:
            self.replay_size += len(data)
            if self.replay_size > REPLAY_LIMIT:
                self.replay = None  # too much to keep: a failure from here on is final
            else:
                replay.append(data)
        self.sent = True
        conn.send(data)

    def app_writable(self, writable: bool) -> None:
        """The app's socket buffer crossed high water (False) or drained (True)."""
        self.app_full = not writable
        conn = self.conn
        if conn is not None:
            if writable:
                conn.resume_reading()
            else:
                conn.pause_reading()

    def drop(self) -> None:
        """The call ended on the app's side (gone, refused, timed out): let the connection go."""
        if self.dropped:
            return
        self.dropped = True
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if not self.sent and self.pool is not None:
            self.pool.release(conn)
        else:
            conn.close()  # mid-request or mid-response: it cannot be reused

    # -- UpstreamUser --------------------------------------------------------------------------

    def upstream_read_begin(self) -> None:
        self.cork = []  # the response bytes of one upstream read leave in one write

    def upstream_read_end(self) -> None:
        cork, self.cork = self.cork, None
        if cork:
            self.app.write(cork[0] if len(cork) == 1 else b"".join(cork))

    def _to_app(self, data: bytes) -> None:
        cork = self.cork
        if cork is not None:
            cork.append(data)
        else:
            self.app.write(data)

    def upstream_writable(self, writable: bool) -> None:
        if writable:
            self.app.resume_reading()
        else:
            self.app.pause_reading()  # the destination is not taking the request: stop reading

    def upstream_failed(self, failure: UpstreamFailure) -> None:
        self.conn = None
        if self.dropped:
            return
        replay = self.replay
        if failure.retryable and failure.kind == "reset" and not self.retried and replay is not None:
            self.retried = True  # a pooled connection the destination had closed: once more
            self.pending, self.replay = replay, []
            self.pending_size, self.replay_size = sum(map(len, replay)), 0
            self.sent = False
            pool = self.pool
            assert pool is not None
            task = pool.loop.create_task(self._open(pool))
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)
            return
        self.upstream_read_end()  # what this read produced still goes out before the cut
        self.owner.leg_failed(failure)

    def on_informational(self, head: ParsedResponse) -> None:
        if self.dropped or self.settings.version != b"1.1":  # HTTP/1.0 has no 1xx
            return
        if head.status == 100 and self.settings.continued:
            return  # the app was told to go on already
        self._to_app(status_line(head.status, head.reason) + header_block(head.headers) + b"\r\n")

    def on_response_head(self, head: ParsedResponse) -> None:
        if self.dropped:
            return
        conn = self.conn
        if head.switching:  # the app's Upgrade was refused before the request went out
            if conn is not None:
                conn.close()
            self.conn = None
            self.owner.leg_failed(UpstreamFailure("protocol_error", 502, "101 to a request without Upgrade"))
            return
        if conn is not None:
            conn.response_started()
        settings = self.settings
        version = settings.version
        length = head.content_length_raw if head.content_length is not None else None
        method = b"HEAD" if settings.head_request else b"GET"
        self.framing = framing = body_framing(method, version, head.status, length is not None)
        self.keep = keep = keep_open(settings.keep_alive, True, framing=framing)
        self.upstream_keep_alive = head.keep_alive
        self.status = head.status
        trail: list[bytes] = []
        if head.via:
            trail += (b"Via: ", head.via, b"\r\n")
        trail.append(settings.request_id_line)
        if length is not None:
            trail += (b"Content-Length: ", length, b"\r\n")
        elif framing == _CHUNKED:
            trail.append(b"Transfer-Encoding: chunked\r\n")
        trail.append(head_end(keep, version))
        self.head_sent = True
        self._to_app(_join_head([status_line(head.status, head.reason)], head.headers, trail))

    def on_response_body(self, data: bytes) -> None:
        if self.dropped:
            return
        self.bytes_out += len(data)
        self._to_app(chunk(data) if self.framing == _CHUNKED else data)

    def on_response_end(self) -> None:
        if self.dropped:
            return
        conn, self.conn = self.conn, None
        if conn is not None:
            pool = self.pool
            if self.request_done and self.upstream_keep_alive and pool is not None:
                pool.release(conn)
            else:
                conn.close()  # the request is not all out (or the destination closes): not reusable
        if self.framing == _CHUNKED:
            self._to_app(LAST_CHUNK)
        self.upstream_read_end()
        self.dropped = True
        self.owner.leg_done(self.keep and self.request_done)

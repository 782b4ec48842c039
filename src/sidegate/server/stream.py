"""The stream interface: what a connection and the request logic say to each other.

Two vocabularies, as in hypercorn: a connection module (HTTP/1.1 inbound today; HTTP/2 and the
egress listener next) turns bytes into *request events* and calls them on a
:class:`RequestStream`; the request logic answers with *response events* on the connection's
:class:`ResponseChannel`. Neither side sees the other's bytes: the request logic never touches a
transport nor builds client framing (status line, chunking, Content-Length, keep-alive or close),
and the connection knows nothing of routes, filters or upstreams.

A new connection type implements :class:`ResponseChannel`, asks its
:class:`RequestHandler` for a stream per request head (:meth:`RequestHandler.begin`) and feeds
it the request events below, in order: ``request_body``* then ``request_end``; ``client_lost``,
``client_writable`` and ``client_stalled`` at any time; ``flush_upstream`` after each read.

mypyc traits rather than ``Protocol``s: calls through a trait are native when compiled, and the
request logic's stream also derives from the upstream layer's base class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypy_extensions import trait

if TYPE_CHECKING:
    from sidegate.http.messages import LocalResponse, ReadyResponse
    from sidegate.http.request_head import ParsedRequest
    from sidegate.server.tunnel import Tunnel, TunnelPeer


@trait
class RequestStream:
    """One request being answered: request events, called by the connection."""

    finished: bool

    def flush_upstream(self) -> None:
        """The client read that carried request bytes parsed cleanly: send what was held."""

    def request_body(self, data: bytes) -> None:
        """Request body bytes, de-framed (no chunk lines)."""
        raise NotImplementedError

    def request_end(self) -> None:
        """The request is complete."""
        raise NotImplementedError

    def client_lost(self) -> None:
        """The client went away (or its request broke) before the response was complete."""

    def client_writable(self, writable: bool) -> None:
        """The client's socket buffer crossed its high-water mark (False) or drained (True)."""

    def client_stalled(self) -> None:
        """The client took no byte of the response for ``send_timeout``: it is being cut."""


@trait
class ResponseChannel:
    """Where one connection's response events go (implemented by the connection).

    ``feeding`` is true while the connection is inside a read (held upstream bytes wait for
    ``flush_upstream``); ``writable`` is false while the client is not taking what it is sent.
    """

    feeding: bool
    writable: bool

    def informational(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """A 1xx response (dropped for clients that cannot take one)."""
        raise NotImplementedError

    def response_head(
        self, status: int, headers: list[tuple[bytes, bytes]], added: list[bytes], length: bytes | None
    ) -> None:
        """The response head: ``headers`` as they go out, ``added`` the field lines Sidegate
        adds (each ``Name: value\\r\\n``), ``length`` the Content-Length if the body has one. The
        connection frames the body and decides whether the connection stays open."""
        raise NotImplementedError

    def response_body(self, data: bytes) -> None:
        """Response body bytes, de-framed."""
        raise NotImplementedError

    def response_end(self, reusable: bool) -> None:
        """The response is complete; ``reusable``: the request was read whole, so the
        connection may carry the next one (if its framing allows)."""
        raise NotImplementedError

    def local_answer(
        self, response: LocalResponse | ReadyResponse, request_id: bytes, *, request_read: bool
    ) -> None:
        """Answer with a response made here (or a serialised one: a cache hit), and end it."""
        raise NotImplementedError

    def switch_protocols(
        self,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        upgrade: bytes,
        added: bytes,
        peer: TunnelPeer,
    ) -> Tunnel | None:
        """Send the ``101`` and join the client to ``peer``; None when the client is gone."""
        raise NotImplementedError

    def close(self) -> None:
        """Cut the connection (what is written so far still goes out)."""
        raise NotImplementedError

    def cork(self) -> None:
        """Hold writes until :meth:`uncork`, so one upstream read leaves in one write."""
        raise NotImplementedError

    def uncork(self) -> None:
        raise NotImplementedError

    def retract(self) -> bool:
        """Take back the current response if none of it has left yet; False if some has."""
        raise NotImplementedError

    def pause_reading(self) -> None:
        """Stop reading from the client (the upstream cannot take more yet)."""
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError


class RequestHandler:
    """What a connection hands each request head to (the proxy); a base class, for native calls."""

    def request_id(self) -> bytes:
        """A new request id (for answers the connection makes itself, e.g. a 400)."""
        raise NotImplementedError

    def begin(self, channel: ResponseChannel, head: ParsedRequest) -> RequestStream:
        """Start answering ``head``; the stream may already be finished when this returns."""
        raise NotImplementedError

    def rejected(self, client_ip: str, status: int, reason: str, request_id: bytes) -> None:
        """The connection answered a request it could not read (400, 408, 413, 431...) itself."""

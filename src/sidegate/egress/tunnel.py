"""A CONNECT tunnel's destination end: raw bytes both ways, with backpressure and an idle limit.

Not :class:`sidegate.server.tunnel.Tunnel`: that one joins a client to a pooled upstream
connection after a ``101`` (whose deadlines the upstream connection keeps); here the socket is
the tunnel's own, opened to the checked address for this one CONNECT, and nothing of HTTP is
read from it. Either side not taking bytes pauses reading on the other; no byte either way for
the destination's idle timeout closes both.

The CONNECT SNI check (``egress.connect_sni: match``, or a destination's ``connect_sni``) is
here too, as :class:`SniCheck`: the app's first bytes are held back from the destination until
they are a whole TLS ClientHello whose ``server_name`` is the CONNECT host, and the tunnel is
closed (audited with ``rule: connect_sni`` and the reason) when they are not: no SNI, another
name, or no TLS at all. The destination connection is open by then (the ``200`` is only sent
once it is), but it gets no byte. For a CONNECT to an IP literal a hello without SNI passes
(clients never put an IP in SNI, RFC 6066), one naming a host does not. Off by default, as in
Smokescreen: a tunnel may carry other protocols (SSH over CONNECT, plain HTTP on port 80);
``match`` is Envoy's ``sni_dynamic_forward_proxy`` behaviour, for pods whose CONNECTs are TLS.

Once the tunnel is up (the app has its ``200``, the early and held bytes and any held
ClientHello are written), both sockets go to a :class:`~sidegate.egress.splice_relay.SpliceRelay`:
the kernel moves the bytes, Python no longer sees them. Half-closes, the idle limit, the byte
counts and backpressure stay as described above; where the relay cannot start, this module's
copying path carries the tunnel to its end.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

from sidegate.config.egress_spec import DestinationSpec
from sidegate.egress.answers import RefusedError
from sidegate.egress.audit import AuditRecord
from sidegate.egress.guard import Target
from sidegate.egress.sni import MAX_CLIENT_HELLO, ClientHelloError, read_client_hello
from sidegate.egress.splice_relay import AVAILABLE as SPLICE_AVAILABLE
from sidegate.egress.splice_relay import SpliceRelay, socket_fd

SNI_RULE = "connect_sni"
#: How often a tunnel whose write buffers still hold bytes looks again before handing over to
#: the splice relay (the bytes must be out first: a spliced byte may not overtake them).
RELAY_RETRY = 0.005


class SniCheck:
    """The first bytes of a tunnel, held until they show a ClientHello for ``host``."""

    def __init__(self, host: str, is_ip: bool) -> None:
        self.host = host
        self.is_ip = is_ip
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, str | None] | None:
        """None while more bytes are needed; then the bytes to pass on and, when the tunnel
        must close instead, the reason."""
        self.held += data
        try:
            hello = read_client_hello(self.held)
        except ClientHelloError as error:
            return b"", f"the tunnel does not start with a TLS ClientHello ({error})"
        if hello is None:
            if len(self.held) > MAX_CLIENT_HELLO + 1024:
                return b"", "no whole TLS ClientHello in the first bytes"
            return None
        name = hello.server_name
        if name == self.host or (name is None and self.is_ip):
            return self.held, None
        if name is None:
            return b"", f"the ClientHello has no SNI; CONNECT {self.host} needs SNI {self.host}"
        return b"", f"the ClientHello's SNI {name!r} is not the CONNECT host {self.host!r}"


def sni_check_for(egress_mode: str, destination: DestinationSpec, target: Target) -> SniCheck | None:
    """The SNI check a CONNECT to ``target`` gets: the destination's ``connect_sni``, else
    the egress-wide one; None when it is off."""
    mode = destination.connect_sni or egress_mode
    if mode != "match":
        return None
    return SniCheck(target.host, target.literal is not None)


class TunnelUser(Protocol):
    """The call a tunnel belongs to (:class:`sidegate.egress.proxy.OutboundCall`)."""

    def from_destination(self, data: bytes) -> None: ...
    def destination_eof(self) -> None: ...
    def destination_writable(self, writable: bool) -> None: ...
    def tunnel_closed(self) -> None: ...
    def note(self, key: str, value: str) -> None: ...

    @property
    def record(self) -> AuditRecord: ...


class TunnelToDestination(asyncio.Protocol):
    def __init__(
        self, loop: asyncio.AbstractEventLoop, call: TunnelUser, idle: float, sni: SniCheck | None = None
    ) -> None:
        self.call = call
        self.sni = sni
        self.idle = idle
        self.transport: asyncio.Transport | None = None
        self.loop = loop
        self.last = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.eof = False  # the destination sent all it will
        self.client_eof = False  # so did the app
        # The zero-copy relay (:mod:`sidegate.egress.splice_relay`): the app's transport once
        # the tunnel is up, and the relay once it has taken over both sockets.
        self.client_transport: asyncio.Transport | None = None
        self.relay: SpliceRelay | None = None
        self.relay_pending = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport
        # Not read until the app has its 200 (tunnel_up): a destination that speaks first (SSH,
        # SMTP, the bench's bulk origin) would otherwise have its bytes written ahead of it.
        self.transport.pause_reading()
        self.timer = self.loop.call_later(self.idle, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self.last = self.loop.time()
        self.call.from_destination(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        self.call.destination_eof()
        if self.client_eof:  # both directions are over
            return None
        return True  # the app may still be sending

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        self.call.tunnel_closed()

    def pause_writing(self) -> None:
        if self.relay is None:
            self.call.destination_writable(False)

    def resume_writing(self) -> None:
        if self.relay is None:
            self.call.destination_writable(True)

    def send(self, data: bytes) -> None:
        self.last = self.loop.time()
        if self.sni is not None:
            verdict = self.sni.feed(data)
            if verdict is None:
                return
            data, refusal = verdict
            self.sni = None
            if refusal is not None:
                record = self.call.record  # audited and counted as a denial by connect_sni
                record.decision, record.rule, record.reason = "deny", SNI_RULE, refusal
                self.call.note("closed", "sni_check")
                self.close()
                return
        if self.transport is not None and not self.closed:
            self.transport.write(data)
            if self.client_transport is not None:  # the check passed: the kernel may take over
                self.try_relay()

    def write_eof(self) -> None:
        """The app sent all it will: pass the half-close on, or end if the destination has too."""
        self.client_eof = True
        if self.transport is None or self.closed:
            return
        if self.eof or not self.transport.can_write_eof():
            self.transport.close()
        else:
            self.transport.write_eof()

    def client_writable(self, writable: bool) -> None:
        if self.transport is None or self.closed or self.relay is not None:
            return
        if writable:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()  # the app is not taking bytes: stop reading the destination

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()  # lets go of its fds first, then calls _relay_ended
            return
        if self.transport is not None:
            self.transport.close()

    # -- the zero-copy relay -------------------------------------------------------------------

    def tunnel_up(self, client: asyncio.Transport) -> None:
        """The app has its 200 and the held bytes are written: read the destination, and hand
        both sockets to a splice relay as soon as nothing of the tunnel's own is in flight
        (see :mod:`sidegate.egress.splice_relay`)."""
        if self.transport is None or self.closed:
            return
        self.transport.resume_reading()
        if SPLICE_AVAILABLE:
            self.client_transport = client
            self.try_relay()

    def try_relay(self) -> None:
        client, own = self.client_transport, self.transport
        if client is None or own is None or self.relay is not None or self.closed:
            return
        if self.sni is not None:
            return  # the ClientHello is not checked yet: send() calls again once it is
        if self.eof or self.client_eof or client.is_closing():
            self.client_transport = None  # a half-closed tunnel ends on the copying path
            return
        if client.get_write_buffer_size() or own.get_write_buffer_size():
            if not self.relay_pending:
                self.relay_pending = True
                self.loop.call_later(RELAY_RETRY, self._retry_relay)
            return
        client_fd, own_fd = socket_fd(client), socket_fd(own)
        self.client_transport = None
        if client_fd is None or own_fd is None:
            return
        relay = SpliceRelay(self.loop, self.call.record, self._touch, self._relay_ended)
        client.pause_reading()  # for good: from now on only the relay reads either socket
        own.pause_reading()
        if relay.start(client_fd, own_fd):
            self.relay = relay
            return
        client.resume_reading()  # no pipe or fd to be had: the copying path goes on
        own.resume_reading()

    def _retry_relay(self) -> None:
        self.relay_pending = False
        self.try_relay()

    def _touch(self) -> None:
        self.last = self.loop.time()

    def _relay_ended(self) -> None:
        self.relay = None
        if self.transport is not None:
            self.transport.close()

    def _check_idle(self) -> None:
        quiet = self.loop.time() - self.last
        if quiet >= self.idle:
            self.call.note("closed", "idle")
            self.close()
            return
        self.timer = self.loop.call_later(self.idle - quiet, self._check_idle)


async def open_tunnel(
    loop: asyncio.AbstractEventLoop,
    call: TunnelUser,
    host: str,
    port: int,
    destination: DestinationSpec,
    *,
    sni: SniCheck | None = None,
) -> TunnelToDestination:
    """Connect to exactly ``host`` (a checked address) and ``port``; :class:`RefusedError` if not.
    ``sni``: the CONNECT SNI check the app's first bytes must pass."""
    try:
        _, tunnel = await asyncio.wait_for(
            loop.create_connection(
                lambda: TunnelToDestination(loop, call, destination.idle_timeout, sni), host, port
            ),
            destination.connect_timeout,
        )
    except TimeoutError:
        raise RefusedError(
            504,
            "egress_connect_timeout",
            f"no connection to {host}:{port} within {destination.connect_timeout:g}s",
            destination.name,
        ) from None
    except OSError as error:
        raise RefusedError(
            502, "egress_connect_failed", f"{host}:{port}: {error.strerror or error}", destination.name
        ) from None
    return tunnel

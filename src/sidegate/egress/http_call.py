"""The HTTP half of an outbound call: an admitted request streamed to a checked address and back.

:class:`HttpCall` is the base of :class:`~sidegate.egress.proxy.OutboundCall` that owns what
happens after an absolute-form or named request is admitted: resolve and check (or nothing to
wait for: a literal address and no credential, then no task either), hold one of the
destination's ``max_connections``, fetch the credential, then hand the request to an
:class:`~sidegate.egress.http_leg.UpstreamLeg` at once (its body follows as the app sends it),
and turn the leg's endings into the call's: the next checked address when one could not be
connected to, 502/504 while no response head went to the app, a cut connection after. A base
class rather than a member, as :class:`~sidegate.request.forward.Forwarder` is the exchange's:
every call stays a direct native call when compiled; its fields are set by the call's
``__init__``, and the steps it shares with the tunnel are the call's (declared here).
"""

from __future__ import annotations

import asyncio
import ipaddress

from sidegate.config.egress_spec import DestinationSpec
from sidegate.egress.answers import RefusedError
from sidegate.egress.audit import AuditRecord, outgoing_traceparent
from sidegate.egress.credentials import CredentialUnavailableError
from sidegate.egress.guard import Target
from sidegate.egress.http_leg import HOLD_LIMIT, LegSettings, UpstreamLeg, request_head
from sidegate.egress.state import ClientSide, EgressState
from sidegate.errors import UpstreamFailure
from sidegate.http.request_head import ParsedRequest
from sidegate.upstream.tls_origin import TlsOrigin

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Failures answered 504 (the others: 502).
_TIMEOUTS = frozenset(("connect_timeout", "response_timeout", "idle_timeout", "send_timeout"))


class HttpCall:
    """The HTTP half of one outbound call (see the module's docstring)."""

    server: EgressState
    conn: ClientSide
    request_id: str
    record: AuditRecord
    head: ParsedRequest | None
    target: Target | None
    destination: DestinationSpec | None
    body: list[bytes]  # request body held until the leg exists
    held: int  # its size
    size: int  # request body bytes so far
    request_done: bool  # the app sent the whole request
    keep_alive: bool
    finished: bool
    leg: UpstreamLeg | None  # the request's way to the destination and back
    addresses: list[IPAddress]  # checked addresses not tried yet
    task: asyncio.Task[None] | None
    tls: TlsOrigin | None  # TLS origination: the context and name, or None (plain HTTP)

    def _start(self) -> None:
        """The call is admitted: on to the destination, at once when nothing is to be waited for."""
        target, destination = self.target, self.destination
        assert target is not None and destination is not None
        if target.literal is not None and self.server.credential(destination.name) is None:
            try:  # nothing to wait for (no name to resolve, no credential): no task either
                self.addresses = self._check([target.literal], target, destination)
                self._hold_connection(destination)
            except RefusedError as refused:
                self.refuse(refused)
                return
            self._go(None)
            return
        self.task = self.server.loop.create_task(self._send())

    def request_body(self, data: bytes) -> None:
        if self.finished:
            return
        self.size += len(data)
        self.record.bytes_in = self.size
        limit = self.server.max_body
        if limit and self.size > limit:
            leg = self.leg
            if leg is not None and leg.head_sent:  # the answer is on its way: no 413 can follow it
                leg.drop()
                self.record.reason = too_large(limit)
                self.record.status, self.record.bytes_out = leg.status, leg.bytes_out
                self._finish(keep_alive=False)
                self.conn.close()
                return
            self._drop_leg()
            self.refuse(RefusedError(413, "payload_too_large", too_large(limit)))
            return
        leg = self.leg
        if leg is not None:
            leg.send_body(data)
            return
        self.body.append(data)  # not dialled yet: held, and the app paused past the hold limit
        self.held += len(data)
        if self.held > HOLD_LIMIT:
            self.conn.pause_reading()

    def request_end(self) -> None:
        if self.request_done:  # a request without a body: complete since its head
            return
        self.request_done = True
        if self.leg is not None and not self.finished:
            self.leg.request_end()

    async def _send(self) -> None:
        """Resolve, check, hold a connection slot, get the credential, then send the head at once
        (the body follows as it comes: :class:`~sidegate.egress.http_leg.UpstreamLeg`)."""
        head, target, destination = self.head, self.target, self.destination
        assert head is not None and target is not None and destination is not None
        try:
            self.addresses = await self._checked_addresses(target, destination)
            self._hold_connection(destination)
            injected = await self._credential(destination)
        except RefusedError as refused:
            self.refuse(refused)
            return
        if self.finished:  # the app went away while the credential was fetched
            return
        self._go(injected)

    def _go(self, injected: tuple[bytes, bytes] | None) -> None:
        """Admitted, checked, credential in hand: the head goes out now, the body as it comes."""
        head, target, destination = self.head, self.target, self.destination
        assert head is not None and target is not None and destination is not None
        settings = LegSettings(
            head_request=head.method == b"HEAD",
            version=head.version,
            keep_alive=self.keep_alive,
            chunked=head.chunked,
            continued=head.expect_continue,
            connect_timeout=destination.connect_timeout,
            response_timeout=destination.response_timeout,
            idle_timeout=destination.idle_timeout,
            request_id=self.request_id.encode(),
        )
        request = request_head(
            head,
            target,
            self.server.via,
            injected,
            traceparent=outgoing_traceparent(self.record, head.traceparent),
            default_port=80 if self.tls is None else 443,
        )
        held, self.body = self.body, []
        self.leg = UpstreamLeg(self, self.conn, settings, request, held=held, done=self.request_done)
        if self.held > HOLD_LIMIT:
            self.conn.resume_reading()  # the leg holds (or sends) them now, and pauses as it needs
        self._dial()

    async def _credential(self, destination: DestinationSpec) -> tuple[bytes, bytes] | None:
        """The header the destination's credential adds, or None; 503 when it cannot be had
        (a secret file gone, a token endpoint down): never the request without it."""
        credential = self.server.credential(destination.name)
        if credential is None:
            return None
        self.record.credential = credential.name
        try:
            return await credential.header()
        except CredentialUnavailableError as error:
            raise RefusedError(503, "egress_credential_unavailable", str(error), destination.name) from None

    def _dial(self) -> None:
        """Send the request to the next checked address (the first, unless one refused)."""
        target, leg = self.target, self.leg
        assert target is not None and leg is not None
        address = self.addresses.pop(0)
        ip = target.host if address is target.literal else str(address)  # the same text, made once
        self.record.resolved = f"{ip}:{target.port}"
        leg.start(self.server.pool_for(ip, target.port, self.tls))

    def leg_failed(self, failure: UpstreamFailure) -> None:
        """The destination failed: the next checked address when this one could not be
        connected to (nothing was sent), a 502/504 while no response head went to the app,
        else the app's connection is cut (a response cut short must not look whole)."""
        leg = self.leg
        if self.finished or leg is None:
            return
        if failure.kind.startswith("connect_") and self.addresses:
            self._dial()  # a TLS failure is not retried elsewhere: the same certificate answers
            return
        leg.drop()
        why = f"{self.record.destination}: {failure.detail}"
        if leg.head_sent:
            record = self.record
            record.status, record.bytes_out = leg.status, leg.bytes_out
            record.reason = f"cut mid-response: {why}"
            record.extra["closed"] = "destination_failed"
            self._finish(keep_alive=False)
            self.conn.close()
            return
        timed_out = failure.kind in _TIMEOUTS
        status, error = (504, "egress_timeout") if timed_out else (502, "egress_upstream_failed")
        if failure.kind == "tls_failed":  # the handshake or a verify failure: say so
            status, error = 502, "egress_tls_failed"
        self.refuse(RefusedError(status, error, why, self.record.rule))

    def leg_done(self, keep_alive: bool) -> None:
        """The response is complete: the app's connection stays open if its framing allows."""
        leg = self.leg
        if self.finished or leg is None:
            return
        self.record.status, self.record.bytes_out = leg.status, leg.bytes_out
        self._finish(keep_alive=keep_alive)

    def _drop_leg(self) -> None:
        if self.leg is not None:
            self.leg.drop()

    # -- the steps shared with the tunnel (the call's) -----------------------------------------

    async def _checked_addresses(self, target: Target, destination: DestinationSpec) -> list[IPAddress]:
        raise NotImplementedError

    def _check(
        self, addresses: list[IPAddress], target: Target, destination: DestinationSpec
    ) -> list[IPAddress]:
        raise NotImplementedError

    def _hold_connection(self, destination: DestinationSpec) -> None:
        raise NotImplementedError

    def refuse(self, refused: RefusedError) -> None:
        raise NotImplementedError

    def _finish(self, *, keep_alive: bool) -> None:
        raise NotImplementedError


def too_large(limit: int) -> str:
    return f"request body larger than egress.max_body ({limit} bytes; 0 means no limit)"

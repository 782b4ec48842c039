"""One outbound call: decide, resolve, check every address, dial exactly the checked one.

The order is the security model, as in Smokescreen: the request's authority is parsed strictly
(400), the policy decides on the name (403 with the rule), the name is resolved once, *every*
address is checked by the SSRF guard and against Sidegate's own listeners (403), and the
connection goes to a checked address itself (the first; the next when one refuses the
connection), never to the name again: nothing can resolve differently between the check and
the connect (DNS rebinding).

An absolute-form or named request goes through the one upstream client (a pool per checked
``ip:port``, :class:`~sidegate.upstream.fetch.BackgroundFetch`): sent in origin-form with Host
rewritten to the target's authority, the request body and the response buffered (both bounded
by ``egress.max_body``). An ``https://`` request, or an ``http://`` one to a destination with
``tls.originate``, goes out over verified TLS (:mod:`sidegate.egress.tls`; its pool is keyed by
the TLS identity too). Redirects are passed to the app as they came: the proxy never follows
one. A ``CONNECT`` becomes a tunnel (:mod:`sidegate.egress.tunnel`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from dataclasses import replace

from sidegate.config.egress_spec import DestinationSpec
from sidegate.config.egress_tls_spec import TlsFileError
from sidegate.egress.answers import RefusedError, error_response, phrase
from sidegate.egress.audit import AuditRecord, outgoing_traceparent, traceparent_in
from sidegate.egress.connect_head import ConnectHead
from sidegate.egress.credentials import CredentialUnavailableError, with_credential
from sidegate.egress.guard import AuthorityError, Target, forbidden_reason, parse_authority
from sidegate.egress.policy import DEFAULT_RULE
from sidegate.egress.resolver import ResolveError
from sidegate.egress.state import ClientSide, EgressState
from sidegate.egress.tunnel import TunnelToDestination, open_tunnel, sni_check_for
from sidegate.http.messages import Fetched
from sidegate.http.request_head import ParsedRequest
from sidegate.upstream.fetch import BackgroundFetch
from sidegate.upstream.tls_origin import TlsOrigin

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: How the upstream client says that a connection could not be opened (nothing was sent).
_NOT_CONNECTED = ("connection refused", "cannot connect", "no connection to")
#: How it says that TLS to the destination failed (the handshake, or the peer's alert after it).
_TLS_FAILED = ("TLS with ", "tls_failed: ")
LOOP_RULE = "loop_detection"
GUARD_RULE = "ssrf_guard"


class OutboundCall:
    """One request or tunnel from the app (see the module's docstring)."""

    def __init__(self, server: EgressState, conn: ClientSide, method: str, client: str) -> None:
        self.server = server
        self.conn = conn
        self.request_id = os.urandom(8).hex()
        self.record = AuditRecord(self.request_id, "http", method, client, server.audit.clock())
        self.head: ParsedRequest | None = None
        self.target: Target | None = None
        self.destination: DestinationSpec | None = None
        self.body: list[bytes] = []
        self.size = 0
        self.keep_alive = True
        self.finished = False
        self.counted = False  # holds one of the destination's max_connections
        self.tunnel: TunnelToDestination | None = None
        self.task: asyncio.Task[None] | None = None
        self.fetch: BackgroundFetch | None = None
        self.addresses: list[IPAddress] = []  # checked addresses not tried yet
        self.request = b""  # the request as it goes upstream (kept to try the next address)
        self.tls: TlsOrigin | None = None  # TLS origination: the context and name, or plain HTTP

    # -- absolute-form and named requests ------------------------------------------------------

    def begin(self, head: ParsedRequest, scheme: str) -> None:
        self.head = head
        self.keep_alive = head.keep_alive
        self.server.audit.begin(self.record, head.traceparent, head.request_id)
        try:
            self._admit(head, scheme)
        except RefusedError as refused:
            self.refuse(refused)

    def _admit(self, head: ParsedRequest, scheme: str) -> None:
        record = self.record
        record.target = head.target.decode("latin-1")
        self._check_via(head.via)
        if head.upgrade:
            raise RefusedError(400, "bad_request", "upgrades are not proxied by egress; use CONNECT")
        named: DestinationSpec | None = None
        if scheme:
            authority = head.host_header.decode("latin-1")
        else:  # a named destination: Host is a destination's name
            record.kind, scheme = "named", "http"
            name = head.host.decode("latin-1").lower()
            destination = self.server.policy.by_name.get(name)
            if destination is None:
                raise RefusedError(
                    403,
                    "egress_denied",
                    f"Host {name!r} names no egress destination; send the request "
                    "in absolute-form through the proxy, or use a destination's name as Host",
                    DEFAULT_RULE,
                )
            named, origin = destination, destination.named_origin()
            if origin is None:
                raise RefusedError(
                    403,
                    "egress_denied",
                    f"destination {name!r} has a wildcard host: set its `origin` to call it by name",
                    destination.name,
                )
            authority = f"[{origin[0]}]:{origin[1]}" if ":" in origin[0] else f"{origin[0]}:{origin[1]}"
        target = self._parse(authority, 443 if scheme == "https" else 80)
        record.destination = f"{target.host}:{target.port}"
        method, path = head.method.decode("latin-1"), head.path.decode("latin-1")
        self._decide(scheme, target, method, path, named)
        self._originate(scheme, target)
        if head.expect_continue:  # allowed: the client may send the body now
            self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _originate(self, scheme: str, target: Target) -> None:
        """TLS origination (:mod:`sidegate.egress.tls`): whether this call goes out over TLS,
        and to which port (an originated ``http://`` call to port 80 goes to ``tls.port``)."""
        assert self.destination is not None
        try:
            originated = self.server.tls.originate(scheme, target.host, target.port, self.destination)
        except TlsFileError as error:
            raise RefusedError(502, "egress_tls_failed", str(error), self.destination.name) from None
        if originated is not None:
            self.tls = originated.origin
            self.target = replace(target, port=originated.port)
            self.record.tls, self.record.tls_server_name = "originated", originated.origin.server_name

    def request_body(self, data: bytes) -> None:
        if self.finished:
            return
        self.size += len(data)
        self.record.bytes_in = self.size
        if self.size > self.server.max_body:
            why = f"request body larger than egress.max_body ({self.server.max_body} bytes)"
            self.refuse(RefusedError(413, "payload_too_large", why))
            return
        self.body.append(data)

    def request_end(self) -> None:
        if not self.finished:
            self.task = self.server.loop.create_task(self._send())

    async def _send(self) -> None:
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
        self.request = self._upstream_request(head, target, injected)
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
        head, target, destination = self.head, self.target, self.destination
        assert head is not None and target is not None and destination is not None
        address = self.addresses.pop(0)
        self.record.resolved = f"{address}:{target.port}"
        self.fetch = BackgroundFetch(
            self.server.pool_for(str(address), target.port, self.tls),
            self.request,
            connect_timeout=destination.connect_timeout,
            timeout=destination.response_timeout,
            max_body=self.server.max_body,
            clock=self.server.loop.time,
            done=self._fetched,
            purpose="egress request",
            log_failures=False,
            head_request=head.method == b"HEAD",
        )
        self.fetch.start()

    def _upstream_request(
        self, head: ParsedRequest, target: Target, injected: tuple[bytes, bytes] | None = None
    ) -> bytes:
        """The request in origin-form: Host is the target's authority (not the app's Host),
        the reader already dropped hop-by-hop and proxy fields, and Sidegate's Via is added.
        Sidegate adds no X-Forwarded-For of its own: the pod's addresses are not the
        destination's business."""
        default = 80 if self.tls is None else 443
        host = f"[{target.host}]" if ":" in target.host else target.host
        authority = host if target.port == default else f"{host}:{target.port}"
        lines = [
            f"{head.method.decode('latin-1')} {head.target.decode('latin-1')} HTTP/1.1",
            f"Host: {authority}",
        ]
        out = "\r\n".join(lines).encode("latin-1") + b"\r\n"
        headers = head.headers if injected is None else with_credential(head.headers, *injected)
        out += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        for name, value in _app_set_fields(head, outgoing_traceparent(self.record, head.traceparent)):
            out += name + b": " + value + b"\r\n"
        via = (head.via + b", " if head.via else b"") + self.server.via
        out += b"Via: " + via + b"\r\n"
        body = b"".join(self.body)
        self.body = []
        if body or head.method in (b"POST", b"PUT", b"PATCH"):
            out += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        return out + b"\r\n" + body

    def _fetched(self, fetched: Fetched | None) -> None:
        if self.finished:
            return
        if fetched is None:
            problem = self.fetch.problem if self.fetch is not None else ""
            if self.addresses and problem.startswith(_NOT_CONNECTED):  # nothing was sent: next one
                self._dial()
                return
            timed_out = "within" in problem or "timeout" in problem
            status, error = (504, "egress_timeout") if timed_out else (502, "egress_upstream_failed")
            if problem.startswith(_TLS_FAILED):  # a verify failure: no other address is tried
                status, error = 502, "egress_tls_failed"
                problem = problem.removeprefix("tls_failed: ")
            why = f"{self.record.destination}: {problem or 'no response'}"
            self.refuse(RefusedError(status, error, why, self.record.rule))
            return
        status, headers, body, _, _ = fetched
        close = not self.keep_alive
        out = f"HTTP/1.1 {status} {phrase(status)}\r\n".encode()
        out += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        if self.head is not None and self.head.method != b"HEAD" and status not in (204, 304):
            out += b"Content-Length: " + str(len(body)).encode() + b"\r\n"  # buffered: re-framed
        out += b"Connection: close\r\n" if close else b""
        self.record.status, self.record.bytes_out = status, len(body)
        self.conn.write(out + b"\r\n" + body)
        self._finish(keep_alive=not close)

    # -- CONNECT -------------------------------------------------------------------------------

    def start_tunnel(
        self, head: ConnectHead, early: bytes, *, kind: str = "connect", scheme: str = "https"
    ) -> None:
        """A tunnel to ``head.authority``: a CONNECT's, or transparent mode's (``kind``
        "transparent"; ``scheme`` "tcp" for raw TCP), decided on ``scheme``, host and port."""
        self.record.kind = kind
        self.keep_alive = False
        self.server.audit.begin(self.record, traceparent_in(head.headers))
        try:
            self._check_via(head.via)
            if ":" not in head.authority.rpartition("]")[2]:
                raise RefusedError(400, "bad_authority", "CONNECT needs host:port")
            target = self._parse(head.authority, 443)
            self.record.destination = f"{target.host}:{target.port}"
            self._decide(scheme, target, "CONNECT", "")
        except RefusedError as refused:
            self.refuse(refused)
            return
        self.task = self.server.loop.create_task(self._tunnel(early))

    async def _tunnel(self, early: bytes) -> None:
        target, destination = self.target, self.destination
        assert target is not None and destination is not None
        try:
            addresses = await self._checked_addresses(target, destination)
            self._hold_connection(destination)
            mode = self.server.spec.connect_sni
            sni = sni_check_for(mode, destination, target) if self.record.kind == "connect" else None
            while True:  # each checked address in turn, while they refuse the connection
                address = addresses.pop(0)
                self.record.resolved = f"{address}:{target.port}"
                try:
                    self.tunnel = await open_tunnel(
                        self.server.loop, self, str(address), target.port, destination, sni=sni
                    )
                    break
                except RefusedError:
                    if not addresses or self.finished:
                        raise
        except RefusedError as refused:
            self.refuse(refused)
            return
        if self.finished:  # the app went away meanwhile
            self.tunnel.close()
            return
        self.record.status = 200
        self.conn.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        self.conn.become_tunnel()
        if early:
            self.from_client(early)

    def from_client(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.record.bytes_in += len(data)
            self.tunnel.send(data)

    def from_destination(self, data: bytes) -> None:
        self.record.bytes_out += len(data)
        self.conn.write(data)

    def destination_eof(self) -> None:
        self.conn.write_eof()

    def destination_writable(self, writable: bool) -> None:
        if writable:
            self.conn.resume_reading()
        else:
            self.conn.pause_reading()  # the destination is not taking bytes: stop reading the app

    def note(self, key: str, value: str) -> None:
        self.record.extra[key] = value

    def client_eof(self) -> None:
        if self.tunnel is not None:
            self.tunnel.write_eof()

    def client_writable(self, writable: bool) -> None:
        if self.tunnel is not None:
            self.tunnel.client_writable(writable)

    def tunnel_closed(self) -> None:
        self._finish(keep_alive=False)
        self.conn.close()

    # -- shared steps --------------------------------------------------------------------------

    def _check_via(self, via: bytes) -> None:
        if via and self.server.via.lower() in via.lower():
            raise RefusedError(
                403,
                "egress_denied",
                "the request already passed through this Sidegate (Via): a loop",
                LOOP_RULE,
            )

    def _parse(self, authority: str, default_port: int) -> Target:
        try:
            target = self.target = parse_authority(authority, default_port)
        except AuthorityError as error:
            raise RefusedError(400, "bad_authority", str(error)) from None
        return target

    def _decide(
        self, scheme: str, target: Target, method: str, path: str, named: DestinationSpec | None = None
    ) -> None:
        host = target.host.lower().rstrip(".")  # whatever spelling the guard kept: names match lower-case
        decision = self.server.policy.decide(scheme, host, target.port, method, path, named=named)
        self.record.rule, self.record.reason = decision.rule, decision.reason
        if not decision.allowed:
            raise RefusedError(403, "egress_denied", decision.reason, decision.rule)
        self.destination = decision.destination
        self.record.decision = "allow"

    async def _checked_addresses(self, target: Target, destination: DestinationSpec) -> list[IPAddress]:
        """Every address the host has, each checked: the ones to dial, as they are, in order."""
        if target.literal is not None:
            addresses: list[IPAddress] = [target.literal]
        else:
            try:
                addresses = await self.server.resolver.resolve(target.host)
            except ResolveError as error:
                raise RefusedError(502, "egress_resolve_failed", str(error), destination.name) from None
        for address in addresses:
            why = forbidden_reason(address, destination.allow_private)
            if why is not None:
                raise RefusedError(
                    403,
                    "egress_denied",
                    f"{target.host} resolves to {why}; list the range in the "
                    f"destination's allow_private to allow it",
                    GUARD_RULE,
                )
            if self.server.is_own(address, target.port):
                raise RefusedError(
                    403,
                    "egress_denied",
                    f"{address}:{target.port} is one of Sidegate's own listeners",
                    LOOP_RULE,
                )
        return list(addresses)

    def _hold_connection(self, destination: DestinationSpec) -> None:
        active = self.server.active
        if active.get(destination.name, 0) >= destination.max_connections:
            raise RefusedError(
                503,
                "egress_busy",
                f"destination {destination.name!r} has max_connections "
                f"({destination.max_connections}) calls open",
                destination.name,
            )
        active[destination.name] = active.get(destination.name, 0) + 1
        self.counted = True

    def refuse(self, refused: RefusedError) -> None:
        if self.finished:
            return
        record = self.record
        record.status, record.reason, record.error = refused.status, refused.reason, refused.error
        if refused.status == 403:  # a guard or loop refusal after the policy allowed the name
            record.decision = "deny"
        if refused.rule:
            record.rule = refused.rule
        body = error_response(
            refused.status, refused.error, refused.reason, self.request_id, rule=refused.rule, close=True
        )
        self.conn.write(body)
        self._finish(keep_alive=False)

    def _finish(self, *, keep_alive: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if self.counted and self.destination is not None:
            self.server.active[self.destination.name] -= 1
            self.counted = False
        self.server.audit.finish(self.record)
        self.conn.answered(keep_alive)

    def client_lost(self) -> None:
        if self.tunnel is not None:
            self.tunnel.close()
        if not self.finished:
            self.record.status = self.record.status or 499
            self.finished = True
            if self.counted and self.destination is not None:
                self.server.active[self.destination.name] -= 1
            self.server.audit.finish(self.record)


def _app_set_fields(head: ParsedRequest, traceparent: bytes) -> list[tuple[bytes, bytes]]:
    """The fields the shared reader keeps apart for the inbound side to rewrite (forwarding,
    request id, trace context): on the way out they are the app's, and go on unchanged, but for
    ``traceparent`` when tracing is on: then it names the egress span (W3C Trace Context)."""
    fields = (
        (b"X-Forwarded-For", head.xff),
        (b"X-Forwarded-Proto", head.xfp),
        (b"X-Forwarded-Host", head.xfh),
        (b"Forwarded", head.forwarded),
        (b"X-Request-Id", head.request_id),
        (b"traceparent", traceparent),
    )
    return [(name, value) for name, value in fields if value]

"""One outbound call: decide, resolve, check every address, dial exactly the checked one.

The order is the security model, as in Smokescreen: the request's authority is parsed strictly
(400), the policy decides on the name (403 with the rule), the name is resolved once, *every*
address is checked by the SSRF guard and against Sidegate's own listeners (403), and the
connection goes to a checked address itself (the first; the next when one refuses the
connection), never to the name again: nothing can resolve differently between the check and
the connect (DNS rebinding).

An absolute-form or named request is streamed through the one upstream client (a pool per
checked ``ip:port``; :class:`~sidegate.egress.http_leg.UpstreamLeg`): its head goes out in
origin-form, Host rewritten to the target's authority, as soon as the call is admitted,
resolved and its credential ready; the body follows as the app sends it, and the response comes
back as it arrives, with backpressure both ways. ``egress.max_body`` bounds the request body
only (0: no limit); responses are not bounded. Redirects are passed to the app as they came:
the proxy never follows one. A ``CONNECT`` becomes a tunnel (:mod:`sidegate.egress.tunnel`).
An ``https://`` request, or an ``http://`` one to a destination with ``tls.originate``, goes
out over verified TLS (:mod:`sidegate.egress.tls`; its pool is keyed by the TLS identity too).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import replace
from typing import Final

from sidegate.config.egress_spec import DestinationSpec
from sidegate.config.egress_tls_spec import TlsFileError
from sidegate.egress.answers import RefusedError, error_response
from sidegate.egress.audit import AuditRecord, traceparent_in
from sidegate.egress.connect_head import ConnectHead
from sidegate.egress.guard import AuthorityError, Target, forbidden_reason, parse_authority
from sidegate.egress.http_call import HttpCall, too_large
from sidegate.egress.policy import DEFAULT_RULE
from sidegate.egress.resolver import ResolveError
from sidegate.egress.state import ClientSide, EgressState
from sidegate.egress.tunnel import TunnelToDestination, open_tunnel, sni_check_for
from sidegate.http.request_head import ParsedRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Authorities parsed, and (in EgressState.checked) addresses allowed, remembered at most.
MAX_CHECKED: Final = 4096
_TARGETS: Final[dict[tuple[str, int], Target]] = {}
LOOP_RULE: Final = "loop_detection"
GUARD_RULE: Final = "ssrf_guard"


class OutboundCall(HttpCall):
    """One request or tunnel from the app (see the module's docstring)."""

    def __init__(self, server: EgressState, conn: ClientSide, method: str, client: str) -> None:
        self.server = server
        self.conn = conn
        self.request_id = _new_request_id()
        self.record = AuditRecord(self.request_id, "http", method, client, server.audit.clock())
        # Declared in HttpCall (not again here: mypyc would visit them twice in the GC).
        self.head = None
        self.target = None
        self.destination = None
        self.body = []
        self.held = 0
        self.size = 0
        self.request_done = False
        self.keep_alive = True
        self.finished = False
        self.task = None
        self.leg = None
        self.addresses = []
        self.counted = False  # holds one of the destination's max_connections
        self.tunnel: TunnelToDestination | None = None
        self.tls = None  # declared in HttpCall: TLS origination, or None (plain HTTP)

    # -- absolute-form and named requests ------------------------------------------------------

    def begin(self, head: ParsedRequest, scheme: str) -> None:
        self.head = head
        self.keep_alive = head.keep_alive
        self.server.audit.begin(self.record, head.traceparent, head.request_id)
        try:
            self._admit(head, scheme)
            limit = self.server.max_body
            if limit and head.content_length is not None and head.content_length > limit:
                raise RefusedError(413, "payload_too_large", too_large(limit))
        except RefusedError as refused:
            self.refuse(refused)
            return
        self.request_done = not head.has_body
        self._start()

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
        if early:  # the bytes that came with the head, then those held while opening
            self.from_client(early)
        self.conn.become_tunnel()

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
        elif self.leg is not None:
            self.leg.app_writable(writable)

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
        """The strict parse, remembered for the authorities that passed it (a pure function of
        the text: an app calls the same few hosts over and over)."""
        key = (authority, default_port)
        target = _TARGETS.get(key)
        if target is None:
            try:
                target = parse_authority(authority, default_port)
            except AuthorityError as error:
                raise RefusedError(400, "bad_authority", str(error)) from None
            if len(_TARGETS) >= MAX_CHECKED:
                _TARGETS.clear()
            _TARGETS[key] = target
        self.target = target
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
        return self._check(addresses, target, destination)

    def _check(
        self, addresses: list[IPAddress], target: Target, destination: DestinationSpec
    ) -> list[IPAddress]:
        """Each address through the SSRF guard and loop detection (403 for the first that fails).
        An address a destination was allowed to reach is remembered until the next reload (a
        bounded set), so a busy destination pays a set look-up rather than the guard's checks."""
        checked = self.server.checked
        port, name = target.port, destination.name
        for address in addresses:
            if (address, port, name) in checked:
                continue
            why = forbidden_reason(address, destination.allow_private)
            if why is not None:
                raise RefusedError(
                    403,
                    "egress_denied",
                    f"{target.host} resolves to {why}; list the range in the "
                    f"destination's allow_private to allow it",
                    GUARD_RULE,
                )
            if self.server.is_own(address, port):
                raise RefusedError(
                    403,
                    "egress_denied",
                    f"{address}:{port} is one of Sidegate's own listeners",
                    LOOP_RULE,
                )
            if len(checked) >= MAX_CHECKED:
                checked.clear()
            checked.add((address, port, name))
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
        self._drop_leg()
        if not self.finished:
            self.record.status = self.record.status or 499
            self.finished = True
            if self.counted and self.destination is not None:
                self.server.active[self.destination.name] -= 1
            self.server.audit.finish(self.record)


_HEX: Final = tuple(f"{i:02x}" for i in range(256))


class _RequestIds:
    """Audit ids as the inbound side makes them: a random per-process prefix and a counter (a
    random id per call would be a ``getrandom`` system call per call). 16 hex digits."""

    def __init__(self) -> None:
        self.prefix = ""
        self.count = 0
        self.reset()

    def reset(self) -> None:
        self.prefix = os.urandom(4).hex()
        self.count = 0

    def new(self) -> str:
        """From a table of hex pairs, as the inbound ids are: formatting ``:08x`` cost ~5,000
        instructions a call."""
        self.count = n = (self.count + 1) & 0xFFFFFFFF
        return "".join(
            (self.prefix, _HEX[n >> 24], _HEX[(n >> 16) & 255], _HEX[(n >> 8) & 255], _HEX[n & 255])
        )


_IDS = _RequestIds()
os.register_at_fork(after_in_child=_IDS.reset)  # each worker its own prefix


def _new_request_id() -> str:
    return _IDS.new()

"""Transparent mode: a connection iptables redirected to the egress listener, decided like the rest.

One listener, not two. With ``egress.transparent: true`` the egress listener itself tells a
redirected connection from a proxy client by its original destination (``SO_ORIGINAL_DST``,
:mod:`sidegate.egress.original_dst`): the app's proxy calls come to the listener's own address,
redirected ones were going elsewhere. One port is what Istio does (15001) and what the rules of
``sidegate iptables`` point at; a second listener would be a second port to exclude, bind and
keep off the inbound side, for nothing the original destination does not already say.

Theory of operation. The first bytes are peeked at (nothing is written to the app meanwhile):

* a TLS ClientHello (:mod:`sidegate.egress.sni`): the policy decides on ``https``, the SNI
  name and the original port, exactly as for ``CONNECT sni:port``; the name is resolved by the
  egress resolver and a *checked* address of it is dialled, never the IP the app had dialled (the
  name is what the policy allowed: dialling the app's IP would let a forged SNI carry any
  destination past a name rule). The peeked bytes go first, then the tunnel carries the rest.
  A hello without SNI is decided on the original IP as the host, which only a destination naming
  that IP (or ``*``) allows. A refusal cannot be a 403 inside TLS: the connection is closed.
* an HTTP request line: the connection goes on as an egress connection whose requests are taken
  as absolute-form ``http://<Host>:<original port>`` (Host, not the original IP, decides; the
  request gets the usual 403 JSON when refused).
* anything else (or nothing within :data:`FIRST_BYTE_WAIT`: a protocol where the server speaks
  first): a raw TCP tunnel to the original IP and port, allowed only by a destination that
  names that IP (or ``*``), that port and the scheme ``tcp``.

Every connection leaves one audit line of kind ``transparent`` with ``original_destination``.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Protocol

from sidegate.egress.audit import AuditRecord
from sidegate.egress.connect_head import ConnectHead
from sidegate.egress.proxy import OutboundCall
from sidegate.egress.sni import MAX_CLIENT_HELLO, ClientHelloError, looks_like_tls, read_client_hello
from sidegate.egress.state import ClientSide, EgressState
from sidegate.http.request_head import ParsedRequest

#: No byte from the app for this long: a server-first protocol (SMTP, MySQL...): raw TCP.
FIRST_BYTE_WAIT = 1.0
#: A TLS ClientHello or an HTTP request line not whole this long after the first byte: closed.
PEEK_TIMEOUT = 10.0
#: An HTTP/1 request line (what follows is the HTTP path's to check, strictly).
_REQUEST_LINE = re.compile(rb"[A-Z]{1,20} [!-~]+ HTTP/1\.[01]\r?")


class EgressConnection(ClientSide, Protocol):
    """What of the egress connection (:mod:`sidegate.egress.listener`) transparent mode uses."""

    server: EgressState
    client: str
    peek: TransparentPeek | None

    def transparent_http(self, data: bytes) -> None: ...
    def take_call(self, call: OutboundCall) -> None: ...


def transparent_request(
    call: OutboundCall, head: ParsedRequest, scheme: str, original: tuple[str, int]
) -> str:
    """Make a redirected connection's request an absolute-form one to ``<Host>:<original port>``
    (Host without its port: the port is the one the app really dialled; no Host: the original
    IP); the scheme to take it with. A request already in absolute-form stays as it is."""
    call.record.kind = "transparent"
    call.note("original_destination", authority(*original))
    if scheme:
        return scheme
    host = head.host.decode("latin-1") if head.host else authority(original[0], 0).rpartition(":")[0]
    head.host_header = f"{host}:{original[1]}".encode("latin-1")
    return "http"


def authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SilentClient:
    """The app's side of a transparent tunnel: until the tunnel is up, what the call would
    answer (a ``200 Connection Established``, a 403 JSON) is not the app's protocol and is
    dropped; a refusal closes the connection instead."""

    def __init__(self, conn: EgressConnection) -> None:
        self.conn = conn
        self.open = False

    def write(self, data: bytes) -> None:
        if self.open:
            self.conn.write(data)

    def become_tunnel(self) -> None:
        self.conn.become_tunnel()
        self.open = True

    def write_eof(self) -> None:
        self.conn.write_eof()

    def answered(self, keep_alive: bool) -> None:
        self.conn.answered(False)

    def close(self) -> None:
        self.conn.close()

    def pause_reading(self) -> None:
        self.conn.pause_reading()

    def resume_reading(self) -> None:
        self.conn.resume_reading()


class TransparentPeek:
    """The first bytes of one redirected connection, until it is known what they are."""

    def __init__(self, conn: EgressConnection, original: tuple[str, int]) -> None:
        self.conn = conn
        self.original = original
        self.data = b""
        loop = conn.server.loop
        self.timer: asyncio.TimerHandle | None = loop.call_later(FIRST_BYTE_WAIT, self._quiet)

    def feed(self, data: bytes) -> None:
        if not self.data and self.timer is not None:
            self.timer.cancel()
            self.timer = self.conn.server.loop.call_later(PEEK_TIMEOUT, self._stalled)
        self.data += data
        if looks_like_tls(self.data):
            self._tls()
        elif self.data[:1].isupper():  # an HTTP method, perhaps: wait for the whole first line
            end = self.data.find(b"\n")
            if end < 0 and len(self.data) <= self.conn.server.head_size:
                return
            if end >= 0 and _REQUEST_LINE.fullmatch(self.data[:end]):
                self._done()
                self.conn.transparent_http(self.data)
            else:
                self._tunnel("tcp", authority(*self.original))
        else:
            self._tunnel("tcp", authority(*self.original))

    def _tls(self) -> None:
        try:
            hello = read_client_hello(self.data)
        except ClientHelloError as error:
            self._refuse(f"not a TLS ClientHello: {error}")
            return
        if hello is None:
            if len(self.data) > MAX_CLIENT_HELLO + 1024:
                self._refuse("no whole ClientHello in the first bytes")
            return
        host = hello.server_name if hello.server_name is not None else self.original[0]
        self._tunnel("https", authority(host, self.original[1]), sni=hello.server_name or "")

    def _tunnel(self, scheme: str, target: str, sni: str | None = None) -> None:
        self._done()
        conn = self.conn
        call = OutboundCall(conn.server, SilentClient(conn), "CONNECT", conn.client)
        call.note("original_destination", authority(*self.original))
        if sni is not None:
            call.note("sni", sni)
        conn.take_call(call)
        call.start_tunnel(ConnectHead(target, [], b"", False), self.data, kind="transparent", scheme=scheme)

    def _quiet(self) -> None:
        self.timer = None
        if not self.data:
            self._tunnel("tcp", authority(*self.original))

    def _stalled(self) -> None:
        self.timer = None
        self._refuse(f"the first bytes did not become a ClientHello or a request in {PEEK_TIMEOUT:g}s")

    def _refuse(self, reason: str) -> None:
        self._done()
        record = AuditRecord(
            os.urandom(8).hex(), "transparent", "", self.conn.client, self.conn.server.audit.clock()
        )
        record.destination = authority(*self.original)
        record.reason = reason
        record.extra["original_destination"] = record.destination
        self.conn.server.audit.finish(record)
        self.conn.close()

    def _done(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.conn.peek = None

    def cancel(self) -> None:
        """The app went away while its first bytes were awaited."""
        self._done()

"""The tunnel after a ``101 Switching Protocols``: raw bytes both ways between the client's
socket and the upstream connection, and either end closing closes the other.

It owns both ends: the client's transport, which it writes to itself, and the upstream peer,
which it writes through (the upstream connection keeps its own idle and send deadlines). The
inbound connection hands it what the client sends, the upstream connection what the app sends;
neither writes to the other's socket.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class TunnelPeer(Protocol):
    """The upstream end of a tunnel."""

    def tunnel_write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class Tunnel:
    """One upgraded connection (see the module's docstring)."""

    def __init__(self, client: asyncio.Transport, upstream: TunnelPeer, early: bytes) -> None:
        self.client = client
        self.upstream = upstream
        self.early = early  # client bytes that came behind the upgrade request

    def start(self) -> None:
        """Both ends are joined: pass on what the client sent early."""
        early, self.early = self.early, b""
        if early:
            self.upstream.tunnel_write(early)

    def from_client(self, data: bytes) -> None:
        self.upstream.tunnel_write(data)

    def from_upstream(self, data: bytes) -> None:
        self.client.write(data)  # may hold the upstream side (the client is full)

    def client_closed(self) -> None:
        self.upstream.close()

    def upstream_closed(self) -> None:
        self.client.close()

"""Name resolution for egress destinations.

A minimal stand-in with the API the resolver's owner delivers (it replaces this file at merge):
the loop's ``getaddrinfo``, every address of the name, no cache. It fails closed: no address,
or any error, is a :class:`ResolveError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ResolveError(Exception):
    """The name could not be resolved (the egress answers 502)."""


class Resolver:
    def __init__(
        self,
        servers: Sequence[tuple[str, int]] = (),
        *,
        timeout: float = 2.0,
        max_entries: int = 1024,
        min_ttl: float = 0.0,
        max_ttl: float = 300.0,
    ) -> None:
        self.servers = tuple(servers)  # not used by this stand-in: the system resolver answers
        self.timeout = timeout

    async def resolve(self, host: str) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), self.timeout
            )
        except (OSError, TimeoutError) as error:
            raise ResolveError(f"{host} could not be resolved: {error or 'timed out'}") from None
        addresses: list[IPAddress] = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise ResolveError(f"{host} has no address")
        return addresses

"""The egress listener of one process: its socket, on top of the shared state.

The gateway makes one when the config has an ``egress:`` section and closes it on drain.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from sidegate.egress.listener import EgressConnection
from sidegate.egress.state import EgressState


class EgressServer(EgressState):
    server: asyncio.Server | None = None

    async def start(self, *, reuse_port: bool = False) -> None:
        self.server = await self.loop.create_server(
            lambda: EgressConnection(self),
            self.spec.host,
            self.spec.port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=1024,
        )
        self.own |= {(self.spec.host, self.port)}  # the port the kernel chose, for port 0

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the kernel's pick for port 0)."""
        assert self.server is not None
        server: Any = (
            self.server
        )  # uvloop's sockets are a list, not the tuple typeshed says (checked when compiled)
        return cast(int, server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close()
        for pool in self.pools.values():
            pool.retire()
        self.close_credentials()
        self.sweeper.stop()

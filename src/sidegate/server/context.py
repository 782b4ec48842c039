"""What every inbound connection of one listener shares."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from sidegate.config.snapshot import InboundLimits
from sidegate.server.timers import Sweeper

if TYPE_CHECKING:
    from sidegate.server.inbound import InboundConnection, RequestHandler


class ConnectionStats:
    """Counters the listener keeps itself (read by the metrics exporter)."""

    def __init__(self) -> None:
        self.connections_active = 0
        self.connections_total = 0
        self.protocol_errors = 0
        self.fields_dropped = 0  # request fields dropped for an underscore in the name
        self.send_timeouts = 0  # clients cut for accepting nothing for send_timeout


class ServerContext:
    """Compiled (a native class): connections read its fields on every request. The timeouts
    and the buffer bound are copied out of ``limits`` by :meth:`set_limits` for the same reason
    (a frozen dataclass attribute costs a generic look-up)."""

    limits: InboundLimits
    head_timeout: float
    body_idle: float
    keepalive_idle: float
    buffer_high_water: int
    send_timeout: float

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        handler: RequestHandler,
        sweeper: Sweeper,
        limits: InboundLimits,
    ) -> None:
        self.loop = loop
        self.handler = handler
        self.sweeper = sweeper
        self.stats = ConnectionStats()
        self.connections: set[InboundConnection] = set()
        self.draining = False
        self.set_limits(limits)

    def set_limits(self, limits: InboundLimits) -> None:
        """The limits of a new config (connections read them from here from now on)."""
        self.limits = limits
        self.head_timeout = limits.head_timeout
        self.body_idle = limits.body_idle
        self.keepalive_idle = limits.keepalive_idle
        self.buffer_high_water = limits.buffer_high_water
        self.send_timeout = limits.send_timeout

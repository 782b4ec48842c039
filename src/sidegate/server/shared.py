"""What every inbound connection of one listener shares: the loop, the request handler, the
deadline sweeper, the inbound limits, the listener's counters and its open connections."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from sidegate.config.snapshot import InboundLimits
from sidegate.server.timers import Sweeper

if TYPE_CHECKING:
    from sidegate.server.stream import RequestHandler


class ClientConnection(Protocol):
    """What the listener needs of an open connection: to ask it to finish, or close it."""

    keep_alive_wanted: bool

    def drain(self) -> None: ...
    def close(self) -> None: ...


class ConnectionStats:
    """Counters the listener keeps itself (read by the metrics exporter)."""

    def __init__(self) -> None:
        self.connections_active = 0
        self.connections_total = 0
        self.protocol_errors = 0
        self.fields_dropped = 0  # request fields dropped for an underscore in the name
        self.send_timeouts = 0  # clients cut for accepting nothing for send_timeout


class ListenerShared:
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
        self.connections: set[ClientConnection] = set()
        self.draining = False  # stopping: close each connection once its responses are done
        # drain_delay: still serving, but every response says Connection: close (read once per
        # new connection; the open ones are told directly), so clients reconnect elsewhere
        self.keep_alive_off = False
        self.set_limits(limits)

    def set_limits(self, limits: InboundLimits) -> None:
        """The limits of a new config (connections read them from here from now on)."""
        self.limits = limits
        self.head_timeout = limits.head_timeout
        self.body_idle = limits.body_idle
        self.keepalive_idle = limits.keepalive_idle
        self.buffer_high_water = limits.buffer_high_water
        self.send_timeout = limits.send_timeout

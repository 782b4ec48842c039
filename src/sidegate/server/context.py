"""What every inbound connection of one listener shares."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sidegate.config.snapshot import InboundLimits
from sidegate.server.timers import Sweeper

if TYPE_CHECKING:
    from sidegate.server.inbound import InboundConnection, RequestHandler


@dataclass(eq=False)
class ConnectionStats:
    """Counters the listener keeps itself (read by the metrics exporter)."""

    connections_active: int = 0
    connections_total: int = 0
    protocol_errors: int = 0


@dataclass(eq=False)
class ServerContext:
    loop: asyncio.AbstractEventLoop
    handler: RequestHandler
    sweeper: Sweeper
    limits: InboundLimits
    stats: ConnectionStats = field(default_factory=ConnectionStats)
    connections: set[InboundConnection] = field(default_factory=set)
    draining: bool = False

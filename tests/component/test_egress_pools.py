"""Egress keeps one keep-alive pool per checked address, and a bounded number of them."""

from __future__ import annotations

import asyncio

from sidegate.config.egress_spec import EgressSpec
from sidegate.egress.state import MAX_POOLS, EgressState


def test_pools_are_per_checked_address_and_bounded() -> None:
    loop = asyncio.new_event_loop()
    try:
        state = EgressState(loop, EgressSpec("127.0.0.1", 0, (), (), 1.0, 1000))
        first = state.pool_for("127.0.0.1", 80)
        assert state.pool_for("127.0.0.1", 80) is first
        assert state.pool_for("127.0.0.1", 81) is not first
        for n in range(MAX_POOLS + 5):
            state.pool_for(f"10.0.{n // 256}.{n % 256}", 80)
        assert len(state.pools) == MAX_POOLS
        assert first.retired and ("127.0.0.1", 80) not in state.pools
        state.sweeper.stop()
    finally:
        loop.close()

"""The limit stores behind one interface: the same behaviour from the pod's table and from Redis.

The ``rate_limit`` filter asks only :class:`~sidegate.ratelimit.store.LimitStore`; each test here
runs once against :class:`~sidegate.ratelimit.store.LocalStore` (a table of its own) and once
against :class:`~sidegate.ratelimit.pod.RedisStore` (a real ``redis-server``), reading a pending
decision as the filter does (wait on ``done``, then read ``decision``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from sidegate.policy.gcra import Decision, Gcra
from sidegate.ratelimit.pod import RedisStore
from sidegate.ratelimit.redis import RedisLimiter
from sidegate.ratelimit.shared import SharedTable
from sidegate.ratelimit.store import LimitStore, LocalStore
from support.redis import RedisServer

pytestmark = pytest.mark.timeout(60)

PATIENT = 2.0  # a busy machine must not turn a slow answer into a failure
Stores = Callable[[], LimitStore]  # one store, as seen from a new event loop


@pytest.fixture(params=["local", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "local":
        with SharedTable.create(str(tmp_path / "table"), 1024) as table:
            local = LocalStore(table)
            yield lambda: local
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    yield lambda: redis_store(server.url, PATIENT)


def redis_store(url: str, timeout: float) -> RedisStore:
    """A store on a client of its own (a client is bound to the event loop of its first use)."""
    return RedisStore(RedisLimiter(url, timeout=timeout, connect_timeout=timeout), wait=timeout * 2)


async def take(store: LimitStore, key: bytes, rule: Gcra) -> Decision | None:
    """One decision, read as the filter reads it."""
    taken = store.take(key, rule, asyncio.get_running_loop().time())
    if taken is None or isinstance(taken, Decision):
        return taken
    await asyncio.wait_for(taken.done, taken.timeout)
    return taken.decision


def take_all(stores: Stores, key: bytes, rule: Gcra, n: int) -> list[Decision]:
    """``n`` decisions in a row, on one event loop; each store decides them all."""

    async def main() -> list[Decision | None]:
        store = stores()
        try:
            return [await take(store, key, rule) for _ in range(n)]
        finally:
            if isinstance(store, RedisStore):
                await store.limiter.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        decisions = runner.run(main())
    assert all(d is not None for d in decisions), decisions
    return [d for d in decisions if d is not None]


def test_a_burst_is_allowed_then_refused_with_when_to_retry(stores: Stores) -> None:
    decisions = take_all(stores, b"store:burst", Gcra(3, 30.0), 5)
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert 9.0 < decisions[-1].retry_after <= 10.0  # one request every 10 s


def test_keys_count_apart_and_counts_last(stores: Stores) -> None:
    rule = Gcra(1, 60.0)
    assert [d.allowed for d in take_all(stores, b"store:a", rule, 2)] == [True, False]
    assert [d.allowed for d in take_all(stores, b"store:b", rule, 1)] == [True]
    assert [d.allowed for d in take_all(stores, b"store:a", rule, 1)] == [False]  # still counted


def test_a_redis_store_that_cannot_decide_says_so(redis_server: RedisServer) -> None:
    """Redis gone: no decision (None), so that the filter falls back as on_redis_failure says;
    once the client knows Redis is down, None at once, with no round trip."""
    rule = Gcra(5, 1.0)

    async def main() -> tuple[Decision | None, Decision | None, object]:
        store = redis_store(redis_server.url, 0.2)
        try:
            first = await take(store, b"store:down", rule)
            redis_server.stop()
            failed = await take(store, b"store:down", rule)
            return first, failed, store.take(b"store:down", rule, 0.0)
        finally:
            await store.limiter.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        first, failed, after = runner.run(main())
    assert first is not None and first.allowed
    assert failed is None
    assert after is None

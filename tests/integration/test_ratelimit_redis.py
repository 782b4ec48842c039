"""One limit across pods through a real redis-server: exact limits, and outages that never hang.

Every test talks to its own ``redis-server`` on a loopback port (the ``redis_server`` fixture) with
the client under test on a real event loop (uvloop, as Sidegate runs; the basic test also on asyncio's
own loop). Two :class:`RedisLimiter` instances stand for two pods: separate connections, one Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import uvloop

from sidegate.config.snapshot import RedisSpec
from sidegate.policy.gcra import Decision
from sidegate.ratelimit.pod import redis_limiter
from sidegate.ratelimit.redis import RedisLimiter, RedisUnavailable
from support.redis import RedisServer

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
# Generous for correctness tests: a busy CI machine must not turn a slow answer into a failure.
PATIENT = 2.0
# How late a timer may fire on a loaded machine, and what "at once" means (far below any timeout).
SLACK = 0.25
FAST = 0.05


def run(
    main: Callable[[], Awaitable[T]], loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
) -> T:
    async def wrapper() -> T:
        return await main()

    with asyncio.Runner(loop_factory=loop_factory or uvloop.new_event_loop) as runner:
        return runner.run(wrapper())


async def decide(limiter: RedisLimiter, key: bytes, limit: tuple[int, float, int], n: int) -> list[Decision]:
    """``n`` decisions in a row for ``key`` under ``limit`` (requests, per, burst)."""
    return [await limiter.gcra(key, *limit) for _ in range(n)]


async def until_healthy(limiter: RedisLimiter, within: float) -> float:
    """Seconds it took for the limiter to report healthy again (fails the test past ``within``)."""
    start = time.monotonic()
    while not limiter.healthy():
        assert time.monotonic() - start < within, "the limiter did not reconnect"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def unavailable_within(limiter: RedisLimiter, key: bytes) -> float:
    """Seconds a decision took to fail with RedisUnavailable."""
    start = time.monotonic()
    with pytest.raises(RedisUnavailable):
        await limiter.gcra(key, 5, 1.0, 5)
    return time.monotonic() - start


def command_stats(server: RedisServer) -> dict[str, dict[str, int]]:
    """INFO commandstats as {"evalsha": {"calls": 4, "failed_calls": 1, ...}, ...} (counters only)."""
    out: dict[str, dict[str, int]] = {}
    for line in server.command("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line.removeprefix("cmdstat_").split(":", 1)
            pairs = (field.split("=") for field in fields.split(","))
            out[name] = {key: int(value) for key, value in pairs if value.isdigit()}
    return out


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_limit_holds_and_says_when_to_retry(redis_server: RedisServer, loop: str) -> None:
    async def main() -> list[Decision]:
        limiter = RedisLimiter(redis_server.url, timeout=PATIENT, connect_timeout=0.5)
        try:
            return await decide(limiter, b"rl:client-1", (5, 10.0, 5), 7)
        finally:
            await limiter.close()

    decisions = run(main, uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop)
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0, 0]
    assert {d.limit for d in decisions} == {5}
    refused = decisions[-1]
    assert 1.5 < refused.retry_after <= 2.0  # one request every 2 s
    assert 9.5 < refused.reset_after <= 10.0
    # Idle keys expire: the key lives no longer than the limit needs to be idle again.
    assert 9500 < redis_server.command("PTTL", "rl:client-1") <= 10_000


def test_the_rate_follows_the_redis_clock(redis_server: RedisServer) -> None:
    async def main() -> tuple[Decision, Decision, Decision]:
        limiter = RedisLimiter(redis_server.url, timeout=PATIENT, connect_timeout=0.5)
        try:
            first = await limiter.gcra(b"rl:paced", 10, 1.0, 1)
            second = await limiter.gcra(b"rl:paced", 10, 1.0, 1)
            await asyncio.sleep(second.retry_after + 0.01)
            return first, second, await limiter.gcra(b"rl:paced", 10, 1.0, 1)
        finally:
            await limiter.close()

    first, second, third = run(main)
    assert (first.allowed, second.allowed, third.allowed) == (True, False, True)
    assert 0.05 < second.retry_after <= 0.1


def test_two_pods_share_one_limit(redis_server: RedisServer) -> None:
    async def main() -> tuple[list[Decision], list[tuple[str, bool]]]:
        pods = [RedisLimiter(redis_server.url, timeout=PATIENT, connect_timeout=0.5) for _ in range(2)]
        try:
            # Both pods at once, 30 requests each against a burst of 20.
            calls = [pods[i % 2].gcra(b"rl:tenant-a", 20, 60.0, 20) for i in range(60)]
            together = list(await asyncio.gather(*calls))
            # Taking turns: whoever asks, the other one's requests count.
            turns = []
            for i in range(6):
                decision = await pods[i % 2].gcra(b"rl:tenant-b", 4, 60.0, 4)
                turns.append((f"pod{i % 2}", decision.allowed))
            return together, turns
        finally:
            for pod in pods:
                await pod.close()

    together, turns = run(main)
    assert sum(d.allowed for d in together) == 20
    assert turns == [("pod0", True), ("pod1", True)] * 2 + [("pod0", False), ("pod1", False)]


def test_concurrent_decisions_are_pipelined_and_answered_in_order(redis_server: RedisServer) -> None:
    async def main() -> list[Decision]:
        limiter = RedisLimiter(redis_server.url, timeout=PATIENT, connect_timeout=0.5)
        try:
            return list(
                await asyncio.gather(*(limiter.gcra(b"rl:busy", 1000, 60.0, 1000) for _ in range(300)))
            )
        finally:
            await limiter.close()

    decisions = run(main)
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == list(range(999, 699, -1))


def test_a_forgotten_script_is_sent_again(redis_server: RedisServer) -> None:
    async def main() -> list[Decision]:
        limiter = RedisLimiter(redis_server.url, timeout=PATIENT, connect_timeout=0.5)
        try:
            first = await limiter.gcra(b"rl:flush", 3, 60.0, 3)
            redis_server.command("SCRIPT", "FLUSH")  # as after a failover to a fresh replica
            return [first, *await decide(limiter, b"rl:flush", (3, 60.0, 3), 3)]
        finally:
            await limiter.close()

    assert [d.allowed for d in run(main)] == [True, True, True, False]
    stats = command_stats(redis_server)
    # One EVALSHA answered NOSCRIPT, one EVAL sent the script again, then EVALSHA worked again.
    assert (stats["eval"]["calls"], stats["eval"]["failed_calls"]) == (1, 0)
    assert (stats["evalsha"]["calls"], stats["evalsha"]["failed_calls"]) == (4, 1)


def test_redis_down_fails_fast_and_recovers_when_it_is_back(redis_server: RedisServer) -> None:
    timeout = 0.2

    async def main() -> None:
        limiter = RedisLimiter(redis_server.url, timeout=timeout, connect_timeout=0.5)
        try:
            assert (await limiter.gcra(b"rl:k", 5, 1.0, 5)).allowed
            redis_server.stop()
            assert await unavailable_within(limiter, b"rl:k") < timeout + SLACK
            assert not limiter.healthy()
            # Known to be down: the next requests do not even wait for the timeout.
            assert await unavailable_within(limiter, b"rl:k") < FAST
            redis_server.start()
            assert await until_healthy(limiter, within=8.0) < 8.0
            assert (await limiter.gcra(b"rl:k", 5, 1.0, 5)).remaining == 4  # a fresh Redis, a fresh limit
        finally:
            await limiter.close()

    run(main)


def test_no_redis_at_all_fails_within_the_timeout(redis_server: RedisServer) -> None:
    redis_server.stop()
    timeout = 0.2

    async def main() -> tuple[float, float, bool]:
        limiter = RedisLimiter(redis_server.url, timeout=timeout, connect_timeout=0.5)
        try:
            first = await unavailable_within(limiter, b"rl:k")
            second = await unavailable_within(limiter, b"rl:k")
            return first, second, limiter.healthy()
        finally:
            await limiter.close()

    first, second, healthy = run(main)
    assert first < timeout + SLACK
    assert second < FAST
    assert not healthy


def test_a_frozen_redis_times_out_instead_of_hanging(redis_server: RedisServer) -> None:
    timeout = 0.2

    async def main() -> None:
        limiter = RedisLimiter(redis_server.url, timeout=timeout, connect_timeout=0.3)
        try:
            assert (await limiter.gcra(b"rl:k", 5, 1.0, 5)).allowed
            redis_server.pause()  # SIGSTOP: the socket stays open, nothing answers
            try:
                took = await unavailable_within(limiter, b"rl:k")
                assert timeout / 2 <= took < timeout + SLACK  # it did wait for the answer
                assert not limiter.healthy()
                # Reconnecting does not count while Redis is frozen, though its kernel accepts.
                await asyncio.sleep(1.2)
                assert not limiter.healthy()
                assert await unavailable_within(limiter, b"rl:k") < FAST
            finally:
                redis_server.resume()
            await until_healthy(limiter, within=8.0)
            assert (await limiter.gcra(b"rl:k", 5, 1.0, 5)).allowed
        finally:
            await limiter.close()

    run(main)


def test_password_and_database_come_from_the_url(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="s3cret:/@pass")
    server.start()
    try:

        async def main() -> tuple[bool, str, bool]:
            good = RedisLimiter(server.url + "/3", timeout=PATIENT, connect_timeout=0.5)
            bad = RedisLimiter(
                f"redis://:wrong@127.0.0.1:{server.port}", timeout=PATIENT, connect_timeout=0.5
            )
            try:
                allowed = (await good.gcra(b"rl:in-db-3", 5, 60.0, 5)).allowed
                with pytest.raises(RedisUnavailable) as refused:
                    await bad.gcra(b"rl:k", 5, 1.0, 5)
                return allowed, str(refused.value), bad.healthy()
            finally:
                await good.close()
                await bad.close()

        allowed, why, healthy = run(main)
        assert allowed
        assert "AUTH" in why and "s3cret" not in why and "wrong" not in why
        assert not healthy
        assert server.command("EXISTS", "rl:in-db-3", db=3) == 1
        assert server.command("EXISTS", "rl:in-db-3") == 0
    finally:
        server.stop()


def test_a_closed_limiter_refuses_and_bad_urls_are_rejected(redis_server: RedisServer) -> None:
    async def main() -> None:
        limiter = RedisLimiter(redis_server.url, timeout=PATIENT, connect_timeout=0.5)
        assert (await limiter.gcra(b"rl:k", 5, 1.0, 5)).allowed
        await limiter.close()
        assert not limiter.healthy()
        assert await unavailable_within(limiter, b"rl:k") < FAST

    run(main)
    for url in [
        "http://127.0.0.1:6379",
        "unix:///run/redis.sock",
        "redis://127.0.0.1:port",
        "redis://:6379",
        "redis://h/x",
    ]:
        with pytest.raises(ValueError, match="redis url"):
            RedisLimiter(url, timeout=0.05, connect_timeout=0.5)


def test_the_password_key_may_hold_characters_that_urls_reserve(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="p@ss/w:rd#1")
    server.start()
    try:

        async def main() -> bool:
            spec = RedisSpec(
                url=f"redis://127.0.0.1:{server.port}/2", password="p@ss/w:rd#1", timeout=PATIENT
            )
            limiter = redis_limiter(spec)  # as `redis: {url: ..., password: ...}` configures it
            try:
                return (await limiter.gcra(b"rl:pw", 5, 60.0, 5)).allowed
            finally:
                await limiter.close()

        assert run(main)
        assert server.command("EXISTS", "rl:pw", db=2) == 1
    finally:
        server.stop()

"""A background request through an endpoint's pool, on a real event loop against a scripted
loopback app: the bounded, buffered response, the connection given back, and failures as None."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
import uvloop

from sidegate.config.snapshot import Endpoint
from sidegate.http.messages import Fetched
from sidegate.server.timers import Sweeper
from sidegate.upstream.fetch import fetch
from sidegate.upstream.pool import EndpointPool

HEAD = b"GET /thing HTTP/1.1\r\nHost: app\r\n\r\n"
Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Run:
    results: list[Fetched | None]
    accepted: int  # connections the app accepted
    connects: int  # connections the pool opened
    idle: int  # connections idle in the pool after the last fetch
    failure: str  # the pool's last failure kind


def run(
    answer: Answer, *, fetches: int = 1, timeout: float = 2.0, max_body: int = 1000, dead: bool = False
) -> Run:
    """``fetches`` requests one after the other through one pool to a server that calls
    ``answer`` for each request head."""
    accepted = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> Run:
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        if dead:
            server.close()
            await server.wait_closed()
        pool = EndpointPool(loop, Endpoint("127.0.0.1", port), Sweeper(loop))
        results: list[Fetched | None] = []
        try:
            for _ in range(fetches):
                got: asyncio.Future[Fetched | None] = loop.create_future()
                fetch(
                    pool,
                    HEAD,
                    connect_timeout=1.0,
                    timeout=timeout,
                    max_body=max_body,
                    clock=time.time,
                    done=got.set_result,
                )
                results.append(await asyncio.wait_for(got, 5))
            await asyncio.sleep(0.01)  # a connection closed by the app is seen closed
            return Run(results, accepted[0], pool.connects, len(pool.idle), pool.failure_kind)
        finally:
            server.close()

    return uvloop.run(main())


def answer_with(response: bytes) -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(response)
        await writer.drain()

    return answer


OK = b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "a"\r\n\r\nhello'


def test_the_response_is_reported_whole_and_the_connection_reused() -> None:
    done = run(answer_with(OK), fetches=3)
    for result in done.results:
        assert result is not None
        status, headers, body, request_time, response_time = result
        assert (status, body) == (200, b"hello")
        assert headers == [(b"ETag", b'"a"')]  # framing fields are the connection's business
        assert request_time <= response_time
    assert (done.accepted, done.connects, done.idle) == (1, 1, 1)


def test_a_chunked_response_is_joined() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    (result,) = run(answer_with(chunked)).results
    assert result is not None and result[2] == b"abcde"


def test_connection_close_is_not_given_back() -> None:
    closing = b'HTTP/1.1 304 Not Modified\r\nConnection: close\r\nETag: "a"\r\n\r\n'
    done = run(answer_with(closing), fetches=2)
    assert [r[0] if r else None for r in done.results] == [304, 304]
    assert (done.accepted, done.connects, done.idle) == (2, 2, 0)


def test_a_body_over_the_limit_is_none() -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000
    done = run(answer_with(big), max_body=1000)
    assert done.results == [None] and done.idle == 0


def test_a_slow_app_is_none_within_the_timeout() -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    began = time.monotonic()
    done = run(never, timeout=0.3)
    assert done.results == [None] and time.monotonic() - began < 2 and done.idle == 0


@pytest.mark.parametrize(
    "response", [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", b"garbage\r\n\r\n"]
)
def test_a_broken_response_is_none(response: bytes) -> None:
    async def then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(response)
        await writer.drain()
        writer.close()

    done = run(then_close)
    assert done.results == [None] and done.failure in {"reset", "protocol_error"}


def test_an_unreachable_app_is_none() -> None:
    done = run(answer_with(OK), dead=True)
    assert done.results == [None] and done.failure == "connect_refused"


def test_a_pooled_connection_the_app_dropped_is_retried_on_a_new_one() -> None:
    served = [0]

    async def drop_the_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served[0] += 1
        if served[0] == 2:  # the reused connection dies under the second request
            writer.transport.abort()
            return
        writer.write(OK)
        await writer.drain()

    done = run(drop_the_second, fetches=2)
    assert [r[2] if r else None for r in done.results] == [b"hello", b"hello"]
    assert (done.accepted, done.connects) == (2, 2)

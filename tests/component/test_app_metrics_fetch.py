"""Scraping the app's metrics on a real event loop: a scripted loopback server answers each way an
app might (Content-Length, chunked, close-delimited, too big, too slow, not there at all)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from sidegate.observe.app_metrics import MAX_BYTES, AppScrape, scrape_app

METRICS = b"# HELP app_up Up.\n# TYPE app_up gauge\napp_up 1\n"
Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def scrape_with(
    answer: Answer, *, timeout: float = 1.0, openmetrics: bool = False
) -> tuple[AppScrape, bytes]:
    """Serve one connection with ``answer``; scrape it. Returns the scrape and the request head."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        try:
            await answer(reader, writer)
        finally:
            writer.close()

    async def main() -> AppScrape:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await scrape_app(f"http://127.0.0.1:{port}/metrics?x=1", timeout, openmetrics=openmetrics)
        finally:
            server.close()

    result = uvloop.run(main())
    return result, heads[0] if heads else b""


def respond(head: bytes, body: bytes = b"") -> Answer:
    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head + body)
        await writer.drain()

    return answer


def lines(scrape: AppScrape) -> list[str]:
    return [line for family in scrape.families for line in family.lines]


def test_content_length_answer_and_the_request_sent() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %d\r\n\r\n"
    scrape, request = scrape_with(respond(head % len(METRICS), METRICS))
    assert scrape.success and scrape.error == ""
    assert lines(scrape) == ["# HELP app_up Up.", "# TYPE app_up gauge", "app_up 1"]
    assert request.startswith(b"GET /metrics?x=1 HTTP/1.1\r\n")
    assert b"\r\nAccept: text/plain;version=0.0.4," in request
    assert b"\r\nConnection: close\r\n" in request


def test_openmetrics_is_asked_for_when_served() -> None:
    body = b"# TYPE app_up gauge\napp_up 1\n# EOF\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0\r\n"
    head += b"Content-Length: %d\r\n\r\n" % len(body)
    scrape, request = scrape_with(respond(head, body), openmetrics=True)
    assert b"\r\nAccept: application/openmetrics-text;version=1.0.0," in request
    assert lines(scrape) == ["# TYPE app_up gauge", "app_up 1"]  # the app's EOF is not kept


def test_chunked_and_close_delimited_answers() -> None:
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (METRICS[:10], METRICS[10:])) + b"0\r\n\r\n"
    scrape, _ = scrape_with(respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", chunked))
    assert scrape.success and "app_up 1" in lines(scrape)
    scrape, _ = scrape_with(respond(b"HTTP/1.0 200 OK\r\n\r\n", METRICS))
    assert scrape.success and "app_up 1" in lines(scrape)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (respond(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"), "500"),
        (respond(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BYTES + 1)), "more than"),
        (respond(b"HTTP/1.1 200 OK\r\n\r\n", b"x" * (MAX_BYTES + 10)), "more than"),
        (respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b"app_up 1\n"), "IncompleteRead"),
        (respond(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n", b'a{b="c} 1'), "label"),
        (respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"\xff\xfe"), "Unicode"),
    ],
    ids=["status", "declared-too-big", "too-big", "cut-short", "malformed", "not-utf8"],
)
def test_a_bad_answer_is_a_failed_scrape(answer: Answer, error: str) -> None:
    scrape, _ = scrape_with(answer)
    assert not scrape.success and scrape.families == ()
    assert error in scrape.error


def test_a_slow_app_is_given_up_on_after_the_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        await reader.read()  # says nothing until the scraper hangs up

    scrape, _ = scrape_with(silent, timeout=0.2)
    assert not scrape.success and "Timeout" in scrape.error
    assert 0.15 <= scrape.seconds < 1.0


def test_no_app_listening_is_a_failed_scrape() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        scrape = asyncio.run(scrape_app(f"http://127.0.0.1:{port}/metrics", 1.0, openmetrics=False))
    assert not scrape.success and "ConnectionRefused" in scrape.error

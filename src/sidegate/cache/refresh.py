"""Background revalidation (``stale-while-revalidate``): one request to the app, off any client.

A client that may be served a stale entry gets it at once; the cache filter then asks
:func:`start_refresh` to fetch the URL again (conditionally, with the entry's validators) on a
connection of its own, and hands the answer to a callback that stores it. The fetch is bounded in
time and size and never raises: a failure only leaves the stale entry as it was.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httptools

from sidegate.http.messages import Headers

log = logging.getLogger("sidegate.cache")

#: (status, headers, body, request_time, response_time) of a fetched response
Fetched = tuple[int, Headers, bytes, float, float]

_TASKS: set[asyncio.Task[None]] = set()


def start_refresh(
    host: str,
    port: int,
    request_head: bytes,
    *,
    timeout: float,
    max_body: int,
    clock: Callable[[], float],
    done: Callable[[Fetched | None], None],
) -> None:
    """Fetch in the background; ``done`` gets the response, or None if it failed."""

    async def run() -> None:
        result: Fetched | None = None
        try:
            result = await asyncio.wait_for(fetch(host, port, request_head, max_body, clock), timeout or None)
        except (OSError, TimeoutError, ValueError, httptools.HttpParserError) as exc:
            log.info(
                "cache: background revalidation of %s:%d failed: %s", host, port, exc or type(exc).__name__
            )
        try:
            done(result)
        except Exception:  # a bug in the callback must not kill the loop's task silently
            log.exception("cache: storing a revalidated response failed")

    task = asyncio.get_running_loop().create_task(run())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def fetch(
    host: str, port: int, request_head: bytes, max_body: int, clock: Callable[[], float]
) -> Fetched:
    """Send ``request_head`` (a complete head asking ``Connection: close``) and read the answer."""
    request_time = clock()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request_head)
        sink = _Sink()
        parser = httptools.HttpResponseParser(sink)
        received = 0
        while not sink.finished():
            data = await reader.read(65536)
            if not data:
                parser.feed_data(b"")  # close-delimited bodies end here
                if not sink.finished():
                    raise ValueError("the app closed the connection before the response ended")
                break
            received += len(data)
            if received > max_body + 65536:
                raise ValueError(f"response larger than {max_body} bytes")
            parser.feed_data(data)
        return parser.get_status_code(), sink.headers, b"".join(sink.body), request_time, clock()
    finally:
        writer.close()


class _Sink:
    """httptools callbacks: collect the head fields and the body."""

    def __init__(self) -> None:
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    def finished(self) -> bool:
        return self.complete

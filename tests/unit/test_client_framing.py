"""The HTTP/1.1 client framing decisions (server/framing.py): pure, so every rule is checked here
without a socket."""

from __future__ import annotations

import pytest

from sidegate.server.framing import (
    BODILESS,
    CHUNKED,
    LENGTH,
    UNTIL_CLOSE,
    body_framing,
    head_end,
    keep_open,
)


@pytest.mark.parametrize(
    ("method", "version", "status", "has_length", "expected"),
    [
        (b"GET", b"1.1", 200, True, LENGTH),
        (b"GET", b"1.0", 200, True, LENGTH),
        (b"HEAD", b"1.1", 200, False, BODILESS),
        (b"GET", b"1.1", 204, False, BODILESS),
        (b"GET", b"1.1", 304, False, BODILESS),
        (b"GET", b"1.1", 200, False, CHUNKED),
        (b"GET", b"1.0", 200, False, UNTIL_CLOSE),
    ],
)
def test_how_a_response_body_is_delimited(
    method: bytes, version: bytes, status: int, has_length: bool, expected: int
) -> None:
    assert body_framing(method, version, status, has_length) == expected


def test_the_connection_stays_open_only_when_everyone_agrees() -> None:
    assert keep_open(True, True)
    assert not keep_open(False, True)  # the client asked to close
    assert not keep_open(True, False)  # the connection is closing or draining
    assert not keep_open(True, True, asked_close=True)  # the answer closes (e.g. a 413)
    assert not keep_open(True, True, framing=UNTIL_CLOSE)  # the close ends the body
    assert keep_open(True, True, framing=CHUNKED)


def test_the_end_of_a_forwarded_head_says_what_the_client_needs() -> None:
    assert head_end(False, b"1.1") == b"Connection: close\r\n\r\n"
    assert head_end(True, b"1.1") == b"\r\n"
    assert head_end(True, b"1.0") == b"Connection: keep-alive\r\n\r\n"
    assert head_end(False, b"1.0") == b"Connection: close\r\n\r\n"

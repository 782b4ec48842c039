"""The request a health check sends: a plain GET the strictest app accepts."""

from __future__ import annotations

from sidegate.upstream.health import check_head


def test_the_check_request() -> None:
    assert check_head("/healthz?deep=1", "127.0.0.1:3000") == (
        b"GET /healthz?deep=1 HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n"
        b"User-Agent: sidegate-health-check\r\nAccept: */*\r\n\r\n"
    )

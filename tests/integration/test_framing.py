"""Strict request framing (RFC 9112), byte for byte, against a real Sidegate and a recording app.

Every malformed request must be answered by Sidegate itself with the right status, a JSON error
body and ``Connection: close``; the socket must then be closed; and the app must receive nothing
of it (no bytes at all: not a head, not a partial body).
"""

from __future__ import annotations

import time

import pytest

from support.gateway import GatewayFactory, GatewayProcess, OriginProcess, RawClient, Response, get

pytestmark = pytest.mark.timeout(30)

H = b"Host: example.com\r\n"


@pytest.fixture(scope="module")
def gw(gateway_module: GatewayFactory) -> GatewayProcess:
    return gateway_module()


@pytest.fixture
def warm(gw: GatewayProcess, origin: OriginProcess) -> OriginProcess:
    """The origin, reset, with an idle pooled upstream connection in Sidegate (the worst case:
    a head could be written to the app at once, without waiting for a connect)."""
    with RawClient(gw.port) as client:
        assert client.request(get("/warm")).status == 200
    origin.reset()
    return origin


def expect_rejected(
    gw: GatewayProcess, origin: OriginProcess, data: bytes, status: int, kind: str
) -> Response:
    """Send ``data``; the answer is ``status`` with Connection: close, then the socket closes,
    and the origin received no byte of it."""
    with RawClient(gw.port) as client:
        client.send(data)
        response = client.read_response(timeout=5)
        assert response.status == status, (response, data)
        assert (response.headers.get("connection") or "").lower() == "close", response
        assert (response.headers.get("content-type") or "").startswith("application/json"), response
        body = response.json()
        assert body["status"] == status and body["error"] == kind, body
        assert body["detail"], body
        assert client.is_closed(3.0), f"socket still open after {status}; extra bytes {client.buf!r}"
        assert client.buf == b"", f"bytes after the error response: {client.buf!r}"
    time.sleep(0.05)  # anything forwarded would have reached the origin by now
    assert origin.all_bytes() == b"", f"the app received bytes of a rejected request: {origin.all_bytes()!r}"
    return response


# (id, request bytes, status, error kind)
HEAD_CASES: list[tuple[str, bytes, int, str]] = [
    # Content-Length and Transfer-Encoding
    (
        "cl-and-te",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "te-and-cl",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "duplicate-cl-same",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
        "bad_request",
    ),
    (
        "duplicate-cl-different",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
        "bad_request",
    ),
    ("cl-plus-sign", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc", 400, "bad_request"),
    ("cl-minus-sign", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -3\r\n\r\nabc", 400, "bad_request"),
    ("cl-hex", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x3\r\n\r\nabc", 400, "bad_request"),
    ("cl-list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc", 400, "bad_request"),
    (
        "cl-inner-space",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 0\r\n\r\n0123456789",
        400,
        "bad_request",
    ),
    ("cl-empty", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\n", 400, "bad_request"),
    (
        "cl-overflow",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\nabc",
        400,
        "bad_request",
    ),
    # obfuscated Transfer-Encoding: chunked is not the final coding (RFC 9112 6.3: 400)
    (
        "te-xchunked",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "te-chunked-identity",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "te-duplicated",
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "te-space-before-colon",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "cl-space-before-colon",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length : 3\r\n\r\nabc",
        400,
        "bad_request",
    ),
    (
        "te-vertical-tab",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    ("cl-vertical-tab", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\x0b\r\n\r\nabc", 400, "bad_request"),
    # a coding Sidegate does not implement, with chunked last: framing is clear, coding unsupported
    (
        "te-gzip-chunked",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        "not_implemented",
    ),
    (
        "te-http10",
        b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    # line endings
    ("bare-lf-request-line", b"GET / HTTP/1.1\n" + H + b"\r\n", 400, "bad_request"),
    ("bare-lf-header", b"GET / HTTP/1.1\r\nHost: example.com\nX-A: 1\r\n\r\n", 400, "bad_request"),
    ("bare-lf-end-of-head", b"GET / HTTP/1.1\r\n" + H + b"\n", 400, "bad_request"),
    ("bare-cr-request-line", b"GET / HTTP/1.1\r" + H + b"\r\n", 400, "bad_request"),
    ("bare-cr-header", b"GET / HTTP/1.1\r\nHost: example.com\rX-A: 1\r\n\r\n", 400, "bad_request"),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: one\r\n two\r\n\r\n", 400, "bad_request"),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\n" + H + b"X-A: one\r\n\ttwo\r\n\r\n", 400, "bad_request"),
    ("first-header-folded", b"GET / HTTP/1.1\r\n X-A: 1\r\n" + H + b"\r\n", 400, "bad_request"),
    # header names
    ("name-with-space", b"GET / HTTP/1.1\r\n" + H + b"X Bad: 1\r\n\r\n", 400, "bad_request"),
    ("name-with-at", b"GET / HTTP/1.1\r\n" + H + b"X@Bad: 1\r\n\r\n", 400, "bad_request"),
    ("name-empty", b"GET / HTTP/1.1\r\n" + H + b": nameless\r\n\r\n", 400, "bad_request"),
    ("name-without-colon", b"GET / HTTP/1.1\r\n" + H + b"X-No-Colon\r\n\r\n", 400, "bad_request"),
    # header values
    ("value-nul", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400, "bad_request"),
    ("value-cr", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", 400, "bad_request"),
    ("value-ctl-01", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", 400, "bad_request"),
    ("value-ctl-1f", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x1fb\r\n\r\n", 400, "bad_request"),
    ("value-del", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n", 400, "bad_request"),
    # Host
    ("host-missing", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, "bad_request"),
    ("host-duplicate", b"GET / HTTP/1.1\r\n" + H + b"Host: other.example\r\n\r\n", 400, "bad_request"),
    ("host-duplicate-same", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", 400, "bad_request"),
    ("host-list", b"GET / HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n", 400, "bad_request"),
    ("host-empty", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400, "bad_request"),
    ("host-with-space", b"GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n", 400, "bad_request"),
    ("host-with-slash", b"GET / HTTP/1.1\r\nHost: example.com/evil\r\n\r\n", 400, "bad_request"),
    ("host-with-userinfo", b"GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n", 400, "bad_request"),
    ("host-bad-port", b"GET / HTTP/1.1\r\nHost: example.com:80x\r\n\r\n", 400, "bad_request"),
    ("host-ipv6-unclosed", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400, "bad_request"),
    # request line
    ("http-2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505, "version_not_supported"),
    ("bad-method-char", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400, "bad_request"),
    ("lowercase-version", b"GET / http/1.1\r\n" + H + b"\r\n", 400, "bad_request"),
    ("http-0.9", b"GET /\r\n" + H + b"\r\n", 400, "bad_request"),
    ("target-relative", b"GET foo/bar HTTP/1.1\r\n" + H + b"\r\n", 400, "bad_request"),
    ("target-asterisk-get", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400, "bad_request"),
    ("target-authority-get", b"GET example.com:80 HTTP/1.1\r\n" + H + b"\r\n", 400, "bad_request"),
    ("target-with-space", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400, "bad_request"),
    (
        "connect",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        405,
        "method_not_allowed",
    ),
]


@pytest.mark.parametrize(
    ("data", "status", "kind"), [c[1:] for c in HEAD_CASES], ids=[c[0] for c in HEAD_CASES]
)
def test_rejected_request(
    gw: GatewayProcess, warm: OriginProcess, data: bytes, status: int, kind: str
) -> None:
    expect_rejected(gw, warm, data, status, kind)


CHUNK_HEAD = b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
CHUNK_CASES: list[tuple[str, bytes]] = [
    ("size-not-hex", b"zz\r\nabc\r\n0\r\n\r\n"),
    ("size-overflow", b"ffffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
    ("size-sign", b"+3\r\nabc\r\n0\r\n\r\n"),
    ("size-empty", b"\r\nabc\r\n0\r\n\r\n"),
    ("data-without-crlf", b"3\r\nabcXX0\r\n\r\n"),
    ("data-longer-than-size", b"3\r\nabcdef\r\n0\r\n\r\n"),
    ("size-bare-lf", b"3\nabc\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("body", [c[1] for c in CHUNK_CASES], ids=[c[0] for c in CHUNK_CASES])
def test_bad_chunk_in_same_write(gw: GatewayProcess, warm: OriginProcess, body: bytes) -> None:
    """Head and a broken chunked body arrive together: 400, close, and the app sees nothing."""
    expect_rejected(gw, warm, CHUNK_HEAD + body, 400, "bad_request")


def test_bad_chunk_after_streaming_started(gw: GatewayProcess, warm: OriginProcess) -> None:
    """A body that turns bad after the head was forwarded: the client gets 400 and a close, and
    the app never receives a complete request (no last chunk: its connection is cut)."""
    with RawClient(gw.port) as client:
        client.send(CHUNK_HEAD + b"3\r\nabc\r\n")
        time.sleep(0.3)
        client.send(b"zz\r\nnot hex\r\n0\r\n\r\n")
        response = client.read_response(timeout=5)
        assert response.status == 400
        assert (response.headers.get("connection") or "").lower() == "close"
        assert client.is_closed(3.0)
    time.sleep(0.2)
    assert warm.received() == [], "the app received a complete request from a broken chunked body"
    assert b"0\r\n\r\n" not in warm.all_bytes()


def test_pipelined_valid_then_invalid(gw: GatewayProcess, warm: OriginProcess) -> None:
    """The valid first request is answered normally, then 400 and close; the app saw only the first."""
    first = get("/first")
    bad = b"GET /second HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    with RawClient(gw.port) as client:
        client.send(first + bad)
        one = client.read_response(timeout=5)
        assert one.status == 200
        assert one.json()["path"] == "/first"
        two = client.read_response(timeout=5)
        assert two.status == 400
        assert (two.headers.get("connection") or "").lower() == "close"
        assert two.json()["error"] == "bad_request"
        assert client.is_closed(3.0)
    time.sleep(0.05)
    received = warm.received()
    assert [r.target for r in received] == ["/first"]
    assert warm.all_bytes() == received[0].raw


def test_pipelined_three_valid_then_invalid_keeps_order(gw: GatewayProcess, warm: OriginProcess) -> None:
    data = get("/a") + get("/b") + get("/c") + b"GET /d HTTP/1.1\r\nHost: a\r\nX@: 1\r\n\r\n"
    with RawClient(gw.port) as client:
        client.send(data)
        paths = [client.read_response(timeout=5).json()["path"] for _ in range(3)]
        assert paths == ["/a", "/b", "/c"]
        assert client.read_response(timeout=5).status == 400
        assert client.is_closed(3.0)
    assert [r.target for r in warm.received()] == ["/a", "/b", "/c"]


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length:   3  \r\n",
        b"Content-Length:\t3\r\n",
        b"Transfer-Encoding:\tchunked\r\n",
        b"transfer-encoding: CHUNKED\r\n",
    ],
    ids=["cl-spaces", "cl-tab", "te-tab", "te-case"],
)
def test_valid_optional_whitespace_and_case_accepted(
    gw: GatewayProcess, origin: OriginProcess, framing: bytes
) -> None:
    """Strict is not fussy: OWS around values and case-insensitive names/codings are valid."""
    body = b"3\r\nabc\r\n0\r\n\r\n" if b"chunked" in framing.lower() else b"abc"
    with RawClient(gw.port) as client:
        response = client.request(b"POST /echo HTTP/1.1\r\n" + H + framing + b"\r\n" + body)
    assert response.status == 200 and response.body == b"abc"
    assert origin.received()[0].body == b"abc"


def test_protocol_error_carries_request_id(gw: GatewayProcess, warm: OriginProcess) -> None:
    """Every error Sidegate answers itself carries an X-Request-Id (to match it with the logs)."""
    response = expect_rejected(gw, warm, b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, "bad_request")
    assert response.headers.get("x-request-id"), response.headers


def test_gateway_still_serves_after_errors(gw: GatewayProcess, origin: OriginProcess) -> None:
    """A burst of broken requests does not disturb the next good one."""
    for _, data, _, _ in HEAD_CASES[:10]:
        with RawClient(gw.port) as client:
            client.send(data)
            client.read_until_close(5)
    with RawClient(gw.port) as client:
        response = client.request(get("/after"))
        assert response.status == 200 and response.json()["path"] == "/after"

"""Legal framing Sidegate used to refuse, and the bounds that came with reading it ourselves.

Through a real Sidegate and the recording origin, byte for byte on raw sockets: optional
whitespace after field values and bad whitespace and quoted strings in chunk extensions are
accepted and normalised (the app sees the bare value; extensions are not forwarded); a chunk line
over the listener's ``chunk_line`` bound is refused (400 and close; 502 when the upstream sends
one); a fragment in the request-target and HTTP/0.9 request lines are 400s.
"""

from __future__ import annotations

import base64
import time

import pytest

from integration.test_framing import CHUNK_HEAD, H, expect_rejected
from support.gateway import GatewayFactory, GatewayProcess, OriginProcess, RawClient, get

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def gw(gateway_module: GatewayFactory) -> GatewayProcess:
    return gateway_module(limits={"chunk_line": "64B"})


def fields_of(raw: bytes) -> list[bytes]:
    """The field lines of a request as the app received it (exact bytes, no CRLF)."""
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]


# --- optional whitespace around field values ---------------------------------------------------


@pytest.mark.parametrize("ows", [b" ", b"\t", b"  \t ", b"\t\t"], ids=["space", "tab", "mixed", "tabs"])
def test_transfer_encoding_chunked_followed_by_whitespace_is_plain_chunked(
    gw: GatewayProcess, origin: OriginProcess, ows: bytes
) -> None:
    data = (
        b"POST /echo HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked"
        + ows
        + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    with RawClient(gw.port) as client:
        response = client.request(data)
    assert response.status == 200 and response.body == b"abc"
    (received,) = origin.received()
    assert received.body == b"abc" and received.chunked
    assert b"Transfer-Encoding: chunked" in fields_of(received.raw)


@pytest.mark.parametrize("ows", [b" ", b"\t", b" \t"], ids=["space", "tab", "mixed"])
def test_trailing_whitespace_is_not_part_of_any_value(
    gw: GatewayProcess, origin: OriginProcess, ows: bytes
) -> None:
    """Host, Content-Length, Expect and plain fields: each read (and forwarded) as the bare value."""
    data = (
        b"POST /continue HTTP/1.1\r\nHost: example.com" + ows + b"\r\n"
        b"Content-Length: 3" + ows + b"\r\nExpect: 100-continue" + ows + b"\r\n"
        b"X-Plain:" + ows + b"some value" + ows + b"\r\n\r\n"
    )
    with RawClient(gw.port) as client:
        client.send(data)
        interim = client.read_response(timeout=5)
        assert interim.status == 100  # the app saw a valid Expect and answered it
        client.send(b"abc")
        response = client.read_final(timeout=5)
    assert response.status == 200 and response.json() == {"body_len": 3, "continue_sent": True}
    lines = fields_of(origin.received()[0].raw)
    assert b"Host: example.com" in lines
    assert b"Expect: 100-continue" in lines
    assert b"X-Plain: some value" in lines
    assert b"Content-Length: 3" in lines


def test_connection_close_followed_by_whitespace_closes(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(b"GET /a HTTP/1.1\r\n" + H + b"Connection: close \t\r\n\r\n")
        assert response.status == 200
        assert (response.headers.get("connection") or "").lower() == "close"
        assert client.is_closed(3.0)


def test_whitespace_split_across_reads(gw: GatewayProcess, origin: OriginProcess) -> None:
    """A head cut inside the whitespace after a value, and again before its end, reads the same."""
    with RawClient(gw.port) as client:
        client.send(b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\t")
        time.sleep(0.1)
        client.send(b" \r\n\r")
        time.sleep(0.1)
        client.send(b"\n3\r\nabc\r\n0\r\n\r\n")
        response = client.read_final(timeout=5)
    assert response.status == 200 and response.body == b"abc"


def test_whitespace_before_the_colon_is_still_refused(gw: GatewayProcess, origin: OriginProcess) -> None:
    """Only the whitespace after a value is optional: before the colon it is ambiguous (400)."""
    data = b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n"
    expect_rejected(gw, origin, data, 400, "bad_request")


# --- chunk extensions --------------------------------------------------------------------------

LEGAL_CHUNK_LINES = [
    ("bws-before-semicolon", b"3 ;ext"),
    ("tab-before-semicolon", b"3\t;ext"),
    ("bws-around-equals", b"3 ; name = value"),
    ("quoted-value", b'3;name="a value; with = signs"'),
    ("quoted-pair", b'3;name="say \\"hi\\""'),
    ("several", b'3;a;b=1 ;c="x" ; d = e'),
    ("at-the-bound", b"3;" + b"x" * 62),
]


@pytest.mark.parametrize("line", [c[1] for c in LEGAL_CHUNK_LINES], ids=[c[0] for c in LEGAL_CHUNK_LINES])
def test_legal_chunk_extensions_accepted_and_not_forwarded(
    gw: GatewayProcess, origin: OriginProcess, line: bytes
) -> None:
    with RawClient(gw.port) as client:
        response = client.request(
            CHUNK_HEAD + line + b"\r\nabc\r\n2;last\r\nde\r\n0;end\r\nX-Trailer: 1\r\n\r\n"
        )
    assert response.status == 200 and response.body == b"abcde"
    (received,) = origin.received()
    body = received.raw.split(b"\r\n\r\n", 1)[1]
    assert b";" not in body and b"X-Trailer" not in body, body  # re-chunked: extensions dropped


CHUNK_REFUSED = [
    ("over-the-bound", b"3;" + b"x" * 63 + b"\r\nabc\r\n0\r\n\r\n"),
    ("whitespace-without-extension", b"3 \r\nabc\r\n0\r\n\r\n"),
    ("empty-extension-name", b"3;=v\r\nabc\r\n0\r\n\r\n"),
    ("unterminated-quote", b'3;a="open\r\nabc\r\n0\r\n\r\n'),
    ("bare-lf-after-extension", b"3;a\nabc\r\n0\r\n\r\n"),
    ("bare-cr-in-extension", b"3;a\rb\r\nabc\r\n0\r\n\r\n"),
    ("bare-lf-in-trailer", b"3\r\nabc\r\n0\r\nX-T: 1\n\r\n"),
    ("trailer-without-colon", b"3\r\nabc\r\n0\r\nnot a field\r\n\r\n"),
]


@pytest.mark.parametrize("body", [c[1] for c in CHUNK_REFUSED], ids=[c[0] for c in CHUNK_REFUSED])
def test_chunk_lines_refused(gw: GatewayProcess, origin: OriginProcess, body: bytes) -> None:
    expect_rejected(gw, origin, CHUNK_HEAD + body, 400, "bad_request")


@pytest.mark.parametrize(
    "body",
    [
        b"3;" + b"x" * 100_000 + b"\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX-T: " + b"t" * 40_000 + b"\r\n\r\n",  # trailers: the head size bound
    ],
    ids=["huge-extension", "huge-trailer"],
)
def test_huge_chunk_lines_refused(gw: GatewayProcess, origin: OriginProcess, body: bytes) -> None:
    """Large enough to come in several reads: the head may have been streamed on, but the app never
    gets a complete request, and the client gets its 400 and a close."""
    with RawClient(gw.port) as client:
        client.send(CHUNK_HEAD + body)
        response = client.read_response(timeout=5)
        assert response.status == 400 and response.json()["error"] == "bad_request"
        assert client.is_closed(3.0)
    time.sleep(0.05)
    assert origin.received() == []


def test_endless_chunk_extension_cut_at_the_bound(gw: GatewayProcess, origin: OriginProcess) -> None:
    """An extension that never ends is refused as soon as it passes the bound, not read forever."""
    with RawClient(gw.port) as client:
        client.send(CHUNK_HEAD + b"3;")
        for _ in range(5):
            client.send(b"x" * 20)
            time.sleep(0.02)
        response = client.read_response(timeout=5)
        assert response.status == 400 and "chunk line" in response.json()["detail"]
        assert client.is_closed(3.0)
    assert origin.received() == []


def test_extensions_cannot_be_most_of_a_body(gw: GatewayProcess, origin: OriginProcess) -> None:
    """Each line within the bound, but far more extension than data: refused (as Go does), while
    as many one-byte chunks without extensions are fine."""
    many_tiny = b"".join(b"1\r\nx\r\n" for _ in range(2000)) + b"0\r\n\r\n"
    with RawClient(gw.port) as client:
        ok = client.request(CHUNK_HEAD + many_tiny)
        assert ok.status == 200 and ok.body == b"x" * 2000
    origin.reset()
    padded = b"".join(b"1;" + b"e" * 58 + b"\r\nx\r\n" for _ in range(2000)) + b"0\r\n\r\n"
    with RawClient(gw.port) as client:
        client.send(CHUNK_HEAD + padded)
        response = client.read_response(timeout=5)
        assert response.status == 400 and "not data" in response.json()["detail"]
        assert client.is_closed(3.0)
    time.sleep(0.05)
    assert origin.received() == []  # part of it may have been streamed, never a complete request


def test_default_chunk_line_bound_is_4_kib(gateway: GatewayFactory, origin: OriginProcess) -> None:
    gw = gateway()
    with RawClient(gw.port) as client:
        ok = client.request(CHUNK_HEAD + b"3;" + b"x" * 4094 + b"\r\nabc\r\n0\r\n\r\n")
        assert ok.status == 200 and ok.body == b"abc"
    origin.reset()
    expect_rejected(
        gw, origin, CHUNK_HEAD + b"3;" + b"x" * 4095 + b"\r\nabc\r\n0\r\n\r\n", 400, "bad_request"
    )


def raw_path(response: bytes) -> bytes:
    return b"/raw?b64=" + base64.urlsafe_b64encode(response)


def test_upstream_chunk_extensions_legal_forms_read(gw: GatewayProcess, origin: OriginProcess) -> None:
    upstream = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n3 ; a = "b;c"\r\nabc\r\n0\r\n\r\n'
    with RawClient(gw.port) as client:
        response = client.request(b"GET " + raw_path(upstream) + b" HTTP/1.1\r\n" + H + b"\r\n")
    assert response.status == 200 and response.body == b"abc"


def test_upstream_whitespace_after_values_is_trimmed(gw: GatewayProcess, origin: OriginProcess) -> None:
    """From the app too: the client gets the bare values (and the framing read right)."""
    upstream = b"HTTP/1.1 200 OK\r\nContent-Length: 3\t\r\nX-A: v \t\r\nConnection: keep-alive \r\n\r\nabc"
    with RawClient(gw.port) as client:
        client.send(b"GET " + raw_path(upstream) + b" HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
        data = client.read_until_close(5)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"abc", data
    assert b"\r\nX-A: v\r\n" in head + b"\r\n" and b"Content-Length: 3\r\n" in head + b"\r\n", head


def test_upstream_head_ending_in_bare_lfs_is_502(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(
            b"GET " + raw_path(b"HTTP/1.1 200 OK\nX-A: 1\n\n") + b" HTTP/1.1\r\n" + H + b"\r\n"
        )
        assert response.status == 502 and response.json()["error"] == "protocol_error"


def test_upstream_chunk_line_over_the_bound_is_502(gw: GatewayProcess, origin: OriginProcess) -> None:
    """The listener's bound holds for the app's chunk lines too; the response head was still
    in the cork buffer, so the client gets a clean 502 rather than a cut 200."""
    upstream = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    upstream += b"3;" + b"x" * 200 + b"\r\nabc\r\n0\r\n\r\n"
    with RawClient(gw.port) as client:
        response = client.request(b"GET " + raw_path(upstream) + b" HTTP/1.1\r\n" + H + b"\r\n")
        assert response.status == 502, response
        assert "chunk line" in response.json()["detail"]
        assert client.request(get("/after")).status == 200  # the client's connection goes on


# --- request line ------------------------------------------------------------------------------

TARGET_CASES = [
    ("fragment", b"GET /a#frag HTTP/1.1\r\n" + H + b"\r\n"),
    ("fragment-after-query", b"GET /a?b=c#frag HTTP/1.1\r\n" + H + b"\r\n"),
    ("empty-fragment", b"GET /a# HTTP/1.1\r\n" + H + b"\r\n"),
    ("fragment-absolute-form", b"GET http://example.com/a#frag HTTP/1.1\r\n" + H + b"\r\n"),
    ("http-0.9", b"GET /\r\n\r\n"),
    ("http-0.9-with-fields", b"GET /index.html\r\n" + H + b"\r\n"),
]


@pytest.mark.parametrize("data", [c[1] for c in TARGET_CASES], ids=[c[0] for c in TARGET_CASES])
def test_request_line_refused(gw: GatewayProcess, origin: OriginProcess, data: bytes) -> None:
    response = expect_rejected(gw, origin, data, 400, "bad_request")
    assert "fragment" in response.json()["detail"] or "HTTP/0.9" in response.json()["detail"]

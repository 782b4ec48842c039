"""The HTTP/1.1 inbound connection with no sockets: strict framing, limits, order of responses,
a client that goes away, backpressure both ways, and the read-side deadlines on a clock the test
moves (see :mod:`support.wired`)."""

from __future__ import annotations

import pytest

from support.gateway import Response, get, request
from support.wired import Client, Wire, Wired, expect_error, reply

LIMITS = {
    "head_size": "8KiB",
    "header_count": 20,
    "head_timeout": "10s",
    "body_idle": "30s",
    "keepalive_idle": "60s",
}
H = b"Host: example.com\r\n"
CHUNK_HEAD = b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"


@pytest.fixture
def gw(wire: Wire) -> Wired:
    return wire(limits=LIMITS)


def expect_closed_with(client: Client, status: int, kind: str) -> Response:
    """The gateway answered ``status`` itself, with Connection: close, then closed; nothing after."""
    response = client.response()
    expect_error(response, status, kind)
    assert (response.headers.get("connection") or "").lower() == "close", response
    assert response.json()["detail"]
    assert client.closed, "the connection stays open after an error"
    assert client.unread == b"", "bytes after the error response"
    return response


def warm(gw: Wired) -> None:
    """Leave an idle pooled upstream connection (the worst case: a head could go up at once)."""
    client = gw.client()
    client.send(get("/warm"))
    gw.upstream().request()
    gw.upstream().send(reply(b"warm"))
    assert client.response().status == 200


# -- malformed requests and limits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "kind"),
    [
        (b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, "bad_request"),  # no Host
        (b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400, "bad_request"),
        (
            b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            400,
            "bad_request",
        ),
        (
            b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "bad_request",
        ),
        (b"GET / HTTP/1.1\r\n" + H + b"Bad Header: 1\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505, "version_not_supported"),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, "method_not_allowed"),
        (CHUNK_HEAD + b"zz\r\nabc\r\n0\r\n\r\n", 400, "bad_request"),
    ],
    ids=[
        "no-host",
        "space-in-target",
        "two-lengths",
        "cl-and-te",
        "bad-name",
        "http2",
        "connect",
        "bad-chunk",
    ],
)
def test_malformed_request_is_answered_and_closed_and_the_app_sees_nothing(
    gw: Wired, data: bytes, status: int, kind: str
) -> None:
    warm(gw)
    client = gw.client()
    client.send(data)
    expect_closed_with(client, status, kind)
    assert gw.upstream().requests() == [], "the app received bytes of a rejected request"


def test_head_too_large_is_431(gw: Wired) -> None:
    client = gw.client()
    client.send(b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n")
    expect_closed_with(client, 431, "head_too_large")
    assert gw.upstreams == []


def test_head_too_large_in_pieces_is_431_before_it_ends(gw: Wired) -> None:
    client = gw.client()
    client.send(b"GET / HTTP/1.1\r\n" + H)
    for _ in range(10):
        if client.closed:
            break
        client.send(b"X-Filler: " + b"f" * 1000 + b"\r\n")
    expect_closed_with(client, 431, "head_too_large")


def test_too_many_headers_is_431(gw: Wired) -> None:
    client = gw.client()
    client.send(b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(30)) + b"\r\n")
    expect_closed_with(client, 431, "head_too_large")


def test_uri_too_long_is_414(gw: Wired) -> None:
    client = gw.client()
    client.send(b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n")
    expect_closed_with(client, 414, "uri_too_long")


def test_bad_chunk_after_the_head_went_up_cuts_the_app_connection(gw: Wired) -> None:
    client = gw.client()
    client.send(CHUNK_HEAD + b"3\r\nabc\r\n")
    app = gw.upstream()
    assert app.output.startswith(b"POST /echo ")
    client.send(b"zz\r\nnot hex\r\n0\r\n\r\n")
    expect_closed_with(client, 400, "bad_request")
    assert app.closed and not app.output.endswith(b"0\r\n\r\n"), "the app got a complete request"


def test_valid_then_invalid_pipelined_answers_the_valid_one_first(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/first") + b"GET /d HTTP/1.1\r\nHost: a\r\nX@: 1\r\n\r\n")
    app = gw.upstream()
    assert [r.target for r in app.requests()] == ["/first"]
    assert not client.closed
    app.send(reply(b"first"))
    assert client.response().body == b"first"
    expect_closed_with(client, 400, "bad_request")


# -- order of responses ----------------------------------------------------------------------------------


def test_pipelining_with_a_slow_upstream_keeps_order(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/slow") + get("/fast"))
    app = gw.upstream()
    assert [r.target for r in app.requests()] == ["/slow"], "the second waits for the first"
    gw.advance(1.0)
    assert client.output == b""
    app.send(reply(b"slow done"))
    assert client.response().body == b"slow done"
    assert app.request().target == "/fast"
    app.send(reply(b"fast"))
    assert client.response().body == b"fast"


def test_half_closed_client_gets_every_pipelined_response_then_a_close(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/a") + get("/b"))
    client.hang_up()
    assert client.half_closed and not client.closed
    app = gw.upstream()
    app.request()
    app.send(reply(b"a"))
    app.request()
    app.send(reply(b"b"))
    assert [r.body for r in client.responses()] == [b"a", b"b"]
    assert client.closed


def test_pipelined_body_over_the_buffer_pauses_reading_until_its_turn(gw: Wired) -> None:
    client = gw.client()
    body = b"p" * (100 * 1024)
    client.send(get("/slow") + request("POST", "/echo", body))
    assert not client.reading, "over 64 KiB buffered for a waiting request: stop reading"
    app = gw.upstream()
    app.request()
    app.send(reply(b"slow"))
    assert client.reading
    assert app.request().body == body
    app.send(reply(b"ok"))
    assert [r.body for r in client.responses()] == [b"slow", b"ok"]


# -- a client that goes away -------------------------------------------------------------------------------


def test_client_gone_mid_response_closes_the_upstream_connection(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/big"))
    app = gw.upstream()
    app.send(reply(headers={"Content-Length": "100000"}) + b"x" * 1000)
    client.reset()
    assert app.closed, "a connection in the middle of a response cannot be reused"
    other = gw.client()
    other.send(get("/next"))
    assert len(gw.upstreams) == 2 and gw.upstream(1).request().target == "/next"


def test_client_gone_before_the_response_closes_the_upstream_connection(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/waiting"))
    app = gw.upstream()
    client.reset()
    assert app.closed, "its request went up: the answer would come to nobody"


# -- backpressure ------------------------------------------------------------------------------------------


def test_a_client_that_does_not_read_pauses_reading_from_the_app(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/stream"))
    app = gw.upstream()
    app.send(reply(headers={"Transfer-Encoding": "chunked"}) + b"5\r\nfirst\r\n")
    client.stop_taking()
    assert not app.reading, "the client's buffer is full: stop reading the app"
    app.send(b"6\r\nsecond\r\n")  # held by the (fake) kernel while nobody reads
    assert b"second" not in client.output
    client.take_again()
    assert app.reading
    app.send(b"0\r\n\r\n")
    response = client.response()
    assert response.body == b"firstsecond"


def test_an_app_that_does_not_read_pauses_reading_from_the_client(gw: Wired) -> None:
    client = gw.client()
    client.send(request("POST", "/upload", None, headers={"Content-Length": "10000"}) + b"a" * 1000)
    app = gw.upstream()
    app.stop_taking()
    assert not client.reading
    app.take_again()
    assert client.reading
    client.send(b"b" * 9000)
    assert app.request().body == b"a" * 1000 + b"b" * 9000


def test_a_client_that_takes_nothing_for_send_timeout_is_cut(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/big"))
    app = gw.upstream()
    app.send(reply(headers={"Content-Length": "1000000"}) + b"x" * 1000)
    client.stop_taking()
    gw.advance(59.0)
    assert not client.closed
    gw.advance(2.0)
    assert client.closed and client.aborted, "cut with a reset"
    assert app.closed


# -- read-side deadlines -------------------------------------------------------------------------------------


def test_idle_keep_alive_connection_is_closed_quietly(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/one"))
    gw.upstream().send(reply(b"one"))
    client.response()
    gw.advance(59.0)
    assert not client.closed
    gw.advance(1.5)
    assert client.closed and not client.aborted
    assert client.unread == b"", "an idle close says nothing"


def test_a_head_not_received_in_time_is_408(gw: Wired) -> None:
    client = gw.client()
    client.send(b"GET /slowloris HTTP/1.1\r\n")
    gw.advance(9.0)
    assert not client.closed
    gw.advance(1.5)
    expect_closed_with(client, 408, "request_timeout")
    assert gw.upstreams == []


def test_a_stalled_body_is_408(gw: Wired) -> None:
    client = gw.client()
    client.send(request("POST", "/upload", None, headers={"Content-Length": "100"}) + b"a" * 10)
    app = gw.upstream()
    gw.advance(20.0)
    client.send(b"b" * 10)  # the body's clock starts again with each read
    gw.advance(20.0)
    assert not client.closed
    gw.advance(11.0)
    expect_closed_with(client, 408, "request_timeout")
    assert app.closed

"""The phase loop when the app fails, with no sockets: upstream connections reused or not, resets
retried or not, connect failures and timeouts on a clock the test moves, invalid responses, and a
failure once part of the response is out (see :mod:`support.wired`)."""

from __future__ import annotations

from typing import Any

import pytest

from support.gateway import get, request
from support.wired import APP, App, Client, Wire, Wired, expect_error, reply

ROUTES: list[dict[str, Any]] = [
    {"name": "slow", "match": {"path_prefix": "/slow"}, "upstream": "app", "timeouts": {"response": "2s"}},
    {"name": "stall", "match": {"path_prefix": "/stall"}, "upstream": "app", "timeouts": {"idle": "1s"}},
    {"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"},
]


@pytest.fixture
def gw(wire: Wire) -> Wired:
    return wire(routes=ROUTES)


def test_keep_alive_reuses_one_upstream_connection(gw: Wired) -> None:
    client = gw.client()
    for path in ("/one", "/two", "/three"):
        assert gw.round_trip(client, get(path), reply(path.encode())).body == path.encode()
    assert len(gw.upstreams) == 1


def test_upstream_connection_close_is_not_reused(gw: Wired) -> None:
    client = gw.client()
    gw.round_trip(client, get("/first"), reply(b"closing", headers={"Connection": "close"}))
    assert gw.upstream(0).closed
    client.send(request("POST", "/echo", b"must arrive"))
    assert len(gw.upstreams) == 2
    assert gw.upstream(1).request().body == b"must arrive"


def reuse_then_reset(gw: Wired, client: Client, data: bytes) -> App:
    """One answered request leaves a connection idle in the pool; ``data`` goes on it and the
    app resets that connection before answering. Returns that (pooled) connection."""
    gw.round_trip(client, get("/warm"), reply(b"warm"))
    client.send(data)
    pooled = gw.upstream(0)
    pooled.request()
    pooled.reset()
    return pooled


def test_reset_of_a_pooled_connection_is_retried_once_for_get(gw: Wired) -> None:
    client = gw.client()
    reuse_then_reset(gw, client, get("/again"))
    assert len(gw.upstreams) == 2, "a GET goes once more, on a new connection"
    assert gw.upstream(1).request().target == "/again"
    gw.upstream(1).send(reply(b"second try"))
    assert client.response().body == b"second try"


@pytest.mark.parametrize(
    "data", [request("POST", "/once", b"once"), request("POST", "/once")], ids=["with-body", "bodiless"]
)
def test_reset_of_a_pooled_connection_is_not_retried_for_post(gw: Wired, data: bytes) -> None:
    client = gw.client()
    reuse_then_reset(gw, client, data)
    expect_error(client.response(), 502, "reset")
    assert len(gw.upstreams) == 1, "a POST must never be sent twice"


def test_a_retry_is_tried_only_once(gw: Wired) -> None:
    client = gw.client()
    reuse_then_reset(gw, client, get("/again"))
    gw.upstream(1).request()
    gw.upstream(1).reset()
    expect_error(client.response(), 502, "reset")
    assert len(gw.upstreams) == 2


def test_reset_of_a_new_connection_is_502(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/drop"))
    gw.upstream().hang_up()
    expect_error(client.response(), 502, "reset")
    assert len(gw.upstreams) == 1
    assert gw.round_trip(client, get("/ok"), reply(b"ok")).status == 200


def test_connect_refused_is_503(gw: Wired) -> None:
    gw.connect = "refuse"
    client = gw.client()
    client.send(get("/dead"))
    body = expect_error(client.response(), 503, "connect_refused")
    assert APP in body["detail"]
    gw.connect = "accept"
    assert gw.round_trip(client, get("/ok"), reply(b"ok")).status == 200, "the client connection stays usable"


def test_connect_timeout_is_503(gw: Wired) -> None:
    gw.connect = "hang"
    client = gw.client()
    client.send(get("/hole"))
    gw.advance(1.5)
    assert client.output == b"", "not before the connect timeout (2 s)"
    gw.advance(1.0)
    expect_error(client.response(), 503, "connect_timeout")


def test_response_timeout_is_504_and_a_late_answer_does_not_leak(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/slow"))
    gw.advance(1.5)
    assert client.output == b""
    gw.advance(1.0)
    body = expect_error(client.response(), 504, "response_timeout")
    assert "2s" in body["detail"]
    assert gw.upstream(0).closed, "a connection owing a response cannot be reused"
    response = gw.round_trip(client, get("/ok"), reply(b"ok"))
    assert response.body == b"ok" and len(gw.upstreams) == 2


def test_invalid_response_is_502_protocol_error(gw: Wired) -> None:
    client = gw.client()
    response = gw.round_trip(client, get("/garbage"), b"SSH-2.0-OpenSSH_9.0\r\n\r\n")
    expect_error(response, 502, "protocol_error")
    assert gw.upstream().closed


def test_a_broken_body_in_the_read_that_brought_the_head_is_still_a_502(gw: Wired) -> None:
    """Nothing of the response left yet (the head waited in the cork buffer): a clean 502."""
    client = gw.client()
    client.send(get("/broken"))
    gw.upstream().send(reply(headers={"Transfer-Encoding": "chunked"}) + b"5\r\nhello\r\nzz\r\n")
    expect_error(client.response(), 502, "protocol_error")
    assert client.unread == b"" and not client.closed
    assert gw.round_trip(client, get("/after"), reply(b"after")).body == b"after"


def test_failure_mid_response_cuts_the_client_connection(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/cut"))
    app = gw.upstream()
    app.send(reply(headers={"Content-Length": "1000"}) + b"s" * 100)
    app.reset()
    assert client.closed
    (response,) = client.responses()
    assert response.status == 200 and response.body == b"s" * 100 and not response.complete


def test_idle_timeout_mid_body_cuts_the_client_connection(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/stall"))
    app = gw.upstream()
    app.send(reply(headers={"Content-Length": "1000"}) + b"s" * 100)
    gw.advance(0.5)
    app.send(b"s" * 100)  # a read moves the idle deadline
    gw.advance(0.8)
    assert not client.closed
    gw.advance(0.5)
    assert client.closed and app.closed
    (response,) = client.responses()
    assert response.body == b"s" * 200 and not response.complete

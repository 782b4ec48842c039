"""The phase loop with no sockets: routing, local answers, the upstream head, the response relayed,
upgrades and keep-alive, seen as the bytes a client and the app exchange with the gateway (the
app's failures: ``test_phase_loop_failures.py``).

Each test builds a gateway from its config over fake transports (:mod:`support.wired`); the app
is played by the test on each connection the gateway opens to it.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.gateway import chunked, get, request
from support.wired import Wire, Wired, expect_error, reply

ROUTES: list[dict[str, Any]] = [
    {
        "name": "maintenance",
        "match": {"path": "/maint"},
        "upstream": "app",
        "filters": {
            "direct_response": {
                "status": 503,
                "body": "maintenance",
                "content_type": "text/plain",
                "headers": {"X-Maint": "1"},
            }
        },
    },
    {"name": "keyed", "match": {"path_prefix": "/keyed"}, "upstream": "app", "filters": {"api_key": {}}},
    {"name": "small", "match": {"path_prefix": "/small"}, "upstream": "app", "max_body": "1KiB"},
    {
        "name": "strip",
        "match": {"path_prefix": "/api/"},
        "upstream": "app",
        "rewrite": {"strip_prefix": "/api"},
    },
    {
        "name": "regex-rewrite",
        "match": {"path_prefix": "/v1/"},
        "upstream": "app",
        "rewrite": {"regex": {"pattern": "^/v1/(.*)", "replacement": "/v2/\\1"}},
    },
    {
        "name": "edits",
        "match": {"path": "/edits"},
        "upstream": "app",
        "rewrite": {"path": "/hop"},
        "headers": {
            "request": {"set": {"X-A": "set-by-gw"}, "add": {"X-B": "added-by-gw"}, "remove": ["X-C"]},
            "response": {"set": {"Content-Type": "text/x-set"}, "add": {"X-Added": "1"}, "remove": ["X-End"]},
        },
    },
    {"name": "all", "match": {"path_regex": "/(?!nowhere).*"}, "upstream": "app"},
]
KEY = "billing-key-0123456789"
CONSUMERS = [{"name": "billing", "tenant": "acme", "api_keys": [KEY]}]


@pytest.fixture
def gw(wire: Wire) -> Wired:
    return wire(routes=ROUTES, consumers=CONSUMERS)


# -- the upstream head ------------------------------------------------------------------------------


def test_request_forwarded_with_forwarding_headers_via_and_request_id(gw: Wired) -> None:
    client = gw.client("127.0.0.1")
    client.send(get("/hello?x=1", host="example.com:8080", headers={"Accept": "*/*"}))
    seen = gw.upstream().request()
    assert (seen.method, seen.target, seen.version) == ("GET", "/hello?x=1", "HTTP/1.1")
    assert seen.headers.get_all("host") == ["example.com:8080"]
    assert seen.headers.get_all("accept") == ["*/*"]
    assert seen.headers.get_all("x-forwarded-for") == ["127.0.0.1"]
    assert seen.headers.get_all("x-forwarded-proto") == ["http"]
    assert seen.headers.get_all("x-forwarded-host") == ["example.com:8080"]
    assert seen.headers.get_all("via") == ["1.1 sidegate"]
    (rid,) = seen.headers.get_all("x-request-id")
    gw.upstream().send(reply(b"hi"))
    response = client.response()
    assert response.status == 200 and response.body == b"hi"
    assert response.headers.get_all("x-request-id") == [rid]
    assert response.headers.get_all("via") == ["1.1 sidegate"]


def test_request_ids_differ_and_a_client_id_is_kept(gw: Wired) -> None:
    client = gw.client()
    ids = []
    for headers in ({}, {}, {"X-Request-Id": "client-id-123"}):
        client.send(get("/rid", headers=headers))
        ids.append(gw.upstream().request().headers.get("x-request-id"))
        gw.upstream().send(reply())
        assert client.response().headers.get("x-request-id") == ids[-1]
    assert ids[0] != ids[1] and ids[2] == "client-id-123"


def test_forwarding_chain_appended_and_via_joined(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/xf", headers={"X-Forwarded-For": "203.0.113.7", "Via": "1.0 fred"}))
    seen = gw.upstream().request()
    assert seen.headers.get_all("x-forwarded-for") == ["203.0.113.7, 127.0.0.1"]
    assert seen.headers.get_all("via") == ["1.0 fred, 1.1 sidegate"]


def test_hop_by_hop_request_headers_removed(gw: Wired) -> None:
    client = gw.client()
    headers = {"Connection": "keep-alive, X-Foo", "X-Foo": "1", "Keep-Alive": "timeout=5", "TE": "trailers"}
    client.send(get("/hop", headers={**headers, "X-Kept": "3"}))
    seen = gw.upstream().request()
    for name in ("X-Foo", "Keep-Alive", "TE"):
        assert seen.headers.get(name) is None, seen.head
    assert seen.headers.get("x-kept") == "3"


@pytest.mark.parametrize(
    ("path", "target"),
    [("/api/users?page=2", "/users?page=2"), ("/v1/items/7", "/v2/items/7"), ("/edits", "/hop")],
)
def test_rewrites(gw: Wired, path: str, target: str) -> None:
    gw.client().send(get(path))
    assert gw.upstream().request().target == target


def test_header_edits_both_ways(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/edits", headers={"X-A": "from-client", "X-B": "from-client", "X-C": "secret"}))
    seen = gw.upstream().request()
    assert seen.headers.get_all("x-a") == ["set-by-gw"]
    assert seen.headers.get_all("x-b") == ["from-client", "added-by-gw"]
    assert seen.headers.get_all("x-c") == []
    gw.upstream().send(reply(b"e", headers={"Content-Type": "text/plain", "X-End": "1"}))
    response = client.response()
    assert response.headers.get_all("content-type") == ["text/x-set"]
    assert response.headers.get_all("x-added") == ["1"]
    assert "x-end" not in response.headers


# -- answers the gateway makes itself ----------------------------------------------------------------


def test_no_route_is_404_json_and_keeps_the_connection(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/nowhere"))
    body = expect_error(client.response(), 404, "no_route")
    assert "/nowhere" in body["detail"]
    assert gw.upstreams == [], "the app must not be asked"
    assert gw.round_trip(client, get("/after"), reply(b"ok")).status == 200


def test_no_route_with_a_small_body_reads_it_and_keeps_the_connection(gw: Wired) -> None:
    client = gw.client()
    client.send(request("POST", "/nowhere", b"x" * 1000))
    expect_error(client.response(), 404, "no_route")
    assert gw.round_trip(client, get("/after"), reply(b"ok")).body == b"ok"


def test_content_length_over_max_body_is_413_and_close(gw: Wired) -> None:
    client = gw.client()
    client.send(request("POST", "/small", None, headers={"Content-Length": "2048"}))
    expect_error(client.response(), 413, "body_too_large")
    assert client.closed and gw.upstreams == []


def test_chunked_body_over_max_body_is_413_and_the_app_never_gets_it_whole(gw: Wired) -> None:
    client = gw.client()
    client.send(request("POST", "/small", None, headers={"Transfer-Encoding": "chunked"}))
    client.send(b"400\r\n" + b"a" * 1024 + b"\r\n" + b"10\r\n" + b"b" * 16 + b"\r\n0\r\n\r\n")
    expect_error(client.response(), 413, "body_too_large")
    assert client.closed
    assert gw.upstream().closed and not gw.upstream().output.endswith(b"0\r\n\r\n")


def test_direct_response_answers_without_the_app(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/maint"))
    response = client.response()
    assert response.status == 503 and response.body == b"maintenance"
    assert response.headers.get("content-type") == "text/plain"
    assert response.headers.get("x-maint") == "1"
    assert gw.upstreams == [] and not client.closed


def test_head_of_a_local_answer_has_no_body(gw: Wired) -> None:
    client = gw.client()
    client.send(request("HEAD", "/maint") + get("/nowhere"))
    head, after = client.response("HEAD"), client.response()
    assert head.status == 503 and head.body == b"" and head.headers.get("content-length") == "11"
    assert after.status == 404


def test_api_key_missing_is_401_and_a_good_key_passes_with_the_consumer(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/keyed/x"))
    response = client.response()
    expect_error(response, 401, "unauthorized")
    assert response.headers.get("www-authenticate") == 'ApiKey realm="sidegate", header="x-api-key"'
    assert gw.upstreams == []
    client.send(get("/keyed/x", headers={"X-API-Key": KEY}))
    seen = gw.upstream().request()
    assert seen.headers.get("x-api-key") is None, "the credential stays in the gateway"
    assert seen.headers.get_all("x-consumer") == ["billing"]
    assert seen.headers.get_all("x-tenant") == ["acme"]
    gw.upstream().send(reply(b"ok"))
    assert client.response().status == 200


# -- the response relayed ------------------------------------------------------------------------------


def test_content_length_response_relayed(gw: Wired) -> None:
    client = gw.client()
    response = gw.round_trip(client, get("/cl"), reply(b"x" * 5000, headers={"X-App": "1"}))
    assert response.status == 200 and response.body == b"x" * 5000 and not response.chunked
    assert response.headers.get("content-length") == "5000" and response.headers.get("x-app") == "1"


def test_chunked_response_rechunked_for_http11(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/chunked"))
    app = gw.upstream()
    app.send(reply(headers={"Transfer-Encoding": "chunked"}) + b"5\r\nhello\r\n")
    app.send(b"6\r\n world\r\n0\r\n\r\n")
    response = client.response()
    assert response.chunked and response.body == b"hello world"
    assert not client.closed and not app.closed


def test_close_delimited_response_becomes_chunked_for_http11(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/close-delimited"))
    app = gw.upstream()
    app.send(reply(length=False) + b"until the end")
    app.hang_up()
    response = client.response()
    assert response.chunked and response.body == b"until the end"
    assert not client.closed, "the client connection stays open"
    assert app.closed


def test_close_delimited_response_stays_close_delimited_for_http10(gw: Wired) -> None:
    client = gw.client()
    client.send(request("GET", "/close-delimited", version="1.0"))
    app = gw.upstream()
    app.send(reply(length=False) + b"until the end")
    app.hang_up()
    assert client.closed
    (response,) = client.responses()
    assert "transfer-encoding" not in response.headers and "content-length" not in response.headers
    assert response.body == b"until the end"


def test_close_delimited_response_closes_even_a_keep_alive_http10_client(gw: Wired) -> None:
    client = gw.client()
    client.send(request("GET", "/close-delimited", headers={"Connection": "keep-alive"}, version="1.0"))
    app = gw.upstream()
    app.send(reply(length=False) + b"until the end")
    app.hang_up()
    assert client.closed, "only the close can end this body for an HTTP/1.0 client"
    (response,) = client.responses()
    assert response.headers.get("connection") == "close" and response.body == b"until the end"


def test_chunked_response_to_http10_client_is_plain_and_closed(gw: Wired) -> None:
    client = gw.client()
    client.send(request("GET", "/c10", version="1.0"))
    gw.upstream().send(reply(headers={"Transfer-Encoding": "chunked"}) + chunked(b"abc", b"def"))
    assert client.closed
    (response,) = client.responses()
    assert response.body == b"abcdef" and not response.chunked


def test_head_keeps_content_length_without_body(gw: Wired) -> None:
    client = gw.client()
    client.send(request("HEAD", "/head"))
    app = gw.upstream()
    assert app.request().method == "HEAD"
    app.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    head = client.response("HEAD")
    assert head.body == b"" and head.headers.get("content-length") == "100"
    assert gw.round_trip(client, get("/after"), reply(b"after")).body == b"after"
    assert client.unread == b"", "no stray body bytes"
    assert len(gw.upstreams) == 1, "the upstream connection was reused"


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses(gw: Wired, status: int) -> None:
    client = gw.client()
    response = gw.round_trip(client, get("/s"), reply(status=status, reason="X", length=False))
    assert response.status == status and response.body == b""
    assert "transfer-encoding" not in response.headers
    assert gw.round_trip(client, get("/after"), reply(b"after")).body == b"after"
    assert len(gw.upstreams) == 1


def test_early_hints_forwarded_to_http11_not_to_http10(gw: Wired) -> None:
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    client = gw.client()
    client.send(get("/early"))
    gw.upstream().send(hints + reply(b"after hints"))
    first, final = client.responses()
    assert first.status == 103 and first.headers.get("link") == "</style.css>; rel=preload"
    assert final.status == 200 and final.body == b"after hints"
    old = gw.client()
    old.send(request("GET", "/early", version="1.0"))
    gw.upstream().send(hints + reply(b"after hints"))
    assert [r.status for r in old.responses()] == [200]


# -- upgrades -------------------------------------------------------------------------------------------


def upgrade_request(early: bytes = b"") -> bytes:
    headers = {"Connection": "Upgrade", "Upgrade": "websocket"}
    return request("GET", "/ws", headers=headers) + early


def test_101_opens_a_tunnel_both_ways(gw: Wired) -> None:
    client = gw.client()
    client.send(upgrade_request(b"early bytes"))
    app = gw.upstream()
    seen = app.request()
    assert seen.headers.get("upgrade") == "websocket"
    assert b"early" not in app.output, "bytes after an upgrade wait for the answer"
    app.send(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhello")
    switched = client.response()
    assert switched.status == 101 and switched.headers.get("upgrade") == "websocket"
    assert client.unread == b"hello"
    assert app.read().endswith(b"early bytes")
    client.send(b"ping")
    assert app.read() == b"ping"
    app.send(b"pong")
    assert client.read().endswith(b"pong")
    app.hang_up()
    assert client.closed


def test_upgrade_declined_reads_the_rest_as_requests(gw: Wired) -> None:
    client = gw.client()
    client.send(upgrade_request(get("/next")))
    app = gw.upstream()
    app.request()
    app.send(reply(b"no upgrade"))
    assert client.response().body == b"no upgrade"
    assert app.request().target == "/next"
    app.send(reply(b"next"))
    assert client.response().body == b"next"


# -- pipelining and keep-alive ----------------------------------------------------------------------------


def test_pipelined_requests_answered_in_order(gw: Wired) -> None:
    client = gw.client()
    client.send(b"".join(get(f"/n/{i}") for i in range(5)))
    app = gw.upstream()
    for i in range(5):
        assert app.request().target == f"/n/{i}"
        app.send(reply(f"n{i}".encode()))
    assert [r.body for r in client.responses()] == [f"n{i}".encode() for i in range(5)]
    assert len(gw.upstreams) == 1


def test_connection_close_from_an_http11_client(gw: Wired) -> None:
    client = gw.client()
    client.send(get("/last", headers={"Connection": "close"}) + get("/never"))
    app = gw.upstream()
    app.send(reply(b"last"))
    assert client.closed
    (response,) = client.responses()
    assert response.body == b"last" and response.headers.get("connection") == "close"
    assert [r.target for r in app.requests()] == ["/last"], "what follows Connection: close is ignored"


def test_http10_keep_alive_only_when_asked(gw: Wired) -> None:
    client = gw.client()
    asked = request("GET", "/a", headers={"Connection": "keep-alive"}, version="1.0")
    first = gw.round_trip(client, asked, reply(b"a"))
    assert (first.headers.get("connection") or "").lower() == "keep-alive"
    assert not client.closed
    second = gw.round_trip(client, request("GET", "/b", version="1.0"), reply(b"b"))
    assert second.body == b"b"
    assert client.closed, "an HTTP/1.0 request without keep-alive ends the connection"


def test_http10_request_goes_up_as_http11_with_one_host(gw: Wired) -> None:
    client = gw.client()
    client.send(b"GET /old-client HTTP/1.0\r\n\r\n")
    seen = gw.upstream().request()
    assert seen.version == "HTTP/1.1" and len(seen.headers.get_all("host")) == 1

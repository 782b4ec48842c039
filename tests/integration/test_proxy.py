"""Proxying through a real Sidegate to a recording app: connections, bodies, framing, headers, routes."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from support.gateway import (
    GatewayFactory,
    GatewayProcess,
    OriginProcess,
    RawClient,
    get,
    parse_responses,
    request,
    send_raw,
)

pytestmark = pytest.mark.timeout(60)


def tag(name: str) -> dict[str, Any]:
    """Response header edits that name the route that answered."""
    return {"response": {"set": {"X-Route": name}}}


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
    {
        "name": "host-exact",
        "match": {"path_prefix": "/", "hosts": ["a.example.com"]},
        "upstream": "app",
        "headers": tag("host-exact"),
    },
    {
        "name": "host-wild",
        "match": {"path_prefix": "/", "hosts": ["*.example.com"]},
        "upstream": "app",
        "headers": tag("host-wild"),
    },
    {"name": "exact", "match": {"path": "/exact"}, "upstream": "app", "headers": tag("exact")},
    {"name": "regex", "match": {"path_regex": "/re/[0-9]+"}, "upstream": "app", "headers": tag("regex")},
    {
        "name": "method-post",
        "match": {"path_prefix": "/m/", "methods": ["POST"]},
        "upstream": "app",
        "headers": tag("method-post"),
    },
    {"name": "method-any", "match": {"path_prefix": "/m/"}, "upstream": "app", "headers": tag("method-any")},
    {
        "name": "header",
        "match": {"path_prefix": "/h/", "headers": {"x-env": "canary"}},
        "upstream": "app",
        "headers": tag("header"),
    },
    {
        "name": "query",
        "match": {"path_prefix": "/h/", "query": {"debug": "1"}},
        "upstream": "app",
        "headers": tag("query"),
    },
    {"name": "first-a", "match": {"path_prefix": "/first"}, "upstream": "app", "headers": tag("first-a")},
    {"name": "first-b", "match": {"path_prefix": "/first"}, "upstream": "app", "headers": tag("first-b")},
    {
        "name": "strip",
        "match": {"path_prefix": "/api/"},
        "upstream": "app",
        "rewrite": {"strip_prefix": "/api"},
        "headers": tag("strip"),
    },
    {
        "name": "path-rewrite",
        "match": {"path_prefix": "/old/"},
        "upstream": "app",
        "rewrite": {"path": "/new"},
        "headers": tag("path-rewrite"),
    },
    {
        "name": "regex-rewrite",
        "match": {"path_prefix": "/v1/"},
        "upstream": "app",
        "rewrite": {"regex": {"pattern": "^/v1/(.*)", "replacement": "/v2/\\1"}},
        "headers": tag("regex-rewrite"),
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
    {"name": "all", "match": {"path_regex": "/(?!nowhere).*"}, "upstream": "app", "headers": tag("all")},
]


@pytest.fixture(scope="module")
def gw(gateway_module: GatewayFactory) -> GatewayProcess:
    return gateway_module(routes=ROUTES)


def seen(response_body: bytes) -> dict[str, Any]:
    """The origin's JSON description of the request it received."""
    data: dict[str, Any] = json.loads(response_body)
    return data


def header_values(info: dict[str, Any], name: str) -> list[str]:
    return [v for n, v in info["headers"] if n.lower() == name.lower()]


# --- connections -------------------------------------------------------------------------------


def test_keepalive_reuses_one_upstream_connection(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        for i in range(5):
            response = client.request(get(f"/ka/{i}"))
            assert response.status == 200
            assert "connection" not in response.headers
            assert seen(response.body)["path"] == f"/ka/{i}"
        assert not client.is_closed(0.2)
    received = origin.received()
    assert [r.target for r in received] == [f"/ka/{i}" for i in range(5)]
    assert len({r.peer_port for r in received}) == 1, "the upstream connection was not reused"


def test_pipelined_requests_answered_in_order(gw: GatewayProcess, origin: OriginProcess) -> None:
    data = get("/p/1") + request("POST", "/echo", b"second body") + get("/p/3")
    with RawClient(gw.port) as client:
        client.send(data)
        one, two, three = (client.read_final(timeout=5) for _ in range(3))
        assert seen(one.body)["path"] == "/p/1"
        assert two.body == b"second body"
        assert seen(three.body)["path"] == "/p/3"
    assert [r.target for r in origin.received()] == ["/p/1", "/echo", "/p/3"]


def test_pipelined_slow_first_response_keeps_order(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        client.send(get("/slow?seconds=0.5") + get("/p/fast"))
        first = client.read_final(timeout=5)
        second = client.read_final(timeout=5)
        assert first.body == b"slow done\n"
        assert seen(second.body)["path"] == "/p/fast"


# --- bodies ------------------------------------------------------------------------------------


def test_upload_5mib_with_content_length(gw: GatewayProcess, origin: OriginProcess) -> None:
    body = os.urandom(5 * 1024 * 1024)
    with RawClient(gw.port, timeout=30) as client:
        client.send(request("POST", "/echo", body, headers={"Content-Type": "application/x-test"}))
        response = client.read_final(timeout=30)
    assert response.status == 200
    assert response.headers.get("content-length") == str(len(body))
    assert response.body == body
    (got,) = origin.received()
    assert got.body == body
    assert got.header("content-length") == str(len(body)) and not got.chunked


def test_chunked_upload_is_rechunked(gw: GatewayProcess, origin: OriginProcess) -> None:
    pieces = [b"a" * 1, b"b" * 10, os.urandom(70000), b"c" * 3]
    body = (
        b"1;ext=1\r\na\r\n"
        + b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces[1:])
        + b"0\r\nX-Trailer: t\r\n\r\n"
    )
    data = request("POST", "/echo", body, headers={"Transfer-Encoding": "chunked"})
    with RawClient(gw.port) as client:
        response = client.request(data, timeout=10)
    assert response.status == 200
    assert response.body == b"".join(pieces)
    (got,) = origin.received()
    assert got.chunked and got.body == b"".join(pieces)
    assert got.header("content-length") is None
    assert b";ext=1" not in got.raw, "chunk extensions must not be forwarded verbatim"


def test_chunked_upload_streamed_slowly(gw: GatewayProcess, origin: OriginProcess) -> None:
    """A chunked body sent in pieces over time still arrives whole, and the response follows."""
    with RawClient(gw.port) as client:
        client.send(request("POST", "/echo", None, headers={"Transfer-Encoding": "chunked"}))
        for i in range(5):
            client.send(b"6\r\npart-%d\r\n" % i)
            time.sleep(0.05)
        client.send(b"0\r\n\r\n")
        response = client.read_final(timeout=10)
    assert response.body == b"".join(b"part-%d" % i for i in range(5))


def test_response_chunked_passthrough(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/chunked?n=5"))
        assert response.status == 200 and response.chunked
        assert response.body == b"".join(b"chunk %d\n" % i for i in range(5))
        assert client.request(get("/after")).status == 200  # connection still usable


def test_close_delimited_becomes_chunked_for_http11(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/close-delimited"))
        assert response.status == 200
        assert response.chunked, response.headers
        assert response.body == b"close-delimited body\n" * 50 + b"the end\n"
        again = client.request(get("/after"))
        assert again.status == 200, "the client connection should stay open"


def test_close_delimited_stays_close_delimited_for_http10(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        client.send(request("GET", "/close-delimited", version="1.0"))
        data = client.read_until_close(5)
    (response,) = parse_responses(data)
    assert response.status == 200
    assert "transfer-encoding" not in response.headers and "content-length" not in response.headers
    assert response.body == b"close-delimited body\n" * 50 + b"the end\n"


def test_head_keeps_content_length_without_body(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        head = client.request(request("HEAD", "/head-cl"), method="HEAD")
        assert head.status == 200 and head.body == b""
        assert head.headers.get("content-length") == "100"
        big = client.request(request("HEAD", "/big?bytes=123456"), method="HEAD")
        assert big.headers.get("content-length") == "123456"
        after = client.request(get("/head-cl"))  # the next response parses cleanly: no stray body bytes
        assert after.body == b"h" * 100


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses(gw: GatewayProcess, origin: OriginProcess, status: int) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get(f"/status/{status}"))
        assert response.status == status and response.body == b""
        assert "transfer-encoding" not in response.headers
        assert response.headers.get("x-status") == str(status)
        assert seen(client.request(get("/after")).body)["path"] == "/after"


@pytest.mark.parametrize("status", [201, 404, 500, 503])
def test_upstream_statuses_pass_through(gw: GatewayProcess, origin: OriginProcess, status: int) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get(f"/status/{status}"))
    assert response.status == status and response.body == b"status %d\n" % status


def test_103_early_hints_forwarded(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        client.send(get("/early-hints"))
        hints = client.read_response(timeout=5)
        assert hints.status == 103
        assert hints.headers.get("link") == "</style.css>; rel=preload"
        final = client.read_response(timeout=5)
        assert final.status == 200 and final.body == b"after hints\n"


def test_1xx_not_sent_to_http10_client(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        client.send(request("GET", "/early-hints", version="1.0"))
        responses = parse_responses(client.read_until_close(5))
    assert [r.status for r in responses] == [200]


def test_100_continue(gw: GatewayProcess, origin: OriginProcess) -> None:
    head = request("POST", "/continue", None, headers={"Content-Length": "5", "Expect": "100-continue"})
    with RawClient(gw.port) as client:
        client.send(head)
        interim = client.read_response(timeout=3)  # must come before any body is sent
        assert interim.status == 100
        client.send(b"hello")
        final = client.read_final(timeout=5)
    assert final.status == 200
    assert final.json() == {"body_len": 5, "continue_sent": True}


# --- headers -----------------------------------------------------------------------------------


def test_hop_by_hop_request_headers_removed(gw: GatewayProcess, origin: OriginProcess) -> None:
    headers = {
        "Connection": "keep-alive, X-Foo, x-bar",
        "X-Foo": "1",
        "X-Bar": "2",
        "X-Kept": "3",
        "Keep-Alive": "timeout=300",
        "TE": "trailers",
        "Trailer": "X-T",
        "Proxy-Connection": "keep-alive",
        "Upgrade": "h2c",
    }
    with RawClient(gw.port) as client:
        assert client.request(get("/hop-req", headers=headers)).status == 200
    (got,) = origin.received()
    for name in ("X-Foo", "X-Bar", "Keep-Alive", "TE", "Trailer", "Proxy-Connection", "Upgrade"):
        assert got.header(name) is None, f"{name} reached the app: {got.raw!r}"
    assert got.header("connection") in (None, "keep-alive"), got.raw
    assert got.header("x-kept") == "3"


def test_hop_by_hop_response_headers_removed(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/hop"))
        assert response.status == 200 and response.body == b"hop\n"
        for name in ("X-Hop", "Keep-Alive"):
            assert name not in response.headers, response.headers
        assert response.headers.get("connection") is None, response.headers
        assert response.headers.get("x-end") == "1"
        assert not client.is_closed(0.2)


def test_x_forwarded_headers_added(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        info = seen(client.request(get("/xf", host="example.com:8080")).body)
    assert header_values(info, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(info, "x-forwarded-proto") == ["http"]
    assert header_values(info, "x-forwarded-host") == ["example.com:8080"]
    assert header_values(info, "host") == ["example.com:8080"]


def test_x_forwarded_for_appended_to_incoming(gw: GatewayProcess, origin: OriginProcess) -> None:
    headers = {
        "X-Forwarded-For": "203.0.113.7, 10.0.0.1",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "public.example",
    }
    with RawClient(gw.port) as client:
        info = seen(client.request(get("/xf", headers=headers)).body)
    assert header_values(info, "x-forwarded-for") == ["203.0.113.7, 10.0.0.1, 127.0.0.1"]
    assert header_values(info, "x-forwarded-proto") == ["https"]
    assert header_values(info, "x-forwarded-host") == ["public.example"]


def test_repeated_x_forwarded_for_lines_joined(gw: GatewayProcess, origin: OriginProcess) -> None:
    data = b"GET /xf HTTP/1.1\r\nHost: e\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n"
    with RawClient(gw.port) as client:
        info = seen(client.request(data).body)
    assert header_values(info, "x-forwarded-for") == ["1.1.1.1, 2.2.2.2, 127.0.0.1"]


def test_header_names_are_classified_whatever_their_case(gw: GatewayProcess, origin: OriginProcess) -> None:
    # Names as sent are remembered per spelling: every spelling, first seen or repeated, must still
    # be treated as the header it names (hop-by-hop dropped, X-Forwarded-For appended to).
    forwarded = ("x-forwarded-for", "X-FORWARDED-FOR", "X-Forwarded-For", "x-FoRwArDeD-fOr")
    hop_by_hop = ("keep-alive", "KEEP-ALIVE", "Keep-Alive", "kEeP-aLiVe")
    with RawClient(gw.port) as client:
        for spelling, hop in list(zip(forwarded, hop_by_hop, strict=True)) * 2:
            data = f"GET /xf HTTP/1.1\r\nHost: e\r\n{spelling}: 9.9.9.9\r\n{hop}: timeout=5\r\n\r\n"
            info = seen(client.request(data.encode()).body)
            assert header_values(info, "x-forwarded-for") == ["9.9.9.9, 127.0.0.1"], spelling
            assert header_values(info, "keep-alive") == [], hop


def test_via_both_ways(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/via", headers={"Via": "1.0 fred"}))
        plain = client.request(get("/via"))
    assert header_values(seen(response.body), "via") == ["1.0 fred, 1.1 sidegate"]
    assert header_values(seen(plain.body), "via") == ["1.1 sidegate"]
    assert response.headers.get_all("via") == ["1.1 sidegate"]


def test_request_id_kept_when_sent(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/rid", headers={"X-Request-Id": "client-id-123"}))
    assert header_values(seen(response.body), "x-request-id") == ["client-id-123"]
    assert response.headers.get_all("x-request-id") == ["client-id-123"]


def test_request_id_generated_and_consistent(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        one = client.request(get("/rid"))
        two = client.request(get("/rid"))
    ids = []
    for response in (one, two):
        (rid,) = header_values(seen(response.body), "x-request-id")
        assert response.headers.get_all("x-request-id") == [rid]
        ids.append(rid)
    assert ids[0] != ids[1]


def test_request_id_on_local_answers(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        missing = client.request(get("/nowhere"))
        given = client.request(get("/nowhere", headers={"X-Request-Id": "mine-1"}))
    assert missing.headers.get("x-request-id")
    assert given.headers.get("x-request-id") == "mine-1"


def test_forwarded_mode_rfc7239(gateway: GatewayFactory, origin: OriginProcess) -> None:
    gw = gateway(forwarded={"mode": "forwarded"})
    with RawClient(gw.port) as client:
        plain = seen(client.request(get("/fwd", host="example.com")).body)
        chained = seen(client.request(get("/fwd", headers={"Forwarded": "for=192.0.2.60;proto=https"})).body)
    assert header_values(plain, "forwarded") == ['for=127.0.0.1;proto=http;host="example.com"']
    assert header_values(plain, "x-forwarded-for") == []
    assert header_values(chained, "forwarded") == [
        'for=192.0.2.60;proto=https, for=127.0.0.1;proto=http;host="example.com"'
    ]


def test_untrusted_incoming_forwarding_headers_replaced(
    gateway: GatewayFactory, origin: OriginProcess
) -> None:
    gw = gateway(forwarded={"trust_incoming": False})
    headers = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    with RawClient(gw.port) as client:
        info = seen(client.request(get("/xf", headers=headers)).body)
    assert header_values(info, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(info, "x-forwarded-host") == ["example.com"]
    assert header_values(info, "x-forwarded-proto") == ["http"]


# --- routing -----------------------------------------------------------------------------------

ROUTING_CASES = [
    # (id, method, path, host, headers, route, path seen by the app)
    ("host-exact", "GET", "/x", "a.example.com", {}, "host-exact", "/x"),
    ("host-exact-port-ignored", "GET", "/x", "A.Example.COM:8080", {}, "host-exact", "/x"),
    ("host-wildcard", "GET", "/x", "b.example.com", {}, "host-wild", "/x"),
    ("host-wildcard-deep", "GET", "/x", "c.b.example.com", {}, "host-wild", "/x"),
    ("host-wildcard-not-apex", "GET", "/x", "example.com", {}, "all", "/x"),
    ("path-exact", "GET", "/exact", "example.com", {}, "exact", "/exact"),
    ("path-exact-not-prefix", "GET", "/exact/more", "example.com", {}, "all", "/exact/more"),
    ("path-exact-query-ignored", "GET", "/exact?a=1", "example.com", {}, "exact", "/exact"),
    ("path-regex", "GET", "/re/123", "example.com", {}, "regex", "/re/123"),
    ("path-regex-full-match", "GET", "/re/123x", "example.com", {}, "all", "/re/123x"),
    ("method-post", "POST", "/m/x", "example.com", {}, "method-post", "/m/x"),
    ("method-get-falls-through", "GET", "/m/x", "example.com", {}, "method-any", "/m/x"),
    ("header-match", "GET", "/h/x", "example.com", {"X-Env": "canary"}, "header", "/h/x"),
    ("header-mismatch", "GET", "/h/x", "example.com", {"X-Env": "prod"}, "all", "/h/x"),
    ("query-match", "GET", "/h/x?debug=1", "example.com", {}, "query", "/h/x"),
    ("query-mismatch", "GET", "/h/x?debug=0", "example.com", {}, "all", "/h/x"),
    ("first-match-wins", "GET", "/first/x", "example.com", {}, "first-a", "/first/x"),
    ("dot-segments-normalised", "GET", "/m/../exact", "example.com", {}, "exact", "/exact"),
    ("strip-prefix", "GET", "/api/users?id=7", "example.com", {}, "strip", "/users"),
    ("path-rewrite", "GET", "/old/thing?q=1", "example.com", {}, "path-rewrite", "/new"),
    ("regex-rewrite", "GET", "/v1/items/9", "example.com", {}, "regex-rewrite", "/v2/items/9"),
]


@pytest.mark.parametrize("case", [c[1:] for c in ROUTING_CASES], ids=[c[0] for c in ROUTING_CASES])
def test_routing(gw: GatewayProcess, origin: OriginProcess, case: tuple[Any, ...]) -> None:
    method, path, host, headers, route, app_path = case
    with RawClient(gw.port) as client:
        response = client.request(request(method, path, host=host, headers=headers), method=method)
    assert response.status == 200
    assert response.headers.get("x-route") == route
    (got,) = origin.received()
    assert got.path == app_path
    query = path.partition("?")[2]
    assert got.target == (f"{app_path}?{query}" if query else app_path), "the query must be kept"


def test_no_route_is_404_json(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/nowhere"))
        assert response.status == 404
        assert (response.headers.get("content-type") or "").startswith("application/json")
        body = response.json()
        assert body["error"] == "no_route" and body["status"] == 404 and "/nowhere" in body["detail"]
        assert client.request(get("/after")).status == 200, "a 404 must not close the connection"
    assert [r.target for r in origin.received()] == ["/after"]


def test_no_route_with_body_keeps_connection(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        assert client.request(request("POST", "/nowhere", b"x" * 1000)).status == 404
        assert client.request(get("/after")).status == 200
    assert [r.target for r in origin.received()] == ["/after"]


def test_absolute_form_target_routes_by_its_authority(gw: GatewayProcess, origin: OriginProcess) -> None:
    data = b"GET http://a.example.com/abs?x=1 HTTP/1.1\r\nHost: other.example\r\n\r\n"
    with RawClient(gw.port) as client:
        response = client.request(data)
    assert response.headers.get("x-route") == "host-exact"
    (got,) = origin.received()
    assert got.target == "/abs?x=1"
    assert got.header_all("host") == ["a.example.com"]


def test_header_edits_both_ways(gw: GatewayProcess, origin: OriginProcess) -> None:
    headers = {"X-A": "from-client", "X-B": "from-client", "X-C": "secret", "X-D": "kept"}
    with RawClient(gw.port) as client:
        response = client.request(get("/edits", headers=headers))
    (got,) = origin.received()
    assert got.path == "/hop"
    assert got.header_all("x-a") == ["set-by-gw"]
    assert got.header_all("x-b") == ["from-client", "added-by-gw"]
    assert got.header_all("x-c") == []
    assert got.header_all("x-d") == ["kept"]
    assert response.headers.get_all("content-type") == ["text/x-set"]
    assert response.headers.get_all("x-added") == ["1"]
    assert "x-end" not in response.headers


def test_direct_response_filter(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/maint"))
        assert response.status == 503
        assert response.body == b"maintenance"
        assert response.headers.get("content-type") == "text/plain"
        assert response.headers.get("x-maint") == "1"
        assert client.request(get("/after")).status == 200
    assert [r.target for r in origin.received()] == ["/after"]


def test_http10_without_host(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        client.send(b"GET /old-client HTTP/1.0\r\n\r\n")
        data = client.read_until_close(5)
    (response,) = parse_responses(data)
    assert response.status == 200
    assert (response.headers.get("connection") or "close").lower() == "close"
    (got,) = origin.received()
    assert got.version == "HTTP/1.1" and got.path == "/old-client"
    assert len(got.header_all("host")) == 1


def test_http10_keep_alive(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        first = client.request(request("GET", "/ka10", headers={"Connection": "keep-alive"}, version="1.0"))
        assert first.status == 200
        assert (first.headers.get("connection") or "").lower() == "keep-alive"
        second = client.request(request("GET", "/ka10b", version="1.0"))
        assert second.status == 200
        assert client.is_closed(2.0), "an HTTP/1.0 request without keep-alive ends the connection"


def test_connection_close_honoured(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/bye", headers={"Connection": "close"}))
        assert response.status == 200
        assert (response.headers.get("connection") or "").lower() == "close"
        assert client.is_closed(2.0)


def test_chunked_response_to_http10_client(gw: GatewayProcess, origin: OriginProcess) -> None:
    """An HTTP/1.0 client cannot read chunked: it gets the plain body, delimited by the close."""
    with RawClient(gw.port) as client:
        client.send(request("GET", "/chunked?n=4", version="1.0"))
        data = client.read_until_close(5)
    (response,) = parse_responses(data)
    assert "transfer-encoding" not in response.headers
    assert response.body == b"".join(b"chunk %d\n" % i for i in range(4))


def test_query_string_forwarded_verbatim(gw: GatewayProcess, origin: OriginProcess) -> None:
    target = "/q?a=%2F%20x&b=c+d&flag&e=%E2%82%AC"
    with RawClient(gw.port) as client:
        assert client.request(get(target)).status == 200
    (got,) = origin.received()
    assert got.target == target


def test_invalid_request_id_replaced(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        response = client.request(get("/rid", headers={"X-Request-Id": "has space"}))
    (rid,) = header_values(seen(response.body), "x-request-id")
    assert rid != "has space" and " " not in rid
    assert response.headers.get("x-request-id") == rid


def test_upstream_connection_close_not_reused(gw: GatewayProcess, origin: OriginProcess) -> None:
    """The app said ``Connection: close`` (and closes a moment later): the next request, even a
    POST that cannot be retried, must go on a new upstream connection."""
    with RawClient(gw.port) as client:
        first = client.request(get("/close-after?delay=0.5"))
        assert first.status == 200 and first.body == b"closing\n"
        second = client.request(request("POST", "/echo", b"must arrive"), timeout=5)
    assert second.status == 200, second
    assert second.body == b"must arrive"
    first_rec, second_rec = origin.received()
    assert first_rec.peer_port != second_rec.peer_port


def test_expect_continue_with_local_answer_does_not_wait_for_body(
    gateway: GatewayFactory, origin: OriginProcess
) -> None:
    """A request Sidegate answers itself (no route) with ``Expect: 100-continue``: the client is
    waiting for 100 before sending the body, so the final answer must come without the body."""
    gw = gateway(routes=ROUTES, drain_timeout="1s")  # own gateway: a hung connection delays the drain
    head = request("POST", "/nowhere", None, headers={"Content-Length": "5", "Expect": "100-continue"})
    with RawClient(gw.port) as client:
        client.send(head)
        response = client.read_response(timeout=3)
    assert response.status == 404
    assert origin.received() == []


def test_half_closed_client_still_gets_its_response(gw: GatewayProcess, origin: OriginProcess) -> None:
    """A client that shuts down its sending side after the request (SHUT_WR) is answered, then closed."""
    data = send_raw(gw.port, get("/slow?seconds=0.2"), 5.0, half_close=True)
    (response,) = parse_responses(data)
    assert response.status == 200 and response.body == b"slow done\n"


def test_half_closed_client_gets_every_pipelined_response(gw: GatewayProcess, origin: OriginProcess) -> None:
    """Two pipelined requests, then SHUT_WR (``printf ... | nc -N``): both are answered."""
    data = send_raw(gw.port, get("/slow?seconds=0.2") + get("/half"), 5.0, half_close=True)
    responses = parse_responses(data)
    assert [r.status for r in responses] == [200, 200]
    assert responses[0].body == b"slow done\n"
    assert seen(responses[1].body)["path"] == "/half"


def test_requests_after_connection_close_are_ignored(gw: GatewayProcess, origin: OriginProcess) -> None:
    data = get("/last", headers={"Connection": "close"}) + get("/never")
    with RawClient(gw.port) as client:
        client.send(data)
        rest = client.read_until_close(5)
    responses = parse_responses(rest)
    assert [seen(r.body)["path"] for r in responses] == ["/last"]
    assert [r.target for r in origin.received()] == ["/last"]


def test_head_of_chunked_response_then_next_request(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        head = client.request(request("HEAD", "/chunked?n=3"), method="HEAD")
        assert head.status == 200 and head.body == b""
        after = client.request(get("/after"))
        assert seen(after.body)["path"] == "/after"


def test_pipelined_body_over_buffer_waits_its_turn(gw: GatewayProcess, origin: OriginProcess) -> None:
    """A pipelined upload bigger than the 64 KiB buffer behind a slow request: reading pauses,
    then resumes, and the body arrives whole."""
    body = os.urandom(300 * 1024)
    with RawClient(gw.port, timeout=10) as client:
        client.send(get("/slow?seconds=0.3") + request("POST", "/echo", body))
        first = client.read_final(timeout=5)
        second = client.read_final(timeout=10)
    assert first.body == b"slow done\n"
    assert second.status == 200 and second.body == body


def test_head_of_local_answer_has_no_body(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        missing = client.request(request("HEAD", "/nowhere"), method="HEAD")
        maint = client.request(request("HEAD", "/maint"), method="HEAD")
        after = client.request(get("/after"))  # parses cleanly: no body bytes were sent for HEAD
    assert missing.status == 404 and missing.body == b""
    assert maint.status == 503 and maint.headers.get("content-length") == "11"
    assert seen(after.body)["path"] == "/after"


def test_app_rejecting_before_reading_the_body(gw: GatewayProcess, origin: OriginProcess) -> None:
    """The app answers 413 from the head alone and closes: the client gets that 413."""
    with RawClient(gw.port) as client:
        client.send(request("POST", "/reject-early", None, headers={"Content-Length": str(1024 * 1024)}))
        response = client.read_final(timeout=5)
        assert response.status == 413 and response.body == b"too big for the app\n"
        assert client.is_closed(3.0), "the unread request body makes the connection unusable"


def test_upstream_keepalive_after_bodiless_responses(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        for path in ("/status/204", "/status/304", "/after"):
            client.request(request("HEAD", "/head-cl"), method="HEAD")
            client.request(get(path))
    assert len({r.peer_port for r in origin.received()}) == 1


def test_sixty_pipelined_requests_in_one_write(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        client.send(b"".join(get(f"/n/{i}") for i in range(60)))
        paths = [seen(client.read_final(timeout=5).body)["path"] for _ in range(60)]
    assert paths == [f"/n/{i}" for i in range(60)]

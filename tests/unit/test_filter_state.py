"""A filter instance is shared by every request of its route: what it learns about one request
stays with that request (its :class:`RequestContext`), so requests in flight together on one
route never see each other's state.

Each test compiles a route and runs two requests' hooks interleaved, the way two connections of
one worker would: both heads in, then both responses.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.snapshot import Route
from sidegate.filters.base import RequestContext
from sidegate.http.messages import LocalResponse, RequestHead, ResponseHead
from sidegate.ratelimit.pod import remove_table


@pytest.fixture(autouse=True, scope="module")
def _table() -> Iterator[None]:
    yield
    remove_table()  # the rate-limit table this process made, named after its pid


def route(name: str, filters: str) -> Route:
    text = textwrap.dedent(f"""\
        listeners:
          inbound: {{address: "127.0.0.1:8080"}}
          admin:   {{address: "127.0.0.1:9901"}}
        upstreams:
          app: {{endpoints: ["127.0.0.1:3000"]}}
        routes:
          - name: {name}
            match: {{path_prefix: "/"}}
            upstream: app
            filters:
              {filters}
        """)
    (compiled,) = compile_checked(check_text(text, "test.yaml", environ={})).routes
    return compiled


def request(client_ip: str, *headers: tuple[bytes, bytes]) -> RequestHead:
    req = RequestHead()
    req.method, req.path, req.host = b"GET", b"/", b"example.com"
    req.client_ip = client_ip
    req.headers.extend(headers)
    return req


def respond(route: Route, req: RequestHead, ctx: RequestContext) -> dict[bytes, bytes]:
    response = ResponseHead()
    for flt in route.on_response:
        assert flt.on_response(req, response, ctx) is None
    return dict(response.headers)


def test_each_request_gets_the_cors_answer_for_its_own_origin() -> None:
    cors = route("state-cors", 'cors: {origins: ["https://a.example", "https://b.example"]}')
    a = request("10.0.0.1", (b"Origin", b"https://a.example"))
    b = request("10.0.0.2", (b"Origin", b"https://b.example"))
    none = request("10.0.0.3")
    contexts = [RequestContext("state-cors") for _ in range(3)]
    for req, ctx in zip((a, b, none), contexts, strict=True):
        assert all(flt.on_request(req, ctx) is None for flt in cors.on_request)
    seen = [respond(cors, req, ctx) for req, ctx in zip((a, b, none), contexts, strict=True)]
    assert seen[0][b"Access-Control-Allow-Origin"] == b"https://a.example"
    assert seen[1][b"Access-Control-Allow-Origin"] == b"https://b.example"
    assert b"Access-Control-Allow-Origin" not in seen[2]


def test_each_response_shows_its_own_callers_limit() -> None:
    limited = route("state-limit", "rate_limit: {requests: 5, per: 1h, key: ip}")
    (limit,) = limited.on_request
    first, second = RequestContext("state-limit"), RequestContext("state-limit")
    a, b = request("10.1.0.1"), request("10.1.0.2")
    assert limit.on_request(a, RequestContext("state-limit")) is None  # a's first one, answered
    assert limit.on_request(a, first) is None  # a's second one: 3 left for a
    assert limit.on_request(b, second) is None  # b's first one: 4 left for b
    # Responses come back in the other order: each still carries its own caller's count.
    assert respond(limited, b, second)[b"RateLimit"] == b'"0";r=4;t=720'
    assert respond(limited, a, first)[b"RateLimit"] == b'"0";r=3;t=1440'


def test_a_refusal_carries_the_same_fields_an_allowed_response_would() -> None:
    limited = route("state-refusal", "rate_limit: {requests: 1, per: 1m, key: ip}")
    (limit,) = limited.on_request
    a = request("10.2.0.1")
    allowed_ctx = RequestContext("state-refusal")
    assert limit.on_request(a, allowed_ctx) is None
    refused = limit.on_request(a, RequestContext("state-refusal"))
    assert isinstance(refused, LocalResponse) and refused.status == 429
    assert refused.body == b'{"error": "rate_limited", "status": 429, "detail": "limit 0: retry in 60 s"}\n'
    fields = dict(refused.headers)
    assert fields[b"Retry-After"] == b"60" and fields[b"RateLimit-Policy"] == b'"0";q=1;w=60'
    assert fields[b"RateLimit"] == b'"0";r=0;t=60'
    assert respond(limited, a, allowed_ctx)[b"RateLimit"] == b'"0";r=0;t=60'

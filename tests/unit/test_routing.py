"""Route matching, as configured in YAML and as the router sees requests."""

from __future__ import annotations

import textwrap

import pytest

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.snapshot import Route
from sidegate.http.messages import RequestHead
from sidegate.routing.router import RouteMatch, Router, ValueTest, parse_query

ROUTE = Route(name="r", upstream="app")


def router_for(routes: str) -> Router:
    """The router of a config whose ``routes:`` list is ``routes`` (YAML, unindented items)."""
    text = "upstreams:\n  app: {endpoints: ['127.0.0.1:3000']}\nroutes:\n"
    text += textwrap.indent(textwrap.dedent(routes).strip(), "  ") + "\n"
    return compile_checked(check_text(text, environ={})).router


def req(
    path: bytes = b"/",
    *,
    method: bytes = b"GET",
    host: bytes = b"example.com",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> RequestHead:
    head = RequestHead()
    head.method, head.path, head.host, head.query = method, path, host, query
    head.headers = headers or []
    return head


def name(router: Router, request: RequestHead) -> str | None:
    route = router.match(request)
    return route.name if route else None


def test_prefix_slash_matches_everything() -> None:
    router = router_for("- {name: all, match: {path_prefix: /}, upstream: app}")
    assert name(router, req(b"/")) == "all"
    assert name(router, req(b"/a/b/c", method=b"DELETE", host=b"")) == "all"


def test_exact_path() -> None:
    router = router_for("- {name: health, match: {path: /health}, upstream: app}")
    assert name(router, req(b"/health")) == "health"
    assert name(router, req(b"/health/")) is None
    assert name(router, req(b"/healthz")) is None


def test_prefix_is_a_plain_string_prefix_like_envoy() -> None:
    router = router_for(
        """
        - {name: api-dir, match: {path_prefix: /api/}, upstream: app}
        - {name: api, match: {path_prefix: /api}, upstream: app}
        """
    )
    assert name(router, req(b"/api/users")) == "api-dir"
    assert name(router, req(b"/api")) == "api"
    assert name(router, req(b"/apix")) == "api"  # write "/api/" to stop at a segment
    assert name(router, req(b"/ap")) is None


def test_regex_must_match_the_whole_path() -> None:
    router = router_for(r"- {name: item, match: {path_regex: '/items/\d+'}, upstream: app}")
    assert name(router, req(b"/items/42")) == "item"
    assert name(router, req(b"/items/42/edit")) is None
    assert name(router, req(b"/v2/items/42")) is None


def test_first_declared_route_wins() -> None:
    router = router_for(
        """
        - {name: one, match: {path_prefix: /a}, upstream: app}
        - {name: two, match: {path: /a/b}, upstream: app}
        - {name: fallback, match: {path_prefix: /}, upstream: app}
        """
    )
    assert name(router, req(b"/a/b")) == "one"
    assert name(router, req(b"/b")) == "fallback"
    assert [route.name for route in router.routes] == ["one", "two", "fallback"]
    assert len(router) == 3


def test_hosts_exact_and_wildcard() -> None:
    router = router_for(
        """
        - {name: api, match: {path_prefix: /, hosts: [API.example.com]}, upstream: app}
        - {name: tenants, match: {path_prefix: /, hosts: ["*.tenants.example.com", other.org]}, upstream: app}
        - {name: any, match: {path_prefix: /, hosts: ["*"]}, upstream: app}
        """
    )
    assert name(router, req(host=b"api.example.com")) == "api"  # config names are lower-cased
    assert name(router, req(host=b"a.tenants.example.com")) == "tenants"
    assert name(router, req(host=b"a.b.tenants.example.com")) == "tenants"  # one or more labels
    assert name(router, req(host=b"other.org")) == "tenants"
    assert name(router, req(host=b"tenants.example.com")) == "any"  # the wildcard needs a label
    assert name(router, req(host=b"xtenants.example.com")) == "any"
    assert name(router, req(host=b"")) == "any"


def test_methods() -> None:
    router = router_for(
        """
        - {name: read, match: {path_prefix: /, methods: [get, HEAD]}, upstream: app}
        - {name: delete, match: {path_prefix: /, methods: [DELETE]}, upstream: app}
        """
    )
    assert name(router, req(method=b"GET")) == "read"
    assert name(router, req(method=b"HEAD")) == "read"
    assert name(router, req(method=b"DELETE")) == "delete"
    assert name(router, req(method=b"POST")) is None


def test_headers_exact_regex_present_absent() -> None:
    router = router_for(
        r"""
        - {name: beta, match: {path_prefix: /, headers: {X-Channel: beta}}, upstream: app}
        - name: v2
          match: {path_prefix: /, headers: {accept: {regex: 'application/vnd\.v2\+json.*'}}}
          upstream: app
        - {name: debug, match: {path_prefix: /, headers: {x-debug: {present: true}}}, upstream: app}
        - {name: anon, match: {path_prefix: /, headers: {authorization: {present: false}}}, upstream: app}
        """
    )
    assert name(router, req(headers=[(b"x-channel", b"beta")])) == "beta"  # names are case-insensitive
    assert name(router, req(headers=[(b"X-CHANNEL", b"stable"), (b"x-channel", b"beta")])) == "beta"
    assert name(router, req(headers=[(b"X-Channel", b"Beta"), (b"Authorization", b"x")])) is None
    assert name(router, req(headers=[(b"Accept", b"application/vnd.v2+json; q=1")])) == "v2"
    assert name(router, req(headers=[(b"X-Debug", b""), (b"Authorization", b"x")])) == "debug"
    assert name(router, req(headers=[])) == "anon"
    assert name(router, req(headers=[(b"Authorization", b"Bearer x")])) is None


def test_query_parameters_are_percent_decoded() -> None:
    router = router_for(
        """
        - {name: search, match: {path: /s, query: {q: "hello world", lang: {regex: "en|fr"}}}, upstream: app}
        - {name: café, match: {path: /s, query: {q: "café"}}, upstream: app}
        - {name: flag, match: {path: /s, query: {debug: {present: true}}}, upstream: app}
        - {name: plain, match: {path: /s, query: {preview: {present: false}}}, upstream: app}
        """
    )
    assert name(router, req(b"/s", query=b"q=hello%20world&lang=en")) == "search"
    assert name(router, req(b"/s", query=b"lang=fr&q=hello+world")) == "search"
    assert name(router, req(b"/s", query=b"q=hello+world&lang=english")) == "plain"  # regex is a full match
    assert name(router, req(b"/s", query=b"q=caf%C3%A9&preview=1")) == "café"
    assert name(router, req(b"/s", query=b"debug&preview=1")) == "flag"  # no "=": present, empty
    assert name(router, req(b"/s", query=b"preview=")) is None
    assert name(router, req(b"/s")) == "plain"


def test_all_conditions_of_a_route_must_hold() -> None:
    router = router_for(
        """
        - name: admin
          match:
            path_prefix: /admin/
            hosts: [ops.example.com]
            methods: [POST]
            headers: {x-role: admin}
            query: {confirm: "yes"}
          upstream: app
        """
    )
    good = req(b"/admin/x", method=b"POST", host=b"ops.example.com", query=b"confirm=yes")
    good.headers = [(b"X-Role", b"admin")]
    assert name(router, good) == "admin"
    for attr, value in [("path", b"/x"), ("method", b"GET"), ("host", b"a.com"), ("query", b"")]:
        bad = req(b"/admin/x", method=b"POST", host=b"ops.example.com", query=b"confirm=yes")
        bad.headers = [(b"X-Role", b"admin")]
        setattr(bad, attr, value)
        assert name(router, bad) is None, attr


def test_no_route_matches() -> None:
    router = router_for("- {name: only, match: {path: /only}, upstream: app}")
    assert router.match(req(b"/")) is None


def test_explain_says_why_each_route_did_not_match() -> None:
    router = router_for(
        r"""
        - {name: exact, match: {path: /x}, upstream: app}
        - {name: prefix, match: {path_prefix: /api/}, upstream: app}
        - {name: regex, match: {path_regex: '/\d+'}, upstream: app}
        - {name: host, match: {path_prefix: /, hosts: [a.com, "*.b.com"]}, upstream: app}
        - {name: method, match: {path_prefix: /, methods: [POST, PUT]}, upstream: app}
        - {name: header, match: {path_prefix: /, headers: {x-a: "1"}}, upstream: app}
        - {name: query, match: {path_prefix: /, query: {v: {regex: "[0-9]+"}}}, upstream: app}
        - {name: all, match: {path_prefix: /}, upstream: app}
        - {name: all-again, match: {path_prefix: /}, upstream: app}
        """
    )
    reasons = dict(router.explain(req(b"/y", query=b"v=x", headers=[(b"X-A", b"2")])))
    assert reasons == {
        "exact": "path '/y' is not '/x'",
        "prefix": "path '/y' does not start with '/api/'",
        "regex": "path '/y' does not match regex '/\\\\d+'",
        "host": "host 'example.com' is not one of a.com, *.b.com",
        "method": "method GET is not one of POST, PUT",
        "header": "header x-a ('2'): wanted equal to '1'",
        "query": "query parameter v ('x'): wanted matching regex '[0-9]+'",
        "all": "matches",
        "all-again": "matches, but route 'all' comes first",
    }


def test_router_can_be_built_from_plain_values() -> None:
    api, fallback = Route(name="api", upstream="app"), Route(name="fallback", upstream="app")
    router = Router(
        [
            (RouteMatch(path_prefix=b"/api/", query=((b"v", ValueTest(exact=b"2")),)), api),
            (RouteMatch(path_prefix=b"/"), fallback),
        ]
    )
    assert router.match(req(b"/api/x", query=b"v=2")) is api
    assert router.match(req(b"/api/x", query=b"v=1")) is fallback
    with pytest.raises(ValueError, match="no path match"):
        Router([(RouteMatch(), api)])


@pytest.mark.parametrize(
    ("query", "params"),
    [
        (b"", {}),
        (b"a=1", {b"a": [b"1"]}),
        (b"a=1&b=x%20y&a=2", {b"a": [b"1", b"2"], b"b": [b"x y"]}),
        (b"flag&&x=", {b"flag": [b""], b"x": [b""]}),
        (b"k%3D=v%26w", {b"k=": [b"v&w"]}),
        (b"q=a+b%2Bc", {b"q": [b"a b+c"]}),
        (b"bad=%zz", {b"bad": [b"%zz"]}),
    ],
)
def test_parse_query(query: bytes, params: dict[bytes, list[bytes]]) -> None:
    assert parse_query(query) == params


# --- against the real HTTP parser --------------------------------------------------------------


def parsed(raw: bytes) -> RequestHead:
    """The head the HTTP layer hands to the router for ``raw`` request bytes."""
    from sidegate.http.request_head import ParsedRequest
    from sidegate.http.request_parser import RequestParser, RequestSink

    heads: list[ParsedRequest] = []

    class Sink(RequestSink):
        def on_request_head(self, head: ParsedRequest) -> None:
            heads.append(head)

        def on_request_body(self, data: bytes) -> None:
            pass

        def on_request_end(self) -> None:
            pass

    RequestParser(Sink(), 32 * 1024, 100).feed(raw)
    (head,) = heads
    return head


def test_routing_parsed_requests_including_headers_the_parser_keeps_apart() -> None:
    router = router_for(
        """
        - {name: ws, match: {path_prefix: /, headers: {Upgrade: {regex: "(?i)websocket"}}}, upstream: app}
        - {name: tls, match: {path_prefix: /, headers: {x-forwarded-proto: https}}, upstream: app}
        - name: api
          match: {path_prefix: /api/, hosts: [api.example.com], query: {q: "a b"}, headers: {x-v: "2"}}
          upstream: app
        - {name: other, match: {path_prefix: /}, upstream: app}
        """
    )
    ws = b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n"
    assert name(router, parsed(ws)) == "ws"
    tls = b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n\r\n"
    assert name(router, parsed(tls)) == "tls"
    api = b"GET /api/s?q=a%20b HTTP/1.1\r\nHost: API.Example.com:8080\r\nX-V: 2\r\n\r\n"
    assert name(router, parsed(api)) == "api"
    assert name(router, parsed(api.replace(b"X-V: 2", b"X-V: 3"))) == "other"


def test_headers_the_http_layer_consumes_cannot_be_matched() -> None:
    with pytest.raises(ValueError, match="cannot match on the content-length header"):
        Router(
            [(RouteMatch(path_prefix=b"/", headers=((b"content-length", ValueTest(present=True)),)), ROUTE)]
        )

"""Compiling a config into the Snapshot the data plane runs on."""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import dataclass

import pytest

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.redact import REDACTED, is_secret_name, redact
from sidegate.config.snapshot import Endpoint, HeaderEdits, ListenerSpec, Rewrite, Snapshot
from sidegate.errors import ConfigError
from sidegate.filters import registry
from sidegate.filters.base import Filter, FilterConfig, RequestContext
from sidegate.http.messages import RequestHead, ResponseHead
from support.configs import MINIMAL


def compile_text(text: str) -> Snapshot:
    return compile_checked(check_text(textwrap.dedent(text), "test.yaml", environ={}))


def request(path: bytes = b"/") -> RequestHead:
    req = RequestHead()
    req.method, req.path, req.host = b"GET", path, b"example.com"
    return req


def test_minimal_file_compiles() -> None:
    snapshot = compile_text(MINIMAL)
    assert snapshot.inbound == ListenerSpec("127.0.0.1", 8080)
    assert snapshot.admin == ListenerSpec("127.0.0.1", 9901)
    assert snapshot.upstreams["app"].endpoints == (Endpoint("127.0.0.1", 3000),)
    assert snapshot.upstreams["app"].balancer == "round_robin"
    assert snapshot.workers == 1 and snapshot.drain_timeout == 20.0
    assert snapshot.source == "test.yaml"
    (route,) = snapshot.routes
    assert route.name == "all" and route.upstream == "app"
    assert (route.timeouts.connect, route.timeouts.response, route.timeouts.idle) == (2.0, 15.0, 60.0)
    assert route.max_body == 10 * 1024 * 1024
    assert route.rewrite is None and route.request_headers is None and route.response_headers is None
    assert route.filters == route.on_request == route.on_response == route.on_log == ()
    assert snapshot.router.match(request(b"/anything")) is route


def test_listener_limits_and_forwarding() -> None:
    snapshot = compile_text(
        MINIMAL.replace(
            '  inbound: {address: "127.0.0.1:8080"}',
            '  inbound:\n    address: "[::1]:0"\n'
            "    limits: {head_size: 16KiB, buffer: 1MiB, head_timeout: 1.5s}\n"
            '    forwarded: {mode: forwarded, trust_incoming: false, via: ""}',
        )
    )
    assert snapshot.inbound == ListenerSpec("::1", 0)
    assert snapshot.limits.head_size == 16384
    assert snapshot.limits.buffer_high_water == 1024 * 1024
    assert snapshot.limits.head_timeout == 1.5
    assert snapshot.limits.header_count == 100
    assert snapshot.forwarded.mode == "forwarded"
    assert snapshot.forwarded.trust_incoming is False
    assert snapshot.forwarded.via == b""


def test_route_values_are_precomputed_as_bytes() -> None:
    snapshot = compile_text(
        MINIMAL
        + """\
    rewrite: {strip_prefix: /api}
    max_body: 0
    timeouts: {response: 0}
    headers:
      request: {set: {X-Gateway: sidegate}, add: {X-Tag: a}, remove: [X-Internal]}
      response: {remove: [Server]}
"""
    )
    (route,) = snapshot.routes
    assert route.request_headers == HeaderEdits(
        set=((b"X-Gateway", b"sidegate"),), add=((b"X-Tag", b"a"),), remove=frozenset({b"x-internal"})
    )
    assert route.response_headers == HeaderEdits(remove=frozenset({b"server"}))
    assert route.rewrite == Rewrite(strip_prefix=b"/api")
    assert route.max_body == sys.maxsize  # 0 = no limit
    assert route.timeouts.response == 0.0  # 0 = off


@pytest.mark.parametrize(
    ("rewrite", "path", "upstream_path"),
    [
        ("{strip_prefix: /api}", b"/api/users", b"/users"),
        ("{strip_prefix: /api}", b"/api", b"/"),
        ("{strip_prefix: /api/}", b"/api/users", b"/users"),
        ("{path: /health}", b"/status/anything", b"/health"),
        ("{regex: {pattern: '^/v1/(\\w+)/(\\d+)$', replacement: '/\\2/\\1'}}", b"/v1/users/42", b"/42/users"),
        ("{regex: {pattern: '^/old/', replacement: '/new/'}}", b"/old/old/x", b"/new/old/x"),
    ],
)
def test_rewrite_application(rewrite: str, path: bytes, upstream_path: bytes) -> None:
    (route,) = compile_text(MINIMAL + f"    rewrite: {rewrite}\n").routes
    assert route.rewrite is not None
    if route.rewrite.regex is not None:
        assert isinstance(route.rewrite.regex.pattern, bytes)
    assert route.rewrite.apply(path) == upstream_path


def test_upstreams_with_many_endpoints_and_ipv6() -> None:
    snapshot = compile_text(
        MINIMAL.replace(
            'app: {endpoints: ["127.0.0.1:3000"]}',
            'app: {endpoints: ["127.0.0.1:3000", "[::1]:3001", "app.local:3002"], pool: {max_idle: 8}}',
        )
    )
    spec = snapshot.upstreams["app"]
    assert spec.endpoints == (Endpoint("127.0.0.1", 3000), Endpoint("::1", 3001), Endpoint("app.local", 3002))
    assert spec.max_idle == 8 and spec.idle_timeout == 60.0
    with pytest.raises(TypeError):
        snapshot.upstreams["other"] = spec  # type: ignore[index]


# --- filters -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaggerConfig(FilterConfig):
    tag: str = "x"
    api_key: str = ""


class Tagger(Filter):
    """Test filter: works on the response and the log only."""

    name = "tagger"
    config_model = TaggerConfig

    def on_response(self, request: RequestHead, response: ResponseHead, ctx: RequestContext) -> None:
        response.headers.append((b"x-tag", b"1"))

    def on_log(self, request: RequestHead, ctx: RequestContext) -> None:
        pass


class Exploding(Filter):
    """Test filter whose set-up fails."""

    name = "exploding"
    config_model = FilterConfig

    def __init__(self, config: FilterConfig) -> None:
        raise RuntimeError("no such key file")


@pytest.fixture
def test_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._REGISTRY, "tagger", Tagger)
    monkeypatch.setitem(registry._REGISTRY, "exploding", Exploding)


@pytest.mark.usefixtures("test_filters")
def test_filters_are_built_once_and_sorted_by_hook_in_chain_order() -> None:
    snapshot = compile_text(
        MINIMAL
        + """\
    filters:
      tagger: {tag: first}
      direct_response: {status: 503, body: down}
"""
    )
    (route,) = snapshot.routes
    tagger, direct = route.filters
    assert isinstance(tagger, Tagger) and isinstance(tagger.config, TaggerConfig)
    assert tagger.config.tag == "first"
    assert route.on_request == (direct,)
    assert route.on_response == (tagger,)
    assert route.on_log == (tagger,)
    response = direct.on_request(request(), RequestContext("all"))
    assert response is not None and response.status == 503 and response.body == b"down"


@pytest.mark.usefixtures("test_filters")
def test_a_filter_that_fails_to_start_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        compile_text(MINIMAL + "    filters:\n      exploding: {}\n")
    (issue,) = info.value.issues
    assert issue.path == "routes[0].filters.exploding"
    assert issue.line == 11
    assert issue.message == "cannot set up filter: no such key file"


# --- the dump ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("test_filters")
def test_dump_is_json_with_secrets_redacted() -> None:
    text = MINIMAL.replace(
        'match: {path_prefix: "/"}', "match: {path_prefix: /, headers: {X-Api-Key: {present: true}}}"
    )
    snapshot = compile_text(
        text
        + """\
    headers: {request: {set: {Authorization: "Bearer hunter2", X-Trace: on}}}
    filters:
      tagger: {tag: visible, api_key: hunter2}
"""
    )
    text = json.dumps(snapshot.dump)
    assert "hunter2" not in text
    route = snapshot.dump["routes"][0]
    assert route["headers"]["request"]["set"] == {"Authorization": REDACTED, "X-Trace": "on"}
    assert route["match"]["headers"] == {"X-Api-Key": REDACTED}
    assert route["filters"] == {"tagger": {"tag": "visible", "api_key": REDACTED}}
    assert route["max_body"] == 10 * 1024 * 1024
    assert snapshot.dump["listeners"]["inbound"]["limits"]["head_timeout"] == 10.0


@pytest.mark.parametrize(
    "name",
    ["password", "db_password", "Secret", "client_secret", "token", "AccessToken", "credentials",
     "Authorization", "proxy-authorization", "api_key", "x-api-key", "key", "keys", "cache_key"],
)  # fmt: skip
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["keepalive_idle", "tag", "hosts", "monkey", "path_prefix", "upstream"])
def test_names_that_are_not_secret(name: str) -> None:
    assert not is_secret_name(name)


def test_redact_goes_through_lists_and_mappings() -> None:
    data = {"a": [{"password": "p", "user": "u"}], "keys": ["k1", "k2"], "n": 1}
    assert redact(data) == {"a": [{"password": REDACTED, "user": "u"}], "keys": REDACTED, "n": 1}


def test_path_regex_is_compiled_as_bytes() -> None:
    snapshot = compile_text(MINIMAL.replace('path_prefix: "/"', 'path_regex: "/items/[0-9]+"'))
    assert snapshot.router.match(request(b"/items/12")) is snapshot.routes[0]
    assert snapshot.router.match(request(b"/items/12/x")) is None

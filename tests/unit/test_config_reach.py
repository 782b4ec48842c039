"""What a file asks of its filters and route matches that they cannot do (config/reach.py).

Each case loads a config text in-process as the checker does; the CLI tests (tests/e2e/test_cli.py)
show the same through ``sidegate validate``.
"""

from __future__ import annotations

import pytest

from sidegate.config.load import load_config_text
from sidegate.errors import ConfigError, ConfigIssue
from sidegate.http.request_fields import _SPECIAL
from sidegate.routing.router import FIELD_HEADERS, UNMATCHABLE_HEADERS

HEAD = """\
upstreams:
  app: {endpoints: ["127.0.0.1:3000"]}
routes:
  - name: r
    match: {path_prefix: /}
    upstream: app
"""


def load(text: str) -> tuple[list[ConfigIssue], list[ConfigIssue]]:
    """(errors, warnings) of ``text``."""
    try:
        loaded = load_config_text(text, "t.yaml", {})
    except ConfigError as exc:
        return exc.issues, exc.warnings
    return [], list(loaded.warnings)


def with_filters(filters: str, top: str = "") -> str:
    return top + HEAD + "    filters:\n" + "".join(f"      {line}\n" for line in filters.splitlines())


def test_the_headers_filters_never_see_are_those_the_parser_takes_out() -> None:
    """The checker's list and the parser's are the same (Expect stays in the headers)."""
    assert set(_SPECIAL) - {b"expect"} == set(FIELD_HEADERS) | UNMATCHABLE_HEADERS


@pytest.mark.parametrize(
    ("filters", "path", "words"),
    [
        ("rate_limit: {requests: 1, key: 'header:X-Tenant'}", "rate_limit.key", ["key: tenant"]),
        (
            "rate_limit: {limits: [{requests: 1}, {requests: 1, key: 'header:x-consumer'}]}",
            "rate_limit.limits[1].key",
            ["key: consumer"],
        ),
        ("rate_limit: {requests: 1, key: 'header:Via'}", "rate_limit.key", ["Via", "rewrite"]),
        ("cache: {key_headers: [accept-language, X-Tenant]}", "cache.key_headers[1]", ["partition"]),
        ("cache: {bypass_headers: [x-request-id]}", "cache.bypass_headers[0]", ["x-request-id"]),
        ("jwt: {jwks_url: 'https://x/jwks', header: x-forwarded-host}", "jwt.header", ["x-forwarded-host"]),
        ("api_key: {header: X-Consumer}", "api_key.header", ["identity.consumer_header"]),
    ],
)
def test_a_header_sidegate_removes_before_the_filters_is_refused(
    filters: str, path: str, words: list[str]
) -> None:
    errors, _ = load(with_filters(filters))
    assert [issue.path for issue in errors] == [f"routes[0].filters.{path}"], errors
    assert errors[0].line == 8
    for word in words:
        assert word in errors[0].message, errors[0].message


def test_renamed_identity_headers_are_the_ones_refused() -> None:
    top = "identity: {tenant_header: X-Org, consumer_header: ''}\n"
    errors, _ = load(with_filters("rate_limit: {requests: 1, key: 'header:x-tenant'}", top))
    assert errors == []
    errors, _ = load(with_filters("rate_limit: {requests: 1, key: 'header:x-consumer'}", top))
    assert errors == [], "a consumer header that is not sent is not removed either"
    errors, _ = load(with_filters("rate_limit: {requests: 1, key: 'header:X-ORG'}", top))
    assert [(e.path, e.line) for e in errors] == [("routes[0].filters.rate_limit.key", 9)]


def test_a_route_cannot_match_an_identity_header() -> None:
    text = HEAD.replace(
        "{path_prefix: /}", "{path_prefix: /, headers: {X-Tenant: acme, X-Consumer: {present: false}}}"
    )
    errors, warnings = load(text)
    assert [(e.path, e.line) for e in errors] == [("routes[0].match.headers.X-Tenant", 5)]
    assert "can never match" in errors[0].message
    assert [w.path for w in warnings] == ["routes[0].match.headers.X-Consumer"]
    assert warnings[0].message.startswith("always true")
    forwarded = HEAD.replace("{path_prefix: /}", "{path_prefix: /, headers: {X-Forwarded-Proto: https}}")
    assert load(forwarded) == ([], []), "the router matches forwarding headers"


def test_a_consumer_key_warns_unless_a_filter_before_it_names_the_caller() -> None:
    limit = "rate_limit: {requests: 1, key: tenant}"
    errors, warnings = load(with_filters(f"{limit}\napi_key: {{}}"))
    assert errors == []
    assert [(w.path, w.line) for w in warnings] == [("routes[0].filters.rate_limit.key", 8)]
    assert load(with_filters(f"api_key: {{}}\n{limit}")) == ([], [])


def test_set_up_errors_name_the_value_and_come_with_the_model_errors() -> None:
    text = (
        with_filters(
            "jwt: {issuer: x}\n"
            "rate_limit: {requests: 1, limits: [{requests: 2, per: soon}, {requests: 1, key: who}]}\n"
            "cache: {default_ttl: -1}"
        )
        + "  - name: r\n    match: {path: nope}\n    upstream: elsewhere\n"
    )
    errors, _ = load(text)
    assert [(e.path, e.line) for e in errors] == [
        ("routes[0].filters.jwt", 8),
        ("routes[0].filters.rate_limit.limits[0].per", 9),
        ("routes[0].filters.rate_limit.limits[1].key", 9),
        ("routes[0].filters.cache.default_ttl", 10),
        ("routes[1].name", 11),
        ("routes[1].match.path", 12),
        ("routes[1].upstream", 13),
    ], errors
    assert "soon" in errors[1].message and "1s" in errors[1].message


def test_a_filter_with_an_unset_variable_is_reported_once() -> None:
    errors, _ = load(with_filters("jwt: {jwks_url: '${NOPE}'}"))
    assert [(e.path, e.line) for e in errors] == [("routes[0].filters.jwt.jwks_url", 8)]
    assert "NOPE is not set" in errors[0].message


def test_duplicate_consumers_are_reported_with_the_rest() -> None:
    text = (
        "consumers:\n"
        "  - {name: a, api_keys: [aaaaaaaaaaaaaaaaaaaa]}\n"
        "  - {name: b, api_keys: [aaaaaaaaaaaaaaaaaaaa]}\n"
        "  - {name: a}\n" + HEAD + "    timeouts: {connect: soon}\n"
    )
    errors, _ = load(text)
    assert [(e.path, e.line) for e in errors] == [
        ("consumers[1].api_keys[0]", 3),
        ("consumers[2].name", 4),
        ("routes[0].timeouts.connect", 11),
    ], errors
    assert "consumers[0] (a) has this API key too" in errors[0].message
    assert "'a' is also consumers[0]" in errors[1].message

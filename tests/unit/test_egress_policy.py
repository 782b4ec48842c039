"""The egress decision: which destination allows a call, and the 403's reason and rule."""

from __future__ import annotations

import json

import pytest

from sidegate.config.egress_spec import DestinationSpec
from sidegate.egress.connect_head import peek_request_line, read_connect_head
from sidegate.egress.policy import DEFAULT_RULE, EgressPolicy, host_matches
from sidegate.http.errors import ProtocolError


def destination(name: str, host: str, **fields: object) -> DestinationSpec:
    values: dict[str, object] = {
        "ports": (80, 443),
        "schemes": frozenset({"http", "https"}),
        "methods": None,
        "path_prefixes": None,
        "allow_private": (),
        "origin": None,
        "connect_timeout": 1.0,
        "response_timeout": 1.0,
        "idle_timeout": 1.0,
        "max_connections": 8,
    }
    values.update(fields)
    return DestinationSpec(name=name, host=host, **values)  # type: ignore[arg-type]


PARTNER = destination(
    "partner", "api.partner.com", ports=(443,), methods=frozenset({"GET"}), path_prefixes=("/v1/",)
)
ANY_EXAMPLE = destination("example", "*.example.com", schemes=frozenset({"https"}))
POLICY = EgressPolicy((PARTNER, ANY_EXAMPLE))


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("api.partner.com", "api.partner.com", True),
        ("api.partner.com", "x.api.partner.com", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "badexample.com", False),
        ("*", "anything.at.all", True),
    ],
)
def test_host_patterns(pattern: str, host: str, matches: bool) -> None:
    assert host_matches(pattern, host) is matches


def test_an_allowed_call_names_its_destination() -> None:
    decision = POLICY.decide("http", "api.partner.com", 443, "GET", "/v1/orders")
    assert decision.allowed and decision.rule == "partner" and decision.destination is PARTNER


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (
            ("http", "api.partner.com", 8443, "GET", "/v1/x"),
            "port 8443 is not allowed by",
        ),
        (("http", "api.partner.com", 443, "DELETE", "/v1/x"), "method DELETE is not allowed by destination"),
        (("http", "api.partner.com", 443, "GET", "/v2/x"), "path /v2/x is not under the path prefixes of"),
        (("http", "a.example.com", 80, "GET", "/"), "scheme http is not allowed by destination 'example'"),
        (("http", "example.com", 80, "GET", "/"), "no destination allows host example.com"),
        (("http", "evil.test", 80, "GET", "/"), "no destination allows host evil.test"),
    ],
)
def test_a_denied_call_says_why_and_which_rule_decided(
    call: tuple[str, str, int, str, str], reason: str
) -> None:
    decision = POLICY.decide(*call)
    assert not decision.allowed and decision.rule == DEFAULT_RULE
    assert reason in decision.reason
    body = json.loads(decision.denial_body())
    assert body == {"error": "egress_denied", "reason": decision.reason, "rule": DEFAULT_RULE}


def test_connect_is_checked_on_host_and_port_only() -> None:
    assert POLICY.decide("https", "api.partner.com", 443, "CONNECT", "").allowed
    assert not POLICY.decide("https", "api.partner.com", 80, "CONNECT", "").allowed


def test_the_first_destination_that_allows_the_call_decides() -> None:
    narrow = destination("narrow", "api.partner.com", ports=(443,), methods=frozenset({"GET"}))
    wide = destination("wide", "*", ports=(443,))
    assert EgressPolicy((narrow, wide)).decide("http", "api.partner.com", 443, "POST", "/").rule == "wide"
    assert EgressPolicy((narrow, wide)).decide("http", "api.partner.com", 443, "GET", "/").rule == "narrow"


def test_the_fast_table_answers_as_the_walk_does() -> None:
    """The per-(scheme, host, port) table holds only what the walk would allow whatever the
    method and path; everything else is left to the walk, with the same answer."""
    narrow = destination("narrow", "api.partner.com", ports=(443,), methods=frozenset({"GET"}))
    plain = destination("plain", "api.partner.com", ports=(80, 443))
    wide = destination("wide", "*.partner.com", ports=(8443,))
    policy = EgressPolicy((narrow, plain, wide))
    assert set(policy.fast) == {("http", "api.partner.com", 80), ("https", "api.partner.com", 80)}
    for scheme in ("http", "https"):
        for port in (80, 443, 8443, 9000):
            for method, path in (("GET", "/"), ("POST", "/x"), ("CONNECT", "")):
                fast = policy.decide(scheme, "api.partner.com", port, method, path)
                walked = EgressPolicy((narrow, plain, wide))
                walked.fast = {}
                slow = walked.decide(scheme, "api.partner.com", port, method, path)
                assert (fast.allowed, fast.rule, fast.reason, fast.destination) == (
                    slow.allowed,
                    slow.rule,
                    slow.reason,
                    slow.destination,
                ), (scheme, port, method)
    assert policy.decide("http", "api.partner.com", 443, "GET", "/", named=narrow).rule == "narrow"
    many = destination("many", "big.test", ports=tuple(range(1000, 1100)))
    assert EgressPolicy((many,)).fast == {}  # more ports than FAST_PORTS: the walk decides


def test_request_line_peek() -> None:
    assert peek_request_line(b"GET http://a.test/ HTTP/1.1\r\n", 100).scheme == "http"  # type: ignore[union-attr]
    assert peek_request_line(b"GET HTTPS://a.test/ HTTP/1.1\r\n", 100).scheme == "https"  # type: ignore[union-attr]
    assert peek_request_line(b"GET / HTTP/1.1\r\n", 100).scheme == ""  # type: ignore[union-attr]
    assert peek_request_line(b"GET / HTT", 100) is None
    with pytest.raises(ProtocolError) as info:
        peek_request_line(b"G" * 200, 100)
    assert info.value.status == 414


def test_connect_head_is_read_whole_with_what_follows_it() -> None:
    head_bytes = b"CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\nVia: 1.1 x\r\n\r\n"
    read = read_connect_head(head_bytes + b"EARLY", 1000)
    assert read is not None
    head, end = read
    assert head.authority == "api.test:443" and head.via == b"1.1 x" and head.keep_alive
    assert end == len(head_bytes)
    assert read_connect_head(b"CONNECT api.test:443 HTTP/1.1\r\nHost:", 1000) is None


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"CONNECT api.test:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 400),
        (b"CONNECT api.test:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"CONNECT api.test:443 HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400),
        (b"CONNECT api.test:443 HTTP/1.1\r\nX: a\nY: b\r\n\r\n", 400),
        (b"CONNECT api.test:443 HTTP/1.1\r\nBad Name: a\r\n\r\n", 400),
        (b"CONNECT http://api.test/ HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT api.test:443 HTTP/2.0\r\n\r\n", 505),
        (b"CONNECT  api.test:443 HTTP/1.1\r\n\r\n", 400),
    ],
)
def test_ambiguous_connect_heads_are_refused(head: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as info:
        read_connect_head(head, 1000)
    assert info.value.status == status


def test_the_reason_is_the_most_specific_destinations() -> None:
    anything = destination("anything", "*", ports=(9999,))
    policy = EgressPolicy((anything, PARTNER))
    decision = policy.decide("http", "api.partner.com", 80, "GET", "/v1/x")
    assert "port 80 is not allowed by destination 'partner'" in decision.reason
    assert "'anything'" in policy.decide("http", "elsewhere.test", 80, "GET", "/").reason

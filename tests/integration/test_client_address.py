"""The real client behind trusted front proxies, through a real Sidegate on 127.0.0.1.

The test client connects from 127.0.0.1, so it plays the front proxy: ``trusted: [127.0.0.1/32]``
makes it a trusted one, ``trusted: [10.0.0.0/8]`` an untrusted one. What it sends in
X-Forwarded-For (or Forwarded) is what a proxy chain would have written, spoofed entries included.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import admin_post
from support.cache import fetch
from support.gateway import GatewayFactory, GatewayProcess, OriginProcess, RawClient, get, http_get

pytestmark = pytest.mark.timeout(60)

ROUTES: list[dict[str, Any]] = [
    {
        "name": "members",  # only clients of 203.0.113.0/24
        "match": {"path_prefix": "/members"},
        "upstream": "app",
        "filters": {"access": {"allow_ips": ["203.0.113.0/24"]}},
    },
    {
        "name": "limited",  # two requests per client address per minute
        "match": {"path_prefix": "/limited"},
        "upstream": "app",
        "filters": {"rate_limit": {"requests": 2, "per": "1m", "key": "ip"}},
    },
    {"name": "app", "match": {"path_prefix": "/"}, "upstream": "app"},
]


def start(gateway: GatewayFactory, **forwarded: Any) -> GatewayProcess:
    log = {"enabled": True, "path": "access.log"}
    return gateway(
        routes=ROUTES,
        forwarded=forwarded,
        observability={"access_log": log, "tracing": {"enabled": True, "sample_ratio": 1.0}},
    )


@pytest.fixture(scope="module")
def started(gateway_module: GatewayFactory) -> Callable[..., GatewayProcess]:
    """One gateway per forwarded settings in this module (starting one takes a while)."""
    made: dict[str, GatewayProcess] = {}

    def get_or_start(**forwarded: Any) -> GatewayProcess:
        key = json.dumps(forwarded, sort_keys=True)
        if key not in made:
            made[key] = start(gateway_module, **forwarded)
        return made[key]

    return get_or_start


@pytest.fixture
def trusted(started: Callable[..., GatewayProcess]) -> GatewayProcess:
    return started(trusted=["127.0.0.1/32", "10.0.0.0/8"])


@pytest.fixture
def untrusted(started: Callable[..., GatewayProcess]) -> GatewayProcess:
    return started(trusted=["10.0.0.0/8"])


def line_of(gw: GatewayProcess, request_id: str | None, timeout: float = 5.0) -> dict[str, Any]:
    """The access log line of one request (the writer thread may still be on its way)."""
    path: Path = gw.workdir / "access.log"
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        for raw in text.splitlines():
            line: dict[str, Any] = json.loads(raw)
            if line["request_id"] == request_id:
                return line
        assert time.monotonic() < deadline, f"no access log line for {request_id}:\n{text[-2000:]}"
        time.sleep(0.05)


def app_saw(body: bytes, name: str) -> list[str]:
    """The values of header ``name`` in the request as the app received it."""
    return [v for n, v in json.loads(body)["headers"] if n.lower() == name]


def explained(gw: GatewayProcess, request_id: str | None) -> dict[str, Any]:
    status, body = http_get(gw.admin_port, f"/explain/{request_id}")
    assert status == 200, body
    record: dict[str, Any] = json.loads(body)
    return record


def span_attributes(gw: GatewayProcess, request_id: str | None) -> dict[str, Any]:
    status, body = http_get(gw.admin_port, "/traces?limit=10000")
    assert status == 200, body
    for span in json.loads(body)["spans"]:
        if span["attributes"]["sidegate.request_id"] == request_id:
            attributes: dict[str, Any] = span["attributes"]
            return attributes
    raise AssertionError(f"no span for request {request_id}")


# -- a trusted front proxy -----------------------------------------------------------------------


def test_behind_a_trusted_proxy_the_client_is_the_first_untrusted_address_from_the_right(
    trusted: GatewayProcess, origin: OriginProcess
) -> None:
    # The left-most entry is whatever the client wrote itself; the proxy appended what it saw.
    response = fetch(trusted, "/who", {"X-Forwarded-For": "6.6.6.6, 198.51.100.23"})
    rid = response.headers.get("X-Request-Id")
    line = line_of(trusted, rid)
    assert (line["client"], line["peer"]) == ("198.51.100.23", "127.0.0.1")
    request = explained(trusted, rid)["request"]
    assert (request["client"], request["peer"]) == ("198.51.100.23", "127.0.0.1")
    attributes = span_attributes(trusted, rid)
    assert (attributes["client.address"], attributes["network.peer.address"]) == (
        "198.51.100.23",
        "127.0.0.1",
    )
    # The app gets the chain as the proxy sent it, with the direct peer appended.
    assert app_saw(response.body, "x-forwarded-for") == ["6.6.6.6, 198.51.100.23, 127.0.0.1"]


def test_trusted_hops_inside_the_chain_are_skipped(trusted: GatewayProcess, origin: OriginProcess) -> None:
    # Two more proxies of 10.0.0.0/8 between the client and the one that connects.
    response = fetch(trusted, "/who", {"X-Forwarded-For": "6.6.6.6, 198.51.100.24, 10.9.8.7, 10.0.0.1"})
    assert line_of(trusted, response.headers.get("X-Request-Id"))["client"] == "198.51.100.24"
    # Every entry trusted: the left-most one is the client (nginx's real_ip_recursive).
    response = fetch(trusted, "/who", {"X-Forwarded-For": "10.1.1.1, 10.0.0.1"})
    assert line_of(trusted, response.headers.get("X-Request-Id"))["client"] == "10.1.1.1"


@pytest.mark.parametrize(
    ("chain", "client"),
    [
        ("198.51.100.25, not-an-address", "127.0.0.1"),  # garbage right-most: the peer
        ("garbage; drop table, 198.51.100.26", "198.51.100.26"),  # garbage behind the client
        ("198.51.100.27, unknown, 10.0.0.1", "10.0.0.1"),  # the walk stops at the last good one
        ("203.0.113.9:4711", "203.0.113.9"),  # a port is dropped
        ('"[2001:DB8::1]:4711"', "127.0.0.1"),  # quotes belong to Forwarded, not here
        ("[2001:DB8::1]:4711", "2001:db8::1"),  # brackets and port dropped, normalised
        ("fe80::1%25eth0, fe80::1%eth0", "127.0.0.1"),  # zone ids are not a client's address
        ("::ffff:198.51.100.28", "198.51.100.28"),  # IPv4-mapped IPv6 is IPv4
        ("198.51.100.29, 010.0.0.1", "127.0.0.1"),  # leading zeros (octal to some): not an address
        ("", "127.0.0.1"),
    ],
)
def test_a_malformed_entry_stops_the_walk_at_the_last_good_address(
    trusted: GatewayProcess, origin: OriginProcess, chain: str, client: str
) -> None:
    response = fetch(trusted, "/who", {"X-Forwarded-For": chain})
    assert response.status == 200
    assert line_of(trusted, response.headers.get("X-Request-Id"))["client"] == client


def test_each_request_on_a_connection_has_its_own_client(
    trusted: GatewayProcess, origin: OriginProcess
) -> None:
    # A proxy multiplexes its clients over its keep-alive connections.
    with RawClient(trusted.port) as proxy:
        first = proxy.request(get("/who", headers={"X-Forwarded-For": "198.51.100.31"}))
        plain = proxy.request(get("/who"))
        second = proxy.request(get("/who", headers={"X-Forwarded-For": "198.51.100.32"}))
    clients = [line_of(trusted, r.headers.get("X-Request-Id"))["client"] for r in (first, plain, second)]
    assert clients == ["198.51.100.31", "127.0.0.1", "198.51.100.32"]
    assert app_saw(plain.body, "x-forwarded-for") == ["127.0.0.1"]
    assert app_saw(second.body, "x-forwarded-for") == ["198.51.100.32, 127.0.0.1"]


def test_allow_ips_admits_and_refuses_by_the_real_client(
    trusted: GatewayProcess, origin: OriginProcess
) -> None:
    assert fetch(trusted, "/members", {"X-Forwarded-For": "203.0.113.7"}).status == 200
    refused = fetch(trusted, "/members", {"X-Forwarded-For": "198.51.100.40"})
    assert refused.status == 403
    assert "198.51.100.40 is not in allow_ips" in json.loads(refused.body)["detail"]
    # A client that writes an allowed address first is still the address its proxy saw.
    assert fetch(trusted, "/members", {"X-Forwarded-For": "203.0.113.7, 198.51.100.40"}).status == 403
    assert fetch(trusted, "/members").status == 403  # no chain: the proxy itself, not allowed


def test_rate_limit_by_ip_counts_each_real_client_behind_one_proxy(
    trusted: GatewayProcess, origin: OriginProcess
) -> None:
    alice, bob = {"X-Forwarded-For": "198.51.100.51"}, {"X-Forwarded-For": "198.51.100.52"}
    assert [fetch(trusted, "/limited", alice).status for _ in range(3)] == [200, 200, 429]
    assert [fetch(trusted, "/limited", bob).status for _ in range(2)] == [200, 200]
    # Alice cannot take a fresh budget by writing another address in front of her own.
    assert fetch(trusted, "/limited", {"X-Forwarded-For": "198.51.100.53, 198.51.100.51"}).status == 429


def test_a_trusted_proxys_forwarding_headers_are_kept(trusted: GatewayProcess, origin: OriginProcess) -> None:
    headers = {
        "X-Forwarded-For": "198.51.100.60",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "public.example",
    }
    response = fetch(trusted, "/who", headers)
    assert app_saw(response.body, "x-forwarded-for") == ["198.51.100.60, 127.0.0.1"]
    assert app_saw(response.body, "x-forwarded-proto") == ["https"]
    assert app_saw(response.body, "x-forwarded-host") == ["public.example"]


# -- an untrusted peer ---------------------------------------------------------------------------


def test_an_untrusted_peer_is_the_client_whatever_it_sends(
    untrusted: GatewayProcess, origin: OriginProcess
) -> None:
    headers = {
        "X-Forwarded-For": "203.0.113.7, 10.0.0.1",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "Forwarded": "for=203.0.113.7",
    }
    response = fetch(untrusted, "/who", headers)
    rid = response.headers.get("X-Request-Id")
    line = line_of(untrusted, rid)
    assert (line["client"], line["peer"]) == ("127.0.0.1", "127.0.0.1")
    assert explained(untrusted, rid)["request"]["client"] == "127.0.0.1"
    assert span_attributes(untrusted, rid)["client.address"] == "127.0.0.1"
    # Nothing it claimed reaches the app: the headers are Sidegate's own.
    assert app_saw(response.body, "x-forwarded-for") == ["127.0.0.1"]
    assert app_saw(response.body, "x-forwarded-proto") == ["http"]
    assert app_saw(response.body, "x-forwarded-host") == ["example.com"]
    assert app_saw(response.body, "forwarded") == []


def test_an_untrusted_peer_cannot_pass_access_or_rate_limits_by_naming_others(
    untrusted: GatewayProcess, origin: OriginProcess
) -> None:
    assert fetch(untrusted, "/members", {"X-Forwarded-For": "203.0.113.7"}).status == 403
    statuses = [fetch(untrusted, "/limited", {"X-Forwarded-For": f"198.51.100.{n}"}).status for n in range(3)]
    assert statuses == [200, 200, 429]  # all one client: the peer


# -- Forwarded (RFC 7239) and a hop count --------------------------------------------------------


def test_forwarded_mode_reads_the_for_parameters_of_forwarded(
    started: Callable[..., GatewayProcess], origin: OriginProcess
) -> None:
    gw = started(mode="forwarded", trusted=["127.0.0.1/32"])
    chain = 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https;by=_edge'
    response = fetch(gw, "/who", {"Forwarded": chain, "X-Forwarded-For": "203.0.113.99"})
    rid = response.headers.get("X-Request-Id")
    assert line_of(gw, rid)["client"] == "2001:db8:cafe::17"  # X-Forwarded-For is not read
    assert app_saw(response.body, "forwarded") == [chain + ', for=127.0.0.1;proto=http;host="example.com"']
    cases = [
        ("for=198.51.100.70;proto=https, for=_hidden", "127.0.0.1"),  # obfuscated: the peer
        ("for=unknown, for=198.51.100.71", "198.51.100.71"),
        ('for="_a,b", for=198.51.100.72', "198.51.100.72"),  # a comma in a quoted identifier
        ("for=198.51.100.73;for=203.0.113.1", "127.0.0.1"),  # for= twice in one element
        ("proto=https;host=x", "127.0.0.1"),  # no for= at all
        ('for="198.51.100.74', "127.0.0.1"),  # an unterminated quote
        ('for="198.51.100.75:8080"', "198.51.100.75"),
    ]
    for value, client in cases:
        response = fetch(gw, "/who", {"Forwarded": value})
        assert line_of(gw, response.headers.get("X-Request-Id"))["client"] == client, value


def test_trusted_hops_count_the_peer_as_the_first_proxy(
    started: Callable[..., GatewayProcess], origin: OriginProcess
) -> None:
    gw = started(trusted_hops=2)  # the peer and the proxy in front of it
    cases = [
        ("6.6.6.6, 198.51.100.80, 10.0.0.1", "198.51.100.80"),  # the 2nd from the right
        ("198.51.100.81", "198.51.100.81"),  # shorter than 2: the last address read
        ("198.51.100.82, not-an-address", "127.0.0.1"),
    ]
    for chain, client in cases:
        response = fetch(gw, "/who", {"X-Forwarded-For": chain})
        assert line_of(gw, response.headers.get("X-Request-Id"))["client"] == client, chain
        assert app_saw(response.body, "x-forwarded-for") == [chain + ", 127.0.0.1"]


def test_without_trust_configured_nothing_changes(started: Callable[..., GatewayProcess]) -> None:
    gw = started()
    response = fetch(gw, "/who", {"X-Forwarded-For": "198.51.100.90", "X-Forwarded-Proto": "https"})
    line = line_of(gw, response.headers.get("X-Request-Id"))
    assert (line["client"], line["peer"]) == ("127.0.0.1", "127.0.0.1")
    assert app_saw(response.body, "x-forwarded-for") == ["198.51.100.90, 127.0.0.1"]  # trust_incoming
    assert app_saw(response.body, "x-forwarded-proto") == ["https"]


def test_a_reload_that_trusts_the_proxy_applies_to_the_next_request(
    gateway: GatewayFactory, origin: OriginProcess
) -> None:
    gw = start(gateway)
    chain = {"X-Forwarded-For": "198.51.100.95"}
    before = fetch(gw, "/who", chain)
    config = copy.deepcopy(gw.config)
    config["listeners"]["inbound"]["forwarded"]["trusted"] = ["127.0.0.1/32"]
    gw.write_config(config)
    status, answer = admin_post(gw.admin_port, "/reload")
    assert (status, answer["status"]) == (200, "reloaded")
    after = fetch(gw, "/who", chain)
    clients = [line_of(gw, r.headers.get("X-Request-Id"))["client"] for r in (before, after)]
    assert clients == ["127.0.0.1", "198.51.100.95"]

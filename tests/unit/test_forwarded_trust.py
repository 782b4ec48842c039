"""Trusted front proxies: what a config may say (and what it is told when it is wrong), and which
client a chain names, down to the corner cases the integration tests do not each start a gateway for."""

from __future__ import annotations

import ipaddress
import random

import pytest

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.load import load_config_text
from sidegate.config.snapshot import ForwardedSpec
from sidegate.errors import ConfigError, ConfigIssue
from sidegate.forwarding import MAX_ENTRIES, ClientAddresses, ForwardingCache, node_address
from sidegate.http.request_head import ParsedRequest
from support.configs import MINIMAL


def with_forwarded(forwarded: str) -> str:
    return MINIMAL.replace(
        '{address: "127.0.0.1:8080"}', f'{{address: "127.0.0.1:8080", forwarded: {forwarded}}}'
    )


def issues(forwarded: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config_text(with_forwarded(forwarded), "test.yaml", {})
    return info.value.issues


def test_trusted_ranges_are_normalised_into_the_snapshot() -> None:
    text = with_forwarded('{trusted: ["10.1.2.3/8", "192.0.2.7", "2001:DB8::/32"]}')
    spec = compile_checked(check_text(text, "test.yaml", environ={})).forwarded
    assert spec.trusted == ("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32")
    assert spec.trusted_hops == 0


def test_a_bad_range_names_its_place_and_the_fix() -> None:
    found = issues('{trusted: [10.0.0.0/8, "10.0.0.1/33", proxy.internal]}')
    assert [issue.path for issue in found] == [
        "listeners.inbound.forwarded.trusted[1]",
        "listeners.inbound.forwarded.trusted[2]",
    ]
    assert all(issue.line == 2 for issue in found)
    assert "'proxy.internal' is not an IP address or CIDR range" in found[1].message
    assert "such as 10.0.0.0/8" in found[1].message


@pytest.mark.parametrize(
    ("forwarded", "message"),
    [
        ("{trusted: [10.0.0.0/8], trusted_hops: 1}", "set trusted (proxy addresses) or trusted_hops"),
        ('{mode: "off", trusted: [10.0.0.0/8]}', "set mode x-forwarded (X-Forwarded-For) or forwarded"),
        ('{mode: "off", trusted_hops: 1}', "set mode x-forwarded (X-Forwarded-For) or forwarded"),
        ("{trust_incoming: false, trusted: [10.0.0.0/8]}", "trust_incoming: false replaces every"),
        ("{trusted_hops: 33}", "must be <= 32, got 33"),
        ("{trusted_hops: -1}", "must be >= 0, got -1"),
    ],
)
def test_settings_that_cannot_do_what_they_say_are_refused(forwarded: str, message: str) -> None:
    (issue,) = issues(forwarded)
    assert issue.path.startswith("listeners.inbound.forwarded")
    assert message in issue.message


def head(chain: bytes, peer: str = "127.0.0.1") -> ParsedRequest:
    request = ParsedRequest()
    request.client_ip = request.peer_ip = peer
    request.xff = chain
    request.plain_forwarding = False
    return request


def test_at_most_max_entries_are_read_from_the_right() -> None:
    addresses = ClientAddresses(ForwardedSpec(trusted=("127.0.0.1/32", "10.0.0.0/8")))
    trusted_hops = b", ".join(b"10.0.0.%d" % (n % 250 + 1) for n in range(MAX_ENTRIES))
    # The client is beyond the entries read: the walk ends at the last one read (a trusted proxy).
    assert addresses.client(head(b"198.51.100.1, " + trusted_hops)) == "10.0.0.1"
    assert addresses.client(head(b"198.51.100.1, " + trusted_hops[len(b"10.0.0.1, ") :])) == "198.51.100.1"


def test_long_chains_are_walked_every_time_short_ones_remembered() -> None:
    addresses = ClientAddresses(ForwardedSpec(trusted=("127.0.0.1/32",)), max_entries=2)
    long_chain = b" " * 300 + b"198.51.100.2"
    assert [addresses.client(head(long_chain)) for _ in range(2)] == ["198.51.100.2"] * 2
    # Past max_entries the memory starts again, and answers stay right.
    chains = [b"198.51.100.%d" % n for n in range(10)]
    assert [addresses.client(head(chain)) for chain in chains] == [c.decode() for c in chains]


def test_forwarding_lines_keep_only_trusted_peers_headers() -> None:
    spec = ForwardedSpec(trusted=("10.0.0.0/8",))
    cache = ForwardingCache(spec, ClientAddresses(spec))
    request = head(b"198.51.100.3", peer="10.1.1.1")
    request.xfp = b"https"
    assert cache.lines(request).startswith(
        b"X-Forwarded-For: 198.51.100.3, 10.1.1.1\r\nX-Forwarded-Proto: https\r\n"
    )
    request.peer_ip = request.client_ip = "192.0.2.9"
    assert cache.lines(request).startswith(b"X-Forwarded-For: 192.0.2.9\r\nX-Forwarded-Proto: http\r\n")


def test_entries_read_as_addresses_are_exactly_what_ipaddress_reads() -> None:
    # node_address reads dotted quads itself (ipaddress's parser costs ten times as much): the two
    # must agree on every text, addresses and near misses alike.
    rng = random.Random(7)
    pieces = ["0", "1", "00", "01", "9", "10", "99", "255", "256", "1000", "", " ", "+1", "a", "-1"]
    texts = [".".join(rng.choice(pieces) for _ in range(rng.choice((3, 4, 4, 4, 5)))) for _ in range(5000)]
    for text in [*texts, "1.2.3.4", "0.0.0.0", "255.255.255.255", "::1", "2001:db8::1"]:
        try:
            expected: object = ipaddress.ip_address(text)
        except ValueError:
            expected = None
        assert node_address(text.encode()) == expected, text

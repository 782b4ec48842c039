"""The egress resolver against a real DNS server on a loopback port: answers, TTLs, rebinding,
failures, the cache bound. The resolver only resolves: nothing here connects to a resolved address."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import uvloop

from sidegate.egress.guard import ForbiddenAddressError, check_addresses, forbidden_reason, parse_authority
from sidegate.egress.resolver import NameNotFoundError, ResolveError, Resolver, ResolverStats, parse_server
from support.stub_dns import StubDNS

T = TypeVar("T")
ip = ipaddress.ip_address


@pytest.fixture
def stub_dns() -> Iterator[StubDNS]:
    server = StubDNS()
    yield server
    server.close()


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run on uvloop, the loop Sidegate runs on."""

    async def main() -> T:
        return await make()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def test_a_and_aaaa_answers_come_back_ipv4_first(stub_dns: StubDNS) -> None:
    stub_dns.records[("api.partner.test", "A")] = (60, ["198.51.100.7", "198.51.100.8"])
    stub_dns.records[("api.partner.test", "AAAA")] = (60, ["2001:db8::7"])
    resolver = Resolver([stub_dns.address])
    addresses = run(lambda: resolver.resolve("api.partner.test"))
    assert sorted(addresses[:2]) == [ip("198.51.100.7"), ip("198.51.100.8")]  # an RRset has no order
    assert addresses[2:] == [ip("2001:db8::7")]
    assert sorted(stub_dns.queries) == [("api.partner.test", "A"), ("api.partner.test", "AAAA")]


def test_a_truncated_answer_is_asked_again_over_tcp_never_used_partly(stub_dns: StubDNS) -> None:
    addresses = [f"198.51.100.{n}" for n in range(1, 101)]  # 100 records: more than any UDP answer here
    stub_dns.records[("big.test", "A")] = (60, addresses)
    stub_dns.truncate = True
    got = run(lambda: Resolver([stub_dns.address]).resolve("big.test"))
    assert sorted(got) == sorted(ip(a) for a in addresses)
    assert ("big.test", "A") in stub_dns.tcp_queries


def test_only_one_family_is_enough(stub_dns: StubDNS) -> None:
    stub_dns.records[("v6only.test", "AAAA")] = (60, ["2001:db8::1"])
    stub_dns.records[("v4only.test", "A")] = (60, ["192.0.2.1"])
    resolver = Resolver([stub_dns.address])
    assert run(lambda: resolver.resolve("v6only.test")) == [ip("2001:db8::1")]
    assert run(lambda: resolver.resolve("v4only.test")) == [ip("192.0.2.1")]


def test_a_server_on_ipv6_loopback_answers() -> None:
    server = StubDNS(host="::1")
    try:
        server.records[("v6server.test", "A")] = (60, ["192.0.2.30"])
        assert run(lambda: Resolver([server.address]).resolve("v6server.test")) == [ip("192.0.2.30")]
    finally:
        server.close()


def test_a_literal_is_returned_without_a_query(stub_dns: StubDNS) -> None:
    resolver = Resolver([stub_dns.address])
    assert run(lambda: resolver.resolve("192.0.2.9")) == [ip("192.0.2.9")]
    assert run(lambda: resolver.resolve("2001:db8::9")) == [ip("2001:db8::9")]
    assert stub_dns.queries == []


def test_names_are_absolute_and_case_insensitive(stub_dns: StubDNS) -> None:
    stub_dns.records[("svc.test", "A")] = (60, ["192.0.2.2"])
    resolver = Resolver([stub_dns.address])
    assert run(lambda: resolver.resolve("SVC.test.")) == [ip("192.0.2.2")]
    assert run(lambda: resolver.resolve("svc.test")) == [ip("192.0.2.2")]  # the same cache entry
    assert stub_dns.queries and {name for name, _ in stub_dns.queries} == {"svc.test"}  # no search list
    assert stub_dns.asked("svc.test") == 2  # A and AAAA once


@pytest.mark.slow
def test_an_answer_is_cached_for_its_ttl_then_asked_again(stub_dns: StubDNS) -> None:
    stub_dns.records[("ttl.test", "A")] = (1, ["192.0.2.3"])

    async def scenario() -> tuple[int, int, int]:
        resolver = Resolver([stub_dns.address])
        await resolver.resolve("ttl.test")
        first = stub_dns.asked("ttl.test")
        await resolver.resolve("ttl.test")  # within the TTL: from the cache
        within = stub_dns.asked("ttl.test")
        await asyncio.sleep(1.2)
        await resolver.resolve("ttl.test")  # expired: asked again
        return first, within, stub_dns.asked("ttl.test")

    assert run(scenario) == (2, 2, 4)


@pytest.mark.slow
def test_a_cname_chain_is_cached_for_its_shortest_ttl(stub_dns: StubDNS) -> None:
    stub_dns.records[("www.partner.test", "CNAME")] = (1, ["edge.cdn.test"])
    stub_dns.records[("edge.cdn.test", "A")] = (3600, ["192.0.2.4"])

    async def scenario() -> tuple[list[object], int, int]:
        resolver = Resolver([stub_dns.address])
        addresses: list[object] = list(await resolver.resolve("www.partner.test"))
        await resolver.resolve("www.partner.test")
        within = stub_dns.asked("www.partner.test")
        await asyncio.sleep(1.2)
        await resolver.resolve("www.partner.test")
        return addresses, within, stub_dns.asked("www.partner.test")

    assert run(scenario) == ([ip("192.0.2.4")], 2, 4)


def test_max_ttl_and_min_ttl_clamp_the_cache_time(stub_dns: StubDNS) -> None:
    stub_dns.records[("long.test", "A")] = (86400, ["192.0.2.5"])
    stub_dns.records[("zero.test", "A")] = (0, ["192.0.2.6"])

    async def scenario() -> tuple[int, int, int]:
        capped = Resolver([stub_dns.address], max_ttl=0.2)
        await capped.resolve("long.test")
        await asyncio.sleep(0.3)
        await capped.resolve("long.test")  # a day's TTL, but max_ttl 0.2 s: asked again
        floored = Resolver([stub_dns.address], min_ttl=60)
        await floored.resolve("zero.test")
        await floored.resolve("zero.test")  # TTL 0, but min_ttl 60 s: cached
        plain = Resolver([stub_dns.address])
        await plain.resolve("zero.test")
        await plain.resolve("zero.test")  # TTL 0: never cached
        return stub_dns.asked("long.test"), stub_dns.asked("zero.test"), len(stub_dns.queries)

    assert run(scenario) == (4, 6, 10)


def test_a_rebinding_name_is_checked_on_every_answer_it_gives(stub_dns: StubDNS) -> None:
    """The attack: a name first answers with an address the policy allows, then (TTL 0) with
    loopback. Each resolve() returns only what that answer said, so the caller's check of that
    list is a check of exactly what it will dial; the second answer is refused."""
    partner = [ipaddress.ip_network("192.0.2.0/24")]  # this destination allows its documentation range
    stub_dns.records[("rebind.test", "A")] = (0, ["192.0.2.10"])

    async def scenario() -> tuple[list[str | None], list[str | None]]:
        resolver = Resolver([stub_dns.address])
        first = await resolver.resolve("rebind.test")
        first_verdicts = [forbidden_reason(a, partner) for a in first]
        stub_dns.records[("rebind.test", "A")] = (0, ["127.0.0.1"])
        stub_dns.records[("rebind.test", "AAAA")] = (0, ["::ffff:169.254.169.254"])
        first.clear()  # the caller's copy: clearing it leaves nothing behind in the resolver
        second = await resolver.resolve("rebind.test")
        return first_verdicts, [forbidden_reason(a, partner) for a in second]

    assert run(scenario) == ([None], ["loopback", "cloud metadata"])


def test_the_whole_check_parse_resolve_check_refuses_a_name_that_answers_internally(
    stub_dns: StubDNS,
) -> None:
    """The caller's three steps: one spelling, one lookup, every address checked."""
    stub_dns.records[("mixed.test", "A")] = (60, ["192.0.2.40", "10.0.0.40"])
    stub_dns.records[("mixed.test", "AAAA")] = (60, ["64:ff9b::a9fe:a9fe"])  # metadata via NAT64

    async def scenario() -> tuple[str, str]:
        resolver = Resolver([stub_dns.address])
        target = parse_authority("MIXED.test.:8443", 443)
        addresses = await resolver.resolve(target.host)
        documentation = [ipaddress.ip_network("192.0.2.0/24")]
        with pytest.raises(ForbiddenAddressError) as private:
            check_addresses(addresses, documentation)
        with pytest.raises(ForbiddenAddressError) as metadata:
            check_addresses(addresses, [*documentation, ipaddress.ip_network("10.0.0.0/8")])
        return private.value.reason, metadata.value.reason

    assert run(scenario) == ("private", "cloud metadata")


def test_concurrent_lookups_of_one_name_share_one_query(stub_dns: StubDNS) -> None:
    stub_dns.records[("busy.test", "A")] = (60, ["192.0.2.11"])

    async def scenario() -> list[list[object]]:
        resolver = Resolver([stub_dns.address])
        return list(await asyncio.gather(*(resolver.resolve("busy.test") for _ in range(20))))

    assert run(scenario) == [[ip("192.0.2.11")]] * 20
    assert stub_dns.asked("busy.test") == 2


def test_nxdomain_is_a_resolve_error_naming_it(stub_dns: StubDNS) -> None:
    stub_dns.records[("exists.test", "A")] = (60, ["192.0.2.12"])
    resolver = Resolver([stub_dns.address])
    with pytest.raises(NameNotFoundError, match=r"nothere\.test.*NXDOMAIN"):
        run(lambda: resolver.resolve("nothere.test"))
    with pytest.raises(ResolveError, match="NXDOMAIN"):  # failures are not cached: asked again
        run(lambda: resolver.resolve("nothere.test"))
    assert stub_dns.asked("nothere.test") == 4


@pytest.mark.parametrize(("host", "words"), [("fe80::1%eth0", "zone id"), ("", "empty"), (".", "empty")])
def test_hosts_that_name_no_destination_are_refused(stub_dns: StubDNS, host: str, words: str) -> None:
    with pytest.raises(ResolveError, match=words):
        run(lambda: Resolver([stub_dns.address]).resolve(host))
    assert stub_dns.queries == []


def test_stats_count_cache_hits_lookups_and_failures(stub_dns: StubDNS) -> None:
    stub_dns.records[("counted.test", "A")] = (60, ["192.0.2.31"])

    async def scenario() -> ResolverStats:
        resolver = Resolver([stub_dns.address])
        for _ in range(3):
            await resolver.resolve("counted.test")
        with pytest.raises(NameNotFoundError):
            await resolver.resolve("missing.test")
        await resolver.resolve("192.0.2.32")  # a literal is neither
        return resolver.stats()

    assert run(scenario) == ResolverStats(cache_hits=2, lookups=2, failures=1, entries=1)


def test_etc_hosts_is_not_consulted(stub_dns: StubDNS) -> None:
    """getaddrinfo would answer "localhost" from /etc/hosts; the egress resolver asks only DNS."""
    resolver = Resolver([stub_dns.address])
    with pytest.raises(NameNotFoundError, match="localhost"):
        run(lambda: resolver.resolve("localhost"))
    assert stub_dns.asked("localhost") == 2


def test_a_name_without_addresses_is_a_resolve_error(stub_dns: StubDNS) -> None:
    stub_dns.records[("mail.test", "MX")] = (60, ["10 mx.test."])
    resolver = Resolver([stub_dns.address])
    with pytest.raises(ResolveError, match="no A or AAAA records"):
        run(lambda: resolver.resolve("mail.test"))


def test_a_silent_server_times_out_fast_and_closed(stub_dns: StubDNS) -> None:
    stub_dns.silent = True
    resolver = Resolver([stub_dns.address], timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ResolveError, match=rf"timeout.*127\.0\.0\.1:{stub_dns.port}.*0\.3s"):
        run(lambda: resolver.resolve("slow.test"))
    assert time.monotonic() - started < 1.5
    assert stub_dns.asked("slow.test") >= 2  # it did ask; nobody answered


def test_a_server_answering_servfail_fails_closed_with_its_answer(stub_dns: StubDNS) -> None:
    stub_dns.records[("broken.test", "A")] = (60, ["192.0.2.60"])
    stub_dns.servfail = True
    started = time.monotonic()
    with pytest.raises(ResolveError, match=r"broken\.test: every DNS server failed.*SERVFAIL"):
        run(lambda: Resolver([stub_dns.address]).resolve("broken.test"))
    assert time.monotonic() - started < 1.0  # an answer, even a bad one, is not waited out


def test_a_server_that_is_down_fails_closed(free_port: Callable[[], int]) -> None:
    resolver = Resolver([("127.0.0.1", free_port())], timeout=1.0)  # nothing listens there
    started = time.monotonic()
    with pytest.raises(ResolveError, match=r"down\.test"):
        run(lambda: resolver.resolve("down.test"))
    assert time.monotonic() - started < 2.5


def test_the_next_server_answers_when_the_first_is_down(
    stub_dns: StubDNS, free_port: Callable[[], int]
) -> None:
    stub_dns.records[("second.test", "A")] = (60, ["192.0.2.13"])
    resolver = Resolver([("127.0.0.1", free_port()), stub_dns.address], timeout=2.0)
    assert run(lambda: resolver.resolve("second.test")) == [ip("192.0.2.13")]


def test_the_cache_holds_at_most_max_entries_least_recently_used_dropped(stub_dns: StubDNS) -> None:
    for name in ("a.test", "b.test", "c.test"):
        stub_dns.records[(name, "A")] = (300, ["192.0.2.20"])

    async def scenario() -> dict[str, int]:
        resolver = Resolver([stub_dns.address], max_entries=2)
        for name in ("a.test", "b.test", "a.test", "c.test"):  # c drops b, the least recently used
            await resolver.resolve(name)
        await resolver.resolve("a.test")  # still cached
        await resolver.resolve("b.test")  # dropped: asked again
        return {name: stub_dns.asked(name) for name in ("a.test", "b.test", "c.test")}

    assert run(scenario) == {"a.test": 2, "b.test": 4, "c.test": 2}


def test_default_servers_come_from_resolv_conf() -> None:
    configured = [
        line.split()[1]
        for line in Path("/etc/resolv.conf").read_text().splitlines()
        if line.startswith("nameserver ")
    ]
    assert [address for address, _ in Resolver().servers] == configured  # built only: nothing is asked


@pytest.mark.parametrize(
    ("servers", "kwargs", "words"),
    [
        ([("dns.example", 53)], {}, "egress.dns.servers: 'dns.example' is not an IP address"),
        ([("127.0.0.1", 0)], {}, "egress.dns.servers: port 0"),
        ([("127.0.0.1", 53)], {"timeout": 0}, "egress.dns.timeout"),
        ([("127.0.0.1", 53)], {"min_ttl": 10, "max_ttl": 5}, "min_ttl <= max_ttl"),
        ([("127.0.0.1", 53)], {"max_entries": -1}, "egress.dns.max_entries"),
    ],
)
def test_bad_settings_name_the_field(
    servers: list[tuple[str, int]], kwargs: dict[str, float], words: str
) -> None:
    with pytest.raises(ValueError) as caught:
        Resolver(servers, **kwargs)  # type: ignore[arg-type]
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10.96.0.10:53", ("10.96.0.10", 53)), ("127.0.0.1", ("127.0.0.1", 53)), ("[::1]:5353", ("::1", 5353))],
)
def test_server_entries_parse_as_ip_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("dns.example:53", "'dns.example:53' is not an IP address"),
        ("127.0.0.1:99999", "out of range"),
        ("::1", "in brackets"),
        ("127.1:53", "non-canonical IPv4"),
    ],
)
def test_bad_server_entries_name_the_field(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=r"^egress\.dns\.servers: ") as caught:
        parse_server(text)
    assert words in str(caught.value)


def test_a_parsed_server_entry_is_asked(stub_dns: StubDNS) -> None:
    stub_dns.records[("parsed.test", "A")] = (60, ["192.0.2.50"])
    resolver = Resolver([parse_server(f"127.0.0.1:{stub_dns.port}")])
    assert run(lambda: resolver.resolve("parsed.test")) == [ip("192.0.2.50")]

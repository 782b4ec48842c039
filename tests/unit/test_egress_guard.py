"""The SSRF guard: every spelling of an authority the issue names, accepted or refused with a reason,
and every special address class refused the same way whatever IPv4/IPv6 form spells it."""

from __future__ import annotations

import ast
import ipaddress
import random
from pathlib import Path

import pytest

import sidegate.egress.guard
from sidegate.egress.guard import (
    AuthorityError,
    ForbiddenAddressError,
    Target,
    check_addresses,
    embedded_ipv4,
    forbidden_reason,
    parse_authority,
)

ip = ipaddress.ip_address
net = ipaddress.ip_network

# (authority, default port) -> (host, port, literal or None)
ACCEPTED = [
    ("api.partner.com", 80, ("api.partner.com", 80, None)),
    ("api.partner.com:8443", 80, ("api.partner.com", 8443, None)),
    ("API.Partner.COM:443", 80, ("api.partner.com", 443, None)),  # hosts lower-cased
    ("api.partner.com.", 443, ("api.partner.com", 443, None)),  # one trailing dot: the same name
    ("api.partner.com.:8080", 443, ("api.partner.com", 8080, None)),
    ("xn--bcher-kva.example", 80, ("xn--bcher-kva.example", 80, None)),  # an IDNA A-label is ASCII
    ("_grpc._tcp.svc.example", 80, ("_grpc._tcp.svc.example", 80, None)),
    ("localhost", 80, ("localhost", 80, None)),  # a name: refused later by its resolved address
    ("my-svc", 80, ("my-svc", 80, None)),
    ("203.0.113.7", 80, ("203.0.113.7", 80, ip("203.0.113.7"))),
    ("203.0.113.7:65535", 80, ("203.0.113.7", 65535, ip("203.0.113.7"))),
    ("1.2.3.4.", 80, ("1.2.3.4", 80, ip("1.2.3.4"))),
    ("[2001:db8::1]", 443, ("2001:db8::1", 443, ip("2001:db8::1"))),
    ("[2001:DB8:0:0:0:0:0:1]:8443", 443, ("2001:db8::1", 8443, ip("2001:db8::1"))),  # compressed
    ("[::ffff:127.0.0.1]:80", 443, (str(ip("::ffff:7f00:1")), 80, ip("::ffff:127.0.0.1"))),  # guard refuses
    ("a" * 63 + ".example:1", 80, ("a" * 63 + ".example", 1, None)),
]


@pytest.mark.parametrize(
    ("authority", "default_port", "expected"), ACCEPTED, ids=[a[0][:40] for a in ACCEPTED]
)
def test_accepted_authorities_are_canonical(
    authority: str, default_port: int, expected: tuple[str, int, object]
) -> None:
    assert parse_authority(authority, default_port) == Target(*expected)  # type: ignore[arg-type]


# (authority, words the reason must contain)
REFUSED = [
    # userinfo, in every place a parser might look for the host
    ("user@api.partner.com", "userinfo"),
    ("user:pass@api.partner.com:443", "userinfo"),
    ("api.partner.com@169.254.169.254", "userinfo"),
    ("@api.partner.com", "userinfo"),
    # backslashes, fragments, queries and paths inside an authority
    ("api.partner.com\\@169.254.169.254", "backslash"),
    ("169.254.169.254\\.partner.com", "backslash"),
    ("api.partner.com#@169.254.169.254", "fragment"),
    ("169.254.169.254#.partner.com", "fragment"),
    ("api.partner.com?x", "query"),
    ("api.partner.com/x", "path"),
    ("127.0.0.1%2f.partner.com", "percent-encoding"),
    ("%61pi.partner.com", "percent-encoding"),
    # zone ids, bracketed or not, raw or percent-encoded
    ("[fe80::1%eth0]:80", "zone id"),
    ("[fe80::1%25eth0]:80", "zone id"),
    ("fe80::1%eth0", "zone id"),
    # non-canonical IPv4 literals: integers, hex, octal, short forms, too many parts
    ("2852039166", "non-canonical IPv4"),
    ("2130706433:80", "non-canonical IPv4"),
    ("0x7f.1", "non-canonical IPv4"),
    ("0x7f000001", "non-canonical IPv4"),
    ("0x7F.0.0.1", "non-canonical IPv4"),
    ("0177.0.0.1", "non-canonical IPv4"),
    ("127.000.000.001", "non-canonical IPv4"),
    ("127.1", "non-canonical IPv4"),
    ("127.0.1", "non-canonical IPv4"),
    ("1.2.3.4.5", "non-canonical IPv4"),
    ("256.0.0.1", "non-canonical IPv4"),
    ("partner.com.0x10", "non-canonical IPv4"),  # ends in a number: an IPv4 literal to URL parsers
    ("169.254.169.254..", "not a host name"),
    # empty or malformed hosts
    ("", "empty authority"),
    (":80", "empty host"),
    ("[]:80", "empty host"),
    ("api..partner.com", "not a host name"),
    (".partner.com", "not a host name"),
    (".", "not a host name"),
    ("-api.partner.com", "not a host name"),
    ("api-.partner.com", "not a host name"),
    ("api_partner*.com", "not a host name"),
    ("a" * 64 + ".example", "not a host name"),
    (("a" * 60 + ".") * 5 + "com", "1-253 characters"),
    ("api partner.com", "whitespace"),
    ("api.partner.com\r\nX: y", "whitespace"),
    ("api.partner.com\x00", "control character"),
    # non-ASCII hosts: refused, with the A-label to send instead
    ("bücher.example", "xn--bcher-kva.example"),
    ("\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "not ASCII"),  # fullwidth "example"
    # IPv6 literals: brackets required, nothing after the bracket but a port
    ("::1", "in brackets"),
    ("2001:db8::1:443", "in brackets"),
    ("api.partner.com:80:80", "more than one ':'"),
    ("[::1", "unclosed"),
    ("[::1]x", "only ':port'"),
    ("[::1]:", "empty port"),
    ("[not-v6]:80", "not an IPv6 address"),
    ("[v1.fe]:80", "IPvFuture"),
    ("[::ffff:0177.0.0.1]", "not an IPv6 address"),
    # ports
    ("api.partner.com:", "empty port"),
    ("api.partner.com:0", "bad port"),
    ("api.partner.com:080", "bad port"),
    ("api.partner.com:65536", "out of range"),
    ("api.partner.com:123456", "bad port"),
    ("api.partner.com:+80", "bad port"),
    ("api.partner.com:٨٠", "not ASCII"),
    ("api.partner.com:http", "bad port"),
    ("[::1]:99999", "out of range"),
]


@pytest.mark.parametrize(("authority", "words"), REFUSED, ids=[repr(r[0])[:40] for r in REFUSED])
def test_refused_authorities_say_why(authority: str, words: str) -> None:
    with pytest.raises(AuthorityError) as caught:
        parse_authority(authority, 80)
    assert words in str(caught.value)


def test_default_port_zero_requires_a_port_as_connect_does() -> None:
    assert parse_authority("api.partner.com:443", 0) == Target("api.partner.com", 443, None)
    for authority in ("api.partner.com", "[2001:db8::1]"):
        with pytest.raises(AuthorityError, match="a port is required"):
            parse_authority(authority, 0)


def test_authority_property_brackets_ipv6_for_the_host_header() -> None:
    assert parse_authority("[2001:db8::1]", 443).authority == "[2001:db8::1]:443"
    assert parse_authority("API.partner.com.", 80).authority == "api.partner.com:80"


# (address, class): one representative of every class, then each embedded-IPv4 spelling of it
CLASSES = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.170.2", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.0.1", "private"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.255", "CGNAT"),
    ("fd12:3456::1", "unique-local"),
    ("fc00::1", "unique-local"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("255.255.255.255", "broadcast"),
    ("0.1.2.3", "reserved"),
    ("240.0.0.1", "reserved"),
    ("192.0.0.8", "reserved"),
    ("fec0::1", "reserved"),
    ("2001::1", "reserved"),  # Teredo
    ("100::1", "reserved"),
    ("::1:0:0:1", "reserved"),  # the rest of ::/8
    ("5f00::1", "reserved"),  # SRv6 SIDs: outside 2000::/3, like everything IANA has not assigned
    ("4000::1", "reserved"),
    ("192.0.2.1", "documentation"),
    ("203.0.113.9", "documentation"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("2001:2::1", "benchmarking"),
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "169.253.255.255", "2606:4700::1111"]


def ipv6_spellings(v4: str) -> list[str]:
    """Every IPv6 form that carries ``v4`` to a translator or tunnel."""
    n = int(ipaddress.IPv4Address(v4))
    hi, lo = n >> 16, n & 0xFFFF
    return [
        f"::ffff:{v4}",  # IPv4-mapped, dotted
        f"::ffff:{hi:x}:{lo:x}",  # IPv4-mapped, hex
        f"0:0:0:0:0:FFFF:{v4}",
        f"::{v4}",  # IPv4-compatible
        f"::ffff:0:{v4}",  # IPv4-translated (SIIT)
        f"64:ff9b::{v4}",  # NAT64 well-known prefix
        f"64:ff9b::{hi:x}:{lo:x}",
        f"64:ff9b:1::{v4}",  # NAT64 local-use, /96 layout
        f"2002:{hi:x}:{lo:x}::1",  # 6to4
    ]


@pytest.mark.parametrize(("address", "reason"), CLASSES, ids=[c[0] for c in CLASSES])
def test_every_special_class_is_refused_by_name(address: str, reason: str) -> None:
    assert forbidden_reason(ip(address)) == reason


@pytest.mark.parametrize(
    ("address", "reason"), [c for c in CLASSES if "." in c[0] and c[0] != "0.0.0.0"], ids=lambda v: v
)
def test_ipv6_spellings_of_an_ipv4_address_are_refused_the_same_way(address: str, reason: str) -> None:
    for spelling in ipv6_spellings(address):
        assert forbidden_reason(ip(spelling)) == reason, spelling


def test_authority_spellings_of_one_address_all_reach_the_same_verdict() -> None:
    spellings = ["127.0.0.1", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::127.0.0.1]", "[64:ff9b::7f00:1]"]
    for spelling in spellings:
        target = parse_authority(spelling, 80)
        assert target.literal is not None, spelling
        assert forbidden_reason(target.literal) == "loopback", spelling
    for spelling in ["2130706433", "0x7f.1", "0177.0.0.1", "127.1", "[::1%lo]"]:
        with pytest.raises(AuthorityError):
            parse_authority(spelling, 80)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_may_be_dialled_in_every_spelling(address: str) -> None:
    assert forbidden_reason(ip(address)) is None
    if "." in address:
        for spelling in [f"::ffff:{address}", f"64:ff9b::{address}"]:
            assert forbidden_reason(ip(spelling)) is None, spelling


def test_embedded_ipv4_reads_every_rfc6052_layout_of_the_local_use_prefix() -> None:
    # 192.0.2.33 at prefix lengths 48, 56, 64 and 96 (RFC 6052 section 2.4's examples, moved into
    # 64:ff9b:1::/48); each reading is offered and the strictest decides
    for spelling in ["64:ff9b:1:c000:2:2100::", "64:ff9b:1:c0:0:221::", "64:ff9b:1:0:c0:2:2100:0"]:
        assert ipaddress.IPv4Address("192.0.2.33") in embedded_ipv4(ipaddress.IPv6Address(spelling))
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700::1111")) == []
    assert embedded_ipv4(ipaddress.IPv6Address("::1")) == []


def test_allowed_ranges_open_private_classes_per_destination() -> None:
    assert forbidden_reason(ip("10.1.2.3"), [net("10.0.0.0/8")]) is None
    assert forbidden_reason(ip("::ffff:10.1.2.3"), [net("10.0.0.0/8")]) is None  # judged as its IPv4
    assert forbidden_reason(ip("10.1.2.3"), [net("10.2.0.0/16")]) == "private"
    assert forbidden_reason(ip("100.64.1.1"), [net("100.64.0.0/10")]) is None
    assert forbidden_reason(ip("fd12::1"), [net("fd12::/16")]) is None
    assert forbidden_reason(ip("192.168.1.1"), [net("0.0.0.0/0")]) is None


def test_a_broad_allow_never_opens_loopback_or_metadata() -> None:
    everything = [net("0.0.0.0/0"), net("::/0")]
    assert forbidden_reason(ip("127.0.0.1"), everything) == "loopback"
    assert forbidden_reason(ip("::1"), everything) == "loopback"
    assert forbidden_reason(ip("169.254.169.254"), everything) == "cloud metadata"
    assert forbidden_reason(ip("169.254.169.254"), [net("169.254.0.0/16")]) == "cloud metadata"
    assert forbidden_reason(ip("fd00:ec2::254"), [net("fc00::/7")]) == "cloud metadata"
    # but the range of the class itself, or the exact address, does
    assert forbidden_reason(ip("127.0.0.2"), [net("127.0.0.2/32")]) is None
    assert forbidden_reason(ip("127.0.0.3"), [net("127.0.0.2/32")]) == "loopback"
    assert forbidden_reason(ip("127.9.9.9"), [net("127.0.0.0/8")]) is None
    assert forbidden_reason(ip("::1"), [net("::1/128")]) is None
    assert forbidden_reason(ip("169.254.169.254"), [net("169.254.169.254/32")]) is None


@pytest.mark.parametrize(
    "address", ["0.0.0.0", "::", "::ffff:0.0.0.0", "224.0.0.1", "ff02::1", "255.255.255.255"]
)
def test_unspecified_multicast_and_broadcast_are_never_allowed(address: str) -> None:
    assert forbidden_reason(ip(address), [net("0.0.0.0/0"), net("::/0"), net(address)]) is not None


def test_random_addresses_get_one_verdict_in_every_spelling() -> None:
    """Any IPv4 address, drawn across the whole space and densely from the special ranges, is judged
    the same as its IPv4-mapped, IPv4-compatible, NAT64 and 6to4 spellings."""
    rng = random.Random(16)
    specials = ["127.0.0.0/8", "169.254.0.0/16", "10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "0.0.0.0/8"]
    draws = [rng.getrandbits(32) for _ in range(3000)]
    for special in map(ipaddress.IPv4Network, specials):
        base, size = int(special.network_address), special.num_addresses
        draws += [base + rng.randrange(size) for _ in range(200)] + [base, base + size - 1]
    for n in draws:
        v4 = ipaddress.IPv4Address(n)
        verdict = forbidden_reason(v4)
        hi, lo = n >> 16, n & 0xFFFF
        spellings = [f"::ffff:{v4}", f"::ffff:0:{v4}", f"64:ff9b::{v4}", f"2002:{hi:x}:{lo:x}::"]
        if n > 1:  # ::0.0.0.0 and ::0.0.0.1 are :: and ::1, addresses of their own
            spellings.append(f"::{v4}")
        if verdict is not None:  # local-use NAT64 is refused when any of its layouts is
            spellings.append(f"64:ff9b:1::{v4}")
        for spelling in spellings:
            assert forbidden_reason(ip(spelling)) == verdict, (spelling, verdict)


def test_one_forbidden_address_refuses_the_whole_answer() -> None:
    public = [ip("8.8.8.8"), ip("2606:4700::1111")]
    assert check_addresses(public) == public
    with pytest.raises(ForbiddenAddressError) as caught:
        check_addresses([ip("8.8.8.8"), ip("::ffff:169.254.169.254"), ip("10.0.0.1")])
    assert caught.value.reason == "cloud metadata"
    assert caught.value.address == ip("::ffff:169.254.169.254")
    assert str(caught.value).startswith(f"{ip('::ffff:169.254.169.254')} is cloud metadata: not dialled")
    with pytest.raises(
        ForbiddenAddressError, match=r"10\.0\.0\.1 is private: not dialled unless .* its range"
    ):
        check_addresses([ip("10.0.0.1")])
    with pytest.raises(ForbiddenAddressError, match=r"0\.0\.0\.0 is unspecified: never dialled"):
        check_addresses([ip("0.0.0.0")], [net("0.0.0.0/0")])
    assert check_addresses([ip("10.0.0.1"), ip("8.8.8.8")], [net("10.0.0.0/8")]) == [
        ip("10.0.0.1"),
        ip("8.8.8.8"),
    ]


def test_the_guard_stays_pure() -> None:
    """The guard decides and never does I/O (the layer rule for a pure module, which test_layers
    applies to whole packages only): no asyncio, sockets or DNS library in it."""
    tree = ast.parse(Path(sidegate.egress.guard.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & {"asyncio", "socket", "uvloop", "selectors", "dns", "ssl"}
    assert imported <= {"__future__", "functools", "ipaddress", "re", "collections", "dataclasses"}

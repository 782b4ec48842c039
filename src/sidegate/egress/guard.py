"""The SSRF guard: which authority the app named, and whether an address may be dialled.

Theory of operation. An allow-list by name is not enough to keep the app's outbound calls away
from the pod's own ports, the node, the cloud's metadata service or the private network: a name can
resolve anywhere, and one address has many spellings. The egress path therefore works in three steps,
and this module is the two pure ones:

1. :func:`parse_authority` turns the authority the app sent (absolute-form URL, ``CONNECT`` target
   or ``Host``) into one canonical :class:`Target`, refusing every ambiguous spelling with an
   :class:`AuthorityError` whose text is the reason a 400 gives. One name, one spelling: the policy
   matches exactly what the resolver will look up.
2. The caller resolves the host (``sidegate.egress.resolver``), and
3. checks EVERY address with :func:`forbidden_reason`, then connects to exactly a checked address,
   never looking the name up a second time (that second lookup is what DNS rebinding exploits).

No I/O here; the tables below are the whole policy, so a reader can audit it in one place. The
address classes are listed by hand rather than taken from :mod:`ipaddress`'s ``is_global``/
``is_private`` alone because those flags change between Python releases and disagree with the
registries (``fec0::/10`` and ``3fff::/20`` are "global" in 3.11); ``is_global`` is still consulted
last, so a range that Python knows to be special and the tables forgot is refused as "reserved".
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AuthorityError(ValueError):
    """An authority Sidegate will not forward to; ``str(error)`` is the reason the 400 gives."""


@dataclass(frozen=True)
class Target:
    """A canonical destination: ``host`` lower-case ASCII without brackets or a trailing dot (an
    IPv6 literal in its compressed form), ``port`` 1-65535, and ``literal`` the address when the
    host is an IP literal (then nothing is resolved)."""

    host: str
    port: int
    literal: IPAddress | None

    @property
    def authority(self) -> str:
        """``host:port`` as a ``Host`` header or a log line writes it (IPv6 in brackets)."""
        if isinstance(self.literal, ipaddress.IPv6Address):
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


# --- parsing -----------------------------------------------------------------------------------

_MAX_HOST = 253  # RFC 1035: a name of at most 253 characters in text form, labels of 1-63
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")  # '_' appears in real service names
_PORT = re.compile(r"[1-9][0-9]{0,4}")  # ASCII digits only: int() would accept "+80", " 80", "٨٠"
_NUMERIC_LABEL = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)")
_FORBIDDEN_CHARS = {
    "@": "userinfo ('user@host') is not allowed in the authority; send credentials in a header",
    "\\": "a backslash is not allowed in the authority",
    "#": "a fragment ('#') is not allowed in the authority",
    "?": "a query ('?') is not allowed in the authority",
    "/": "a path ('/') is not allowed in the authority",
    "%": "percent-encoding is not allowed in the authority; write the host as plain ASCII",
}


def parse_authority(authority: str, default_port: int) -> Target:
    """Parse ``host[:port]`` or ``[v6]:port`` strictly; ``default_port`` when no port is given,
    and ``default_port=0`` when a port is required (a ``CONNECT`` target, RFC 9110 section 9.3.6).

    Deliberate choices (each refused with a reason a user can act on):

    - userinfo, backslashes, ``#``, ``?``, ``/``, ``%``, whitespace and control characters are
      refused outright: browsers and HTTP libraries disagree on where such an authority's host
      ends, which is how allow-lists are bypassed;
    - a host whose last label is numeric (``2852039166``, ``0x7f.1``, ``127.1``, ``0177.0.0.1``) is
      an IPv4 literal to every URL parser (WHATWG's rule), so it must be canonical dotted-quad;
    - IPv6 literals must be bracketed and carry no zone id (``fe80::1%eth0``): a zone names an
      interface of this pod, never a destination;
    - one trailing dot is removed (``api.example.com.`` is the same name); the resolver always
      looks names up as absolute, never through the ``resolv.conf`` search list, so the name the
      policy matched is the name that is resolved;
    - a non-ASCII host is refused, with its IDNA A-label suggested: request targets are ASCII
      (RFC 3986) and every HTTP client already sends ``xn--`` names, so a Unicode host can only
      come from a client that skipped normalisation, and two normalisations (IDNA 2003 vs 2008)
      would give two names;
    - an empty port (``host:``), port 0, leading zeros and ports above 65535 are refused.
    """
    if not authority:
        raise AuthorityError("empty authority: name a host")
    if "%" in authority and authority.count(":") >= 2:
        raise AuthorityError("an IPv6 zone id ('%eth0') is not allowed: it names an interface of this pod")
    for char in authority:
        if char in _FORBIDDEN_CHARS:
            raise AuthorityError(_FORBIDDEN_CHARS[char])
        if char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F:
            raise AuthorityError("whitespace or a control character is not allowed in the authority")
    if not authority.isascii():
        raise AuthorityError(_non_ascii_reason(authority))
    if authority.startswith("["):
        host_text, port_text = _split_bracketed(authority)
        literal: IPAddress | None = _parse_ipv6(host_text)
        host = str(literal)
    else:
        host_text, sep, port_text = authority.partition(":")
        if ":" in port_text:
            raise AuthorityError(
                "more than one ':' in the authority; an IPv6 address must be written in brackets: "
                "[2001:db8::1]:443"
            )
        if not sep:
            port_text = ""
        elif not port_text:
            raise AuthorityError("empty port after ':'; give a port or leave out the ':'")
        host, literal = _parse_name_or_ipv4(host_text)
    if not port_text and default_port == 0:
        raise AuthorityError("a port is required here: write host:port (a CONNECT target always has one)")
    port = _parse_port(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise AuthorityError(f"port {port} is out of range (1-65535)")
    return Target(host, port, literal)


def _non_ascii_reason(authority: str) -> str:
    try:
        suggestion = authority.encode("idna").decode("ascii")
    except UnicodeError:
        return "the host is not ASCII and has no IDNA form; send the host's A-label (xn--...)"
    return f"the host is not ASCII; send its IDNA A-label instead: {suggestion}"


def _split_bracketed(authority: str) -> tuple[str, str]:
    end = authority.find("]")
    if end < 0:
        raise AuthorityError("unclosed '[' in the authority")
    rest = authority[end + 1 :]
    if rest and not rest.startswith(":"):
        raise AuthorityError("only ':port' may follow an IPv6 address in brackets")
    if rest == ":":
        raise AuthorityError("empty port after ':'; give a port or leave out the ':'")
    return authority[1:end], rest[1:]


def _parse_ipv6(text: str) -> ipaddress.IPv6Address:
    if not text:
        raise AuthorityError("empty host: '[]' names no address")
    if text.startswith(("v", "V")):
        raise AuthorityError("IPvFuture literals are not supported")
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        raise AuthorityError(f"'[{text}]' is not an IPv6 address") from None
    return address


def _parse_name_or_ipv4(text: str) -> tuple[str, ipaddress.IPv4Address | None]:
    if not text:
        raise AuthorityError("empty host: name a host before the port")
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > _MAX_HOST:
        raise AuthorityError(f"'{text}' is not a host name (1-253 characters)")
    labels = name.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            address = ipaddress.IPv4Address(name)  # strict: four decimal parts, no leading zeros
        except ValueError:
            raise AuthorityError(
                f"'{text}' is a non-canonical IPv4 literal (integer, hex, octal or short form); "
                "write the address as four decimal parts, like 192.0.2.1"
            ) from None
        return str(address), address
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise AuthorityError(
                f"'{text}' is not a host name: each label is 1-63 letters, digits, '-' or '_', "
                "and neither starts nor ends with '-'"
            )
    return name, None


def _parse_port(text: str) -> int:
    if not _PORT.fullmatch(text):
        raise AuthorityError(f"bad port '{text}': a decimal number 1-65535 without leading zeros")
    return int(text)


# --- address classes ---------------------------------------------------------------------------

# Cloud metadata and the agents beside it: AWS/GCP/Azure/OpenStack IMDS, ECS task metadata, EKS Pod
# Identity, Alibaba, Oracle Cloud Classic, and AWS's IPv6 IMDS and Pod Identity. Checked before the
# broader link-local, CGNAT and unique-local classes, so the reason names what is really there.
CLOUD_METADATA: tuple[IPAddress, ...] = tuple(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
        "fd00:ec2::23",
    )
)


def _nets(*texts: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


# (reason, networks), first match wins. IPv4 and IPv6 share the reason vocabulary.
_CLASSES: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("unspecified", _nets("0.0.0.0/32", "::/128")),
    ("loopback", _nets("127.0.0.0/8", "::1/128")),
    ("broadcast", _nets("255.255.255.255/32")),
    ("link-local", _nets("169.254.0.0/16", "fe80::/10")),
    ("private", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("CGNAT", _nets("100.64.0.0/10")),
    ("unique-local", _nets("fc00::/7")),
    ("multicast", _nets("224.0.0.0/4", "ff00::/8")),
    ("documentation", _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")),
    ("documentation", _nets("2001:db8::/32", "3fff::/20")),
    ("benchmarking", _nets("198.18.0.0/15", "2001:2::/48")),
    # "this network", IETF protocol assignments, the old 6to4 relay anycast, class E; IPv6
    # discard-only, Teredo and the deprecated site-local range
    ("reserved", _nets("0.0.0.0/8", "192.0.0.0/24", "192.88.99.0/24", "240.0.0.0/4", "100::/64")),
    ("reserved", _nets("2001::/32", "fec0::/10")),
)

_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")

# Never dialled whatever `allowed` says: connecting to 0.0.0.0 or :: reaches this host's own
# listeners on Linux, and multicast or broadcast is never a TCP peer.
NEVER_ALLOWED = frozenset({"unspecified", "multicast", "broadcast"})
# Allowed only by a range that lies wholly inside the class (see forbidden_reason).
_EXACT_ALLOW_ONLY = frozenset({"loopback", "cloud metadata"})

_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215, the operator picks the length
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated, still routed by some stacks
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT (RFC 2765, RFC 6145)
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries and a translator or tunnel would reach:
    IPv4-mapped, IPv4-compatible, NAT64 (well-known and local-use) and 6to4. Local-use NAT64
    (64:ff9b:1::/48) may embed at any RFC 6052 prefix length, and which one a network uses is not
    visible here, so every reading is returned and the strictest wins. SIIT's IPv4-translated
    form (::ffff:0:a.b.c.d) is read too."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    value = int(ip)
    if ip in _IPV4_COMPATIBLE and value > 1:  # :: and ::1 are themselves, not 0.0.0.0/0.0.0.1
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if ip in _NAT64_WELL_KNOWN or ip in _IPV4_TRANSLATED:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if ip in _NAT64_LOCAL:
        return list(_rfc6052_readings(value))
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    return []


def _rfc6052_readings(value: int) -> Iterator[ipaddress.IPv4Address]:
    """RFC 6052 section 2.2: for prefix lengths 48, 56 and 64 the IPv4 bits skip bits 64-71. The
    /96 reading comes first, so an address written in that (the usual) layout is refused by its
    own class."""
    yield ipaddress.IPv4Address(value & 0xFFFFFFFF)
    for prefix in (48, 56, 64):
        high_bits = 64 - prefix  # how many IPv4 bits sit before the skipped octet
        high = (value >> (128 - 64)) & ((1 << high_bits) - 1)
        low = (value >> (128 - 72 - (32 - high_bits))) & ((1 << (32 - high_bits)) - 1)
        yield ipaddress.IPv4Address((high << (32 - high_bits)) | low)


@functools.lru_cache(maxsize=4096)  # pure; an app calls few distinct addresses, ipaddress is slow
def address_class(ip: IPAddress) -> str | None:
    """The special-purpose class an address itself belongs to (no embedded IPv4 considered), or
    None for an ordinary global unicast address."""
    if ip in CLOUD_METADATA:
        return "cloud metadata"
    for reason, networks in _CLASSES:
        if any(ip.version == net.version and ip in net for net in networks):
            return reason
    if not ip.is_global:
        return "reserved"
    if ip.version == 6 and ip not in _GLOBAL_UNICAST_V6:  # IANA: the rest is reserved or unassigned
        return "reserved"
    return None


def forbidden_reason(ip: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """None when ``ip`` may be dialled, else the class that forbids it ("loopback", "private",
    "cloud metadata", ...), the same for every spelling of one address.

    IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by that IPv4
    address, including against ``allowed``. ``allowed`` lists the ranges a destination explicitly
    permits, with this rule: "unspecified", "multicast" and "broadcast" are never allowed;
    "loopback" and "cloud metadata" only by a range lying wholly inside that class (``127.0.0.2/32``
    or ``127.0.0.0/8`` allows loopback, ``169.254.169.254/32`` the metadata service, but
    ``0.0.0.0/0`` or ``169.254.0.0/16`` allows neither), so a broad allow cannot open them by
    accident; every other class by any range containing the address.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner:
            reasons = [forbidden_reason(v4, allowed) for v4 in inner]
            return next((r for r in reasons if r is not None), None)
    reason = address_class(ip)
    if reason is None or reason in NEVER_ALLOWED:
        return reason
    for net in allowed:
        if ip.version == net.version and ip in net and _allow_covers(reason, ip, net):
            return None
    return reason


class ForbiddenAddressError(ValueError):
    """A resolved address the policy forbids; ``str(error)`` is the reason a 403 gives."""

    def __init__(self, address: IPAddress, reason: str) -> None:
        if reason in NEVER_ALLOWED:
            hint = "never dialled"
        elif reason in _EXACT_ALLOW_ONLY:
            hint = (
                "not dialled unless the destination allows exactly this address or a range inside its class"
            )
        else:
            hint = "not dialled unless the destination allows its range"
        super().__init__(f"{address} is {reason}: {hint}")
        self.address = address
        self.reason = reason


def check_addresses(addresses: Sequence[IPAddress], allowed: Sequence[IPNetwork] = ()) -> list[IPAddress]:
    """``addresses`` (one name's answer) unchanged when every one may be dialled, else
    :class:`ForbiddenAddressError` for the first that may not.

    One forbidden address refuses the whole name rather than being filtered out: a public name
    that also answers with an internal address is a rebinding attempt or a misconfiguration, and
    either way the audit log should say so instead of the request quietly going elsewhere. The
    caller dials only addresses from the returned list and never resolves the name again."""
    for address in addresses:
        reason = forbidden_reason(address, allowed)
        if reason is not None:
            raise ForbiddenAddressError(address, reason)
    return list(addresses)


def _allow_covers(reason: str, ip: IPAddress, net: IPNetwork) -> bool:
    if reason == "cloud metadata":
        return net.num_addresses == 1
    if reason == "loopback":
        return all(address_class(a) == "loopback" for a in (net.network_address, net.broadcast_address))
    return True

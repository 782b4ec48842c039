"""The SSRF guard: which authorities may be parsed and which addresses may be dialled.

A minimal stand-in with the API the guard's owner delivers (it replaces this file at merge):
stdlib :mod:`ipaddress` classifies every address, because hand-written range tables are where
SSRF bugs live. Nothing else of the egress side is kept here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}")
_CANONICAL_V4 = re.compile(r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
_NUMERIC_PART = re.compile(r"0x[0-9a-f]*|[0-9]+")  # a part of an inet_aton spelling
_METADATA = ipaddress.ip_network("169.254.169.254/32")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class AuthorityError(ValueError):
    """An authority that is not a plain ``host[:port]``; ``str(error)`` is the 400's reason."""


@dataclass(frozen=True)
class Target:
    host: str  # lower-case name, or the literal's canonical text
    port: int
    literal: IPAddress | None


def parse_authority(authority: str, default_port: int) -> Target:
    """``host[:port]`` checked strictly: no userinfo, backslash, fragment, zone id, and IPv4
    literals only in the canonical dotted-quad form."""
    for bad, what in (("@", "userinfo"), ("\\", "a backslash"), ("#", "a fragment"), ("%", "a zone id")):
        if bad in authority:
            raise AuthorityError(f"the authority {authority!r} contains {what}")
    host, port_text = authority, ""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise AuthorityError(f"the authority {authority!r} has an unclosed '['")
        host, rest = authority[1:end], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise AuthorityError(f"the authority {authority!r} has text after ']'")
        port_text = rest[1:]
        try:
            literal: IPAddress | None = ipaddress.IPv6Address(host)
        except ValueError:
            raise AuthorityError(f"{host!r} is not an IPv6 address") from None
    else:
        if authority.count(":") > 1:
            raise AuthorityError(f"the authority {authority!r}: an IPv6 address must be in brackets")
        host, _, port_text = authority.partition(":")
        host = host.lower()
        if _CANONICAL_V4.fullmatch(host):
            literal = ipaddress.IPv4Address(host)
        elif host and all(_NUMERIC_PART.fullmatch(part) for part in host.split(".")):
            raise AuthorityError(f"{host!r} is not a canonical IPv4 address (use the dotted-quad form)")
        elif _HOST_NAME.fullmatch(host):
            literal = None
        else:
            raise AuthorityError(f"{host!r} is not a valid host name")
        if authority.endswith(":"):
            raise AuthorityError(f"the authority {authority!r} has an empty port")
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise AuthorityError(f"the port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    return Target(str(literal) if literal is not None else host, port, literal)


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in ipaddress.ip_network("64:ff9b::/96") or ip in ipaddress.ip_network("::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def forbidden_reason(ip: IPAddress, allowed: Sequence[Network] = ()) -> str | None:
    """Why ``ip`` may not be dialled, or None when it may (``allowed`` lists ranges a
    destination opened explicitly)."""
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    inner = _embedded_v4(ip)
    if inner is not None and not ip.is_unspecified and not ip.is_loopback:
        reason = forbidden_reason(inner, allowed)
        return f"{reason} (embedded in {ip})" if reason else None
    for test, what in (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip in _METADATA, "cloud metadata"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip in _CGNAT, "carrier-grade NAT"),
        (ip.is_private or ip.is_reserved or not ip.is_global, "private"),
    ):
        if test:
            return f"{ip} is a {what} address"
    return None

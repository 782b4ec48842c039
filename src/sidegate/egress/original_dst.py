"""Where a connection redirected by iptables was going: ``SO_ORIGINAL_DST``, read back.

A connection that the nat table ``REDIRECT``\\ ed to the egress listener arrives with the
listener's own address as its local end; the kernel's connection tracking still knows the
address the app dialled, and hands it out through ``getsockopt(SOL_IP, SO_ORIGINAL_DST)``
(``IP6T_SO_ORIGINAL_DST`` on ``SOL_IPV6`` for IPv6; both are 80) as a ``struct sockaddr_in``
(or ``sockaddr_in6``). Python names neither constant, so they are spelled here, and the
structure is unpacked with :mod:`struct`.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h
_SOCKADDR_IN = 16
_SOCKADDR_IN6 = 28


def parse_sockaddr(raw: bytes) -> tuple[str, int]:
    """``(ip, port)`` of a ``struct sockaddr_in`` or ``sockaddr_in6`` as the kernel wrote it
    (family in host order, port and address in network order); ValueError for anything else."""
    if len(raw) < 4:
        raise ValueError("a sockaddr shorter than 4 bytes")
    (family,) = struct.unpack_from("=H", raw)
    (port,) = struct.unpack_from("!H", raw, 2)
    if family == socket.AF_INET and len(raw) >= _SOCKADDR_IN:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6 and len(raw) >= _SOCKADDR_IN6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raise ValueError(f"a sockaddr of family {family} and {len(raw)} bytes")


def original_destination(sock: Any) -> tuple[str, int] | None:
    """The address ``sock``'s peer originally dialled, or None when the kernel keeps none (no
    connection tracking for it: not redirected, or not Linux)."""
    try:
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, _SOCKADDR_IN6)
        else:
            raw = sock.getsockopt(socket.IPPROTO_IP, SO_ORIGINAL_DST, _SOCKADDR_IN)
        return parse_sockaddr(raw)
    except (OSError, ValueError):
        return None


def redirected_destination(sock: Any) -> tuple[str, int] | None:
    """The original destination of a connection that was redirected here; None for one that
    came to this listener's own address (the app using it as its proxy)."""
    original = original_destination(sock)
    if original is None:
        return None
    try:
        local = sock.getsockname()
    except OSError:
        return None
    return None if (original[0], original[1]) == (local[0], local[1]) else original

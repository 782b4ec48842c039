"""SO_ORIGINAL_DST's answer unpacked: the sockaddr structures as the kernel writes them, and
a socket nothing redirected (a plain loopback connection: no original destination elsewhere)."""

from __future__ import annotations

import socket
import struct

import pytest

from sidegate.egress.original_dst import parse_sockaddr, redirected_destination


def test_sockaddr_in() -> None:
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 8443) + socket.inet_aton("10.251.0.2")
    assert parse_sockaddr(raw + b"\0" * 8) == ("10.251.0.2", 8443)


def test_sockaddr_in6() -> None:
    address = socket.inet_pton(socket.AF_INET6, "2001:db8::7")
    raw = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 443, 0) + address + b"\0" * 4
    assert parse_sockaddr(raw) == ("2001:db8::7", 443)


@pytest.mark.parametrize("raw", [b"", b"\x02\x00", struct.pack("=H", 99) + b"\0" * 14])
def test_anything_else_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="sockaddr"):
        parse_sockaddr(raw)


def test_a_direct_connection_is_not_redirected() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    try:
        assert redirected_destination(accepted) is None
    finally:
        for sock in (client, accepted, server):
            sock.close()

"""The ClientHello reader on real ClientHellos (made by the ssl module), split, cut short,
with lying lengths, without SNI, and on bytes that are no TLS at all."""

from __future__ import annotations

import ssl
import struct

import pytest

from sidegate.egress.sni import (
    MAX_CLIENT_HELLO,
    ClientHello,
    ClientHelloError,
    looks_like_tls,
    read_client_hello,
)


def client_hello(server_hostname: str | None, *, tls13: bool = True) -> bytes:
    """The first flight a real TLS client sends (OpenSSL through the ssl module)."""
    context = ssl.create_default_context()
    context.check_hostname = server_hostname is not None
    if not tls13:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def records(message: bytes, sizes: list[int]) -> bytes:
    """``message`` (a handshake message) cut into TLS records of the given sizes."""
    out, at = b"", 0
    for size in sizes:
        chunk = message[at : at + size]
        out += b"\x16\x03\x01" + struct.pack("!H", len(chunk)) + chunk
        at += size
    assert at >= len(message)
    return out


@pytest.mark.parametrize("tls13", [True, False])
def test_a_real_client_hello_names_its_server(tls13: bool) -> None:
    hello = client_hello("api.partner.test", tls13=tls13)
    assert read_client_hello(hello) == ClientHello("api.partner.test", len(hello))
    assert looks_like_tls(hello[:1]) and looks_like_tls(hello)


def test_the_name_is_lower_case() -> None:
    found = read_client_hello(client_hello("API.Partner.TEST"))
    assert found is not None and found.server_name == "api.partner.test"


def test_no_sni_without_a_server_hostname() -> None:
    hello = client_hello(None)
    found = read_client_hello(hello)
    assert found is not None and found.server_name is None


def test_an_ip_literal_is_never_sent_as_sni() -> None:
    found = read_client_hello(client_hello("192.0.2.1"))  # RFC 6066: clients leave it out
    assert found is not None and found.server_name is None


def test_every_split_point_gives_the_same_answer() -> None:
    hello = client_hello("split.example")
    for cut in range(len(hello)):
        assert read_client_hello(hello[:cut]) is None, cut  # not whole yet: read more
    assert read_client_hello(hello + b"application data follows") == ClientHello("split.example", len(hello))


def test_a_hello_spread_over_several_records() -> None:
    message = client_hello("records.example")[5:]
    spread = records(message, [10, 100, len(message) - 110])
    assert read_client_hello(spread) == ClientHello("records.example", len(spread))
    assert read_client_hello(spread[:-1]) is None


def test_a_huge_declared_hello_is_refused_early() -> None:
    header = b"\x01" + (MAX_CLIENT_HELLO).to_bytes(3, "big")
    with pytest.raises(ClientHelloError, match="at most"):
        read_client_hello(records(header + b"\0" * 20, [24]))


def test_a_record_longer_than_tls_allows_is_refused() -> None:
    with pytest.raises(ClientHelloError, match="record of 20000 bytes"):
        read_client_hello(b"\x16\x03\x01" + struct.pack("!H", 20000))
    with pytest.raises(ClientHelloError, match="record of 0 bytes"):
        read_client_hello(b"\x16\x03\x01\x00\x00")


def test_inner_lengths_that_lie_are_refused() -> None:
    message = bytearray(client_hello("lies.example")[5:])
    session_id_length = 4 + 2 + 32
    message[session_id_length] = 0xFF  # a session id running past the hello
    with pytest.raises(ClientHelloError, match="session id"):
        read_client_hello(records(bytes(message), [len(message)]))


def test_a_handshake_that_is_not_a_client_hello() -> None:
    server_hello = b"\x02\x00\x00\x04" + b"\0" * 4
    with pytest.raises(ClientHelloError, match="not a ClientHello"):
        read_client_hello(records(server_hello, [len(server_hello)]))


@pytest.mark.parametrize(
    "junk",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10",  # an SSLv2-style ClientHello
        b"\x16\x02\x00\x00\x10",  # handshake type, version 2
        b"SSH-2.0-OpenSSH_9.2\r\n",
    ],
)
def test_bytes_that_are_no_tls(junk: bytes) -> None:
    assert not looks_like_tls(junk)
    with pytest.raises(ClientHelloError):
        read_client_hello(junk)


def test_two_host_names_are_refused() -> None:
    name = b"a.example"
    entry = b"\x00" + struct.pack("!H", len(name)) + name
    server_names = struct.pack("!H", 2 * len(entry)) + 2 * entry
    extension = struct.pack("!HH", 0, len(server_names)) + server_names
    body = b"\x03\x03" + b"\0" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += struct.pack("!H", len(extension)) + extension
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    with pytest.raises(ClientHelloError, match="more than one host_name"):
        read_client_hello(records(message, [len(message)]))

"""The server name a TLS ClientHello asks for, read from the bytes without taking part in TLS.

Why hand-written: the egress listener only *looks at* the first bytes of a tunnel (transparent
mode, the CONNECT SNI check) and then passes them on unchanged to the destination, which does
the handshake with the app. :mod:`ssl` can only be an endpoint of a handshake, and no well-kept
Python library parses a ClientHello passively. So this is a small, bounded reader of exactly
the fields on the way to the ``server_name`` extension (RFC 8446 section 4.1.2, RFC 6066
section 3), and nothing else.

Theory of operation. :func:`read_client_hello` is given everything received so far and says
one of three things: the hello is not whole yet (``None``: read more), here it is
(:class:`ClientHello`), or this is no ClientHello (:class:`ClientHelloError`, whose text says
why). It is pure and restartable: the caller keeps the bytes and asks again after each read,
so a ClientHello split over any number of reads or TLS records is found the same way. Every
length is checked against what contains it before it is used, and the whole handshake message
is bounded by :data:`MAX_CLIENT_HELLO` (a real one is 200 bytes to 2 KiB, a post-quantum key
share included), so a peer cannot make the listener hold more than that.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The largest ClientHello handshake message accepted (bytes, without record headers).
MAX_CLIENT_HELLO = 32 * 1024
#: A TLS plaintext record carries at most 2^14 bytes (RFC 8446 section 5.1).
_MAX_RECORD = 1 << 14
_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_SERVER_NAME = 0x0000
_HOST_NAME = 0x00


class ClientHelloError(ValueError):
    """The bytes are not a well-formed TLS ClientHello; ``str(error)`` says what was wrong."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What the egress side needs of a ClientHello: the name asked for (lower-case, no
    trailing dot; None when the hello has no ``server_name``), and how many bytes of the
    input the records holding it took."""

    server_name: str | None
    consumed: int


def looks_like_tls(data: bytes) -> bool:
    """Whether ``data`` (at least one byte) starts like a TLS handshake record: type 22 and,
    once there, a major version of 3 (SSL 3.0 to TLS 1.3 all write 3 there)."""
    return data[:1] == b"\x16" and (len(data) < 2 or data[1] == 3)


def read_client_hello(data: bytes) -> ClientHello | None:
    """The ClientHello at the start of ``data``; None while more bytes are needed."""
    message, consumed = _handshake_message(data)
    if message is None:
        return None
    return ClientHello(_server_name(message), consumed)


def _handshake_message(data: bytes) -> tuple[bytes | None, int]:
    """The first handshake message, reassembled from as many records as it spans."""
    body = b""
    offset = 0
    wanted: int | None = None  # the handshake message's length, once its header is in
    while True:
        if len(data) - offset < 5:
            return None, 0
        kind, major, length = data[offset], data[offset + 1], int.from_bytes(data[offset + 3 : offset + 5])
        if kind != _HANDSHAKE or major != 3:
            raise ClientHelloError("not a TLS handshake record")
        if length == 0 or length > _MAX_RECORD:
            raise ClientHelloError(f"a TLS record of {length} bytes (1 to {_MAX_RECORD} allowed)")
        if len(data) - offset - 5 < length:
            return None, 0
        body += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if wanted is None and len(body) >= 4:
            if body[0] != _CLIENT_HELLO:
                raise ClientHelloError("the first handshake message is not a ClientHello")
            wanted = 4 + int.from_bytes(body[1:4])
            if wanted > MAX_CLIENT_HELLO:
                raise ClientHelloError(f"a ClientHello of {wanted} bytes (at most {MAX_CLIENT_HELLO})")
        if wanted is not None and len(body) >= wanted:
            return body[4:wanted], offset


class _Reader:
    """Bounded reads over one byte string: every length is checked before it is used."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.at:
            raise ClientHelloError(f"{what} runs past the end of its container")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def number(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what))

    def vector(self, size: int, what: str) -> _Reader:
        """A length-prefixed field (``size`` bytes of length) as a reader of its own."""
        return _Reader(self.take(self.number(size, what), what))

    def done(self) -> bool:
        return self.at == len(self.data)


def _server_name(message: bytes) -> str | None:
    hello = _Reader(message)
    hello.take(2 + 32, "the version and random")
    if len(hello.vector(1, "the session id").data) > 32:
        raise ClientHelloError("a session id longer than 32 bytes")
    suites = hello.vector(2, "the cipher suites").data
    if not suites or len(suites) % 2:
        raise ClientHelloError("an empty or odd-length cipher suite list")
    hello.vector(1, "the compression methods")
    if hello.done():
        return None  # no extensions at all (SSL 3.0 style): no name
    extensions = hello.vector(2, "the extensions")
    if not hello.done():
        raise ClientHelloError("bytes after the extensions")
    name: str | None = None
    seen: set[int] = set()
    while not extensions.done():
        kind = extensions.number(2, "an extension type")
        data = extensions.vector(2, "an extension")
        if kind in seen:
            raise ClientHelloError(f"extension {kind} sent twice")
        seen.add(kind)
        if kind == _SERVER_NAME:
            name = _host_name(data)
    return name


def _host_name(extension: _Reader) -> str | None:
    names = extension.vector(2, "the server name list")
    if not extension.done():
        raise ClientHelloError("bytes after the server name list")
    found: str | None = None
    while not names.done():
        kind = names.number(1, "a server name type")
        value = names.vector(2, "a server name").data
        if kind != _HOST_NAME:
            continue  # no other type is defined; RFC 6066 says to ignore unknown ones
        if found is not None:
            raise ClientHelloError("more than one host_name in server_name")
        if not value or len(value) > 255 or not value.isascii() or any(c <= 0x20 or c == 0x7F for c in value):
            raise ClientHelloError("a server name that is not an ASCII host name")
        found = value.decode("ascii").lower().removesuffix(".")
    return found

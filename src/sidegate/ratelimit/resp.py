"""RESP2, the Redis protocol, as far as the rate-limit client needs it: commands out, replies in.

:func:`parse_reply` reads one reply from a buffer without copying what follows it (None while the
reply is incomplete), so a data callback can parse every complete reply of one read and keep the
rest; an error reply is a value (:class:`ReplyError`), never an exception, so one refused command
cannot desynchronise the replies that follow. Bytes that are not RESP2 raise :class:`RespProtocolError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["Reply", "ReplyError", "RespProtocolError", "encode", "parse_reply"]

_MAX_BULK = 64 * 1024 * 1024  # a reply larger than this is not one this client asked for


@dataclass(frozen=True, slots=True)
class ReplyError:
    """An error reply (``-ERR ...``): a value, not an exception, so one bad command cannot desync."""

    message: str


Reply: TypeAlias = "bytes | int | ReplyError | list[Reply] | None"


class RespProtocolError(Exception):
    """Bytes from the server that are not RESP2."""


def parse_reply(buf: bytes | bytearray, pos: int = 0) -> tuple[Reply, int] | None:
    """Parse one RESP2 reply from ``buf[pos:]``: (value, end position), or None while it is incomplete."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        if len(buf) - pos > 65536:
            raise RespProtocolError("no line end in 64 KiB")
        return None
    kind = buf[pos]
    line = buf[pos + 1 : end]
    if kind == 0x3A:  # ':' integer
        return _int(line), end + 2
    if kind == 0x24:  # '$' bulk string
        size = _int(line)
        if size == -1:
            return None, end + 2
        if size < 0 or size > _MAX_BULK:
            raise RespProtocolError(f"bulk string of {size} bytes")
        stop = end + 2 + size
        if len(buf) < stop + 2:
            return None
        if buf[stop : stop + 2] != b"\r\n":
            raise RespProtocolError("bulk string not followed by CRLF")
        return bytes(buf[end + 2 : stop]), stop + 2
    if kind == 0x2B:  # '+' simple string
        return bytes(line), end + 2
    if kind == 0x2D:  # '-' error
        return ReplyError(line.decode("utf-8", "replace")), end + 2
    if kind == 0x2A:  # '*' array
        count = _int(line)
        if count == -1:
            return None, end + 2
        if count < 0 or count > _MAX_BULK:
            raise RespProtocolError(f"array of {count} elements")
        items: list[Reply] = []
        at = end + 2
        for _ in range(count):
            parsed = parse_reply(buf, at)
            if parsed is None:
                return None
            items.append(parsed[0])
            at = parsed[1]
        return items, at
    raise RespProtocolError(f"unknown reply type {bytes([kind])!r}")


def _int(line: bytes | bytearray) -> int:
    try:
        return int(line)
    except ValueError:
        raise RespProtocolError(f"not an integer: {bytes(line[:20])!r}") from None


def encode(*args: bytes) -> bytes:
    """One command as a RESP2 array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    out += [b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args]
    return b"".join(out)

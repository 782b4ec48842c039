"""Heads held until they end, for both readers to give llhttp whole.

llhttp is given each head the fast lane leaves to it whole, trimmed of the whitespace after field
values (``trim_field_lines``: it is not part of a value, and llhttp would keep it, or refuse
``chunked`` followed by a tab). A head that does not end in one read is held here, in pieces,
until it does: :meth:`HeldHead.feed` says where it ended (or that it is held, or why it cannot
be), :meth:`HeldHead.take` gives it whole. The bounds are the reader's: the request reader gives
a head that cannot be held to llhttp as it comes (:meth:`HeldHead.spill`), for llhttp's own 414,
431 or 400; the response reader answers 502.
"""

from __future__ import annotations

from typing import Final

import httptools

from sidegate.http.errors import ProtocolError
from sidegate.http.syntax import head_end, trim_field_lines

# What HeldHead.feed says of a read in which the head does not end (an offset where it does).
HELD: Final = -1  # the read is held: the head goes on in a later one
OVER: Final = -2  # held, the head would be larger than the bound given
BARE_LF: Final = -3  # the head has an empty line ended by a bare LF: it never ends in CRLF CRLF
RAW: Final = -4  # the head is being given as it comes (after spill): so is this read


class HeldHead:
    """One reader's head in the making: the reads held (``size`` bytes) and the last bytes of
    them, where a CRLF CRLF may have begun."""

    __slots__ = ("_pieces", "_tail", "holding", "raw", "size")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._tail = b""  # the last bytes (at most three) of the head's earlier reads
        self.size = 0  # bytes held
        self.holding = False  # some are (a plain bool: the readers ask before every head)
        self.raw = False  # the head goes to llhttp as it comes (see spill)

    def feed(self, data: bytes, pos: int, max_size: int) -> int:
        """A read, with the head at ``data[pos:]`` (or before it: see ``HELD``). Returns the offset
        just past the CRLF CRLF that ends the head (then :meth:`take` it), or, when the head does
        not end in this read: ``HELD``, or (nothing held of this read) ``RAW``, ``OVER`` when it
        would take what is held past ``max_size``, ``BARE_LF``."""
        tail = self._tail
        end = head_end(tail, data, pos)
        if end >= 0:
            self._tail = b""
            return end
        piece = data[pos:] if pos else data
        self._tail = (tail + piece[-3:])[-3:]
        if self.raw:
            return RAW
        held = self.size + len(piece)
        if held > max_size:
            return OVER
        if piece.find(b"\n\n") >= 0 or (tail + piece[:2]).find(b"\n\n") >= 0:
            return BARE_LF
        self._pieces.append(piece)
        self.size = held
        self.holding = True
        return HELD

    def spill(self, data: bytes, pos: int) -> bytes:
        """Give up holding the head: what is held and ``data[pos:]``, for llhttp to read as it
        comes, as it will the rest of the head (``feed`` says ``RAW``, ``take`` gives it as is)."""
        self.raw = True
        piece = data[pos:] if pos else data
        if self._pieces:
            piece = b"".join(self._pieces) + piece
            self._pieces = []
            self.size = 0
            self.holding = False
        return piece

    def take(self, data: bytes, pos: int, end: int) -> bytes:
        """The head ended at ``end`` (from :meth:`feed`), as llhttp is to be given it: whole and
        trimmed, or, after :meth:`spill`, the rest of it as it came."""
        head = data[pos:end] if pos or end < len(data) else data
        if self.raw:
            self.raw = False
            return head  # the rest of a head llhttp has been reading as it came
        if self._pieces:
            head = b"".join(self._pieces) + head
            self._pieces = []
            self.size = 0
            self.holding = False
        return trim_field_lines(head)


def llhttp_refusal(exc: Exception, status: int, message: str) -> ProtocolError:
    """What to answer when llhttp raised ``exc`` (not an upgrade) reading a ``message``
    ("request", "response"): the ``ProtocolError`` a callback raised, else ``status``."""
    if isinstance(exc, httptools.HttpParserCallbackError):
        cause = exc.__context__
        if isinstance(cause, ProtocolError):
            return cause
        return ProtocolError(status, f"invalid {message}")
    return ProtocolError(status, f"malformed {message}: {exc}")

"""Chunked bodies (RFC 9112 section 7.1), read here rather than by llhttp, for both readers.

llhttp refuses legal chunk lines (bad whitespace before ``;`` or around ``=``: ``3 ;a=b``) and
reads chunk extensions of any length. Both readers hand llhttp the head only and read a chunked
body with :class:`ChunkedBody`: every legal form is accepted (extensions are dropped: the body is
re-chunked on the way out), a chunk line longer than ``chunk_line_max`` (size and extensions) is
refused, and so is whatever is ambiguous (a bare LF or CR, a size that is not plain hex, data not
followed by CRLF, a malformed trailer line). Trailer fields are checked, bounded and dropped.
Extensions bounded per line could still be most of a body (a 4 KiB extension on every one-byte
chunk), so, as Go's net/http does, what is not data may not pass 16 KiB beyond an allowance of 16
bytes plus twice the data of each chunk.

A refusal raises :class:`ProtocolError` with the reader's status (400 for requests, 502 for
responses), so the connection answers and closes.
"""

from __future__ import annotations

import re
from typing import Final, NoReturn

from sidegate.http.counted import CountedBody
from sidegate.http.errors import ProtocolError

_TOKEN: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED: Final = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# chunk-size [ chunk-ext ]: *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
_CHUNK_LINE: Final = re.compile(
    rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED
    + rb"))?)*"
)
_TRAILER_LINE: Final = re.compile(_TOKEN + rb":[\t \x21-\x7e\x80-\xff]*")
_SIZE_DIGITS_MAX: Final = 15  # significant hex digits: sizes below 2**60
_PLAIN_SIZE: Final = re.compile(rb"[0-9A-Fa-f]{1,8}")
# Chunk lines that are a size alone (the common case) -> the size: a stream's chunks are often of a
# few sizes, and a dict look-up costs a fifth of the full match. Bounded: cleared when full.
_SIZES: Final[dict[bytes, int]] = {}
_SIZES_MAX: Final = 1024

# Reading states.
_LINE: Final = 0  # a chunk-size line
_DATA: Final = 1  # chunk data (``_body_left`` bytes of it still owed)
_DATA_END: Final = 2  # the CRLF after chunk data (``_chunk_line`` holds what came of it)
_TRAILER: Final = 3  # trailer lines, up to the empty line that ends the body

CHUNK_LINE_MAX: Final = 4096  # default bound on a chunk line (size and extensions), as Go's net/http
_EXCESS_MAX: Final = 16 * 1024  # bytes that are not data, beyond each chunk's allowance


class ChunkedBody(CountedBody):
    """A reader that counts Content-Length bodies (``CountedBody``) and reads chunked ones."""

    __slots__ = (
        "_chunk_line",
        "_chunk_line_max",
        "_chunk_state",
        "_chunk_status",
        "_excess",
        "_trailer_left",
        "_trailer_max",
        "in_chunked",
    )

    def __init__(self, status: int, chunk_line_max: int, trailer_max: int) -> None:
        super().__init__()
        self._chunk_status = status  # what a broken body is answered with
        self._chunk_line_max = chunk_line_max
        self._trailer_max = trailer_max
        self._chunk_line = b""  # a line not yet ended by its LF
        self._chunk_state = _LINE
        self._trailer_left = 0
        self._excess = 0
        self.in_chunked = False  # a chunked body is being read

    def _start_chunked(self) -> None:
        self.in_chunked = True
        self._chunk_state = _LINE
        self._chunk_line = b""
        self._trailer_left = self._trailer_max
        self._excess = 0

    def _read_chunked(self, data: bytes, pos: int) -> int:
        """Read the chunked body from ``data[pos:]``; returns the offset where what follows the
        body starts (``len(data)`` when the body goes on in a later read)."""
        size = len(data)
        while pos < size:
            state = self._chunk_state
            if state == _DATA:
                left = self._body_left
                end = pos + left if size - pos > left else size
                self._body_left = left - (end - pos)
                self._body_part(data[pos:end] if pos or end < size else data)
                pos = end
                if not self._body_left:
                    self._chunk_state = _DATA_END
                continue
            if state == _DATA_END:
                held = self._chunk_line
                got = data[pos : pos + 2 - len(held)]
                pos += len(got)
                seen = held + got
                if seen != b"\r\n"[: len(seen)]:
                    self._broken("chunk data not followed by CRLF")
                if len(seen) < 2:
                    self._chunk_line = seen
                else:
                    self._chunk_line = b""
                    self._chunk_state = _LINE
                continue
            lf = data.find(b"\n", pos)
            if lf < 0:
                line = self._chunk_line + data[pos:]
                if len(line) > (self._chunk_line_max if state == _LINE else self._trailer_left):
                    self._too_long(state)
                self._chunk_line = line
                return size
            line = self._chunk_line + data[pos:lf] if self._chunk_line else data[pos:lf]
            self._chunk_line = b""
            pos = lf + 1
            if line[-1:] != b"\r":
                self._broken("bare LF in a chunked body")
            line = line[:-1]
            if state == _LINE:
                if len(line) > self._chunk_line_max:
                    self._too_long(state)
                self._chunk_size(line)
                continue
            self._trailer_left -= len(line) + 2
            if self._trailer_left < 0:
                self._too_long(state)
            if not line:  # the empty line after the trailer fields: the body is complete
                self.in_chunked = False
                self._body_complete()
                return pos
            elif _TRAILER_LINE.fullmatch(line) is None:
                self._broken("invalid trailer field")
        return pos

    def _chunk_size(self, line: bytes) -> None:
        length = _SIZES.get(line, -1)
        if length < 0:
            length = self._parse_size(line)
        excess = self._excess + len(line) + 4 - 16 - 2 * length  # the line and the CRLFs
        self._excess = excess if excess > 0 else 0
        if excess > _EXCESS_MAX:
            self._broken("chunked body with too much that is not data (extensions or tiny chunks)")
        if length:
            self._body_left = length
            self._chunk_state = _DATA
        else:
            self._chunk_state = _TRAILER

    def _parse_size(self, line: bytes) -> int:
        """The size a chunk line gives (its extensions checked, then dropped)."""
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            self._broken("invalid chunk size line")
        digits = match.group(1).lstrip(b"0")
        if len(digits) > _SIZE_DIGITS_MAX:
            self._broken("chunk size too large")
        length = int(digits, 16) if digits else 0
        if _PLAIN_SIZE.fullmatch(line) is not None:
            if len(_SIZES) >= _SIZES_MAX:
                _SIZES.clear()
            _SIZES[line] = length
        return length

    def _too_long(self, state: int) -> NoReturn:
        if state == _LINE:
            self._broken(f"chunk line (size and extensions) longer than {self._chunk_line_max} bytes")
        self._broken(f"trailer section larger than {self._trailer_max} bytes")

    def _broken(self, reason: str) -> NoReturn:
        raise ProtocolError(self._chunk_status, reason)

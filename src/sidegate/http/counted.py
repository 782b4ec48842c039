"""The Content-Length bodies the fast lane reads: counted here, without llhttp.

Both readers (requests and responses) derive from :class:`CountedBody`: when the lane has read a
head with a Content-Length, the reader sets ``_body_left`` and hands each following read to
:meth:`CountedBody._count_body`, which delivers the body's part of it and says where the rest starts.
"""

from __future__ import annotations


class CountedBody:
    __slots__ = ("_body_left",)

    def __init__(self) -> None:
        self._body_left = 0  # bytes still owed of a body the fast lane is counting

    def _count_body(self, data: bytes, taken: int) -> int:
        """Deliver the part of ``data[taken:]`` that belongs to the body (ending the message when
        that completes it); returns the offset of what follows it."""
        left = self._body_left
        size = len(data)
        if size - taken <= left:  # all of it is body
            self._body_left = left - (size - taken)
            self._body_part(data[taken:] if taken else data)
            if not self._body_left:
                self._body_complete()
            return size
        self._body_left = 0
        self._body_part(data[taken : taken + left])
        self._body_complete()
        return taken + left

    def _body_part(self, data: bytes) -> None:
        raise NotImplementedError

    def _body_complete(self) -> None:
        raise NotImplementedError

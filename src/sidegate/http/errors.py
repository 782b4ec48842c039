"""Protocol errors: a status to answer with and a reason a person can read."""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer broke HTTP/1.1 framing or a limit; the connection is answered (if possible) and closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

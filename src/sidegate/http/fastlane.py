"""The fast lane of the HTTP/1.1 readers, when it is built (``_scan.c``; a pure-Python build has none).

``scan_request`` and ``scan_response`` read a whole head in one call when it is complete, plainly
valid and simple (no request body, no upgrade, no close...), and return None otherwise: the readers
then hand the bytes to llhttp, the reference, which frames, validates and rejects as it always has.
Without the extension both always return None, so every head takes the reference path.
"""

from __future__ import annotations

try:
    from sidegate.http._scan import scan_request, scan_response

    AVAILABLE = True
except ImportError:  # a pure-Python build (`make pure`): llhttp reads every head
    AVAILABLE = False

    def scan_request(
        data: bytes, start: int, max_head: int, max_fields: int
    ) -> tuple[int, bytes, bytes, bytes, bytes, list[tuple[bytes, bytes]]] | None:
        return None

    def scan_response(
        data: bytes, start: int, max_head: int
    ) -> tuple[int, int, int, list[tuple[bytes, bytes]]] | None:
        return None


__all__ = ["AVAILABLE", "scan_request", "scan_response"]

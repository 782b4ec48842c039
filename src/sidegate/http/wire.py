"""Bytes on the wire, the common case in C (``_wire.c``), with pure-Python stand-ins.

``scan_request`` and ``scan_response`` are the readers' fast lane: they read a whole head in one
call when it is complete, plainly valid and simple (no chunked body, no upgrade, no close...), and
return None otherwise; the readers then hand the bytes to llhttp, the reference, which frames,
validates and rejects as it always has. ``join_head`` writes a head in one allocation.

A pure-Python build (``make pure``) has no ``_wire``: the scans always return None, so every head
takes the reference path, and ``join_head`` joins in Python.
"""

from __future__ import annotations

# What the lanes return for a head they take: (end, method, target, version, host, content_length,
# fields) for a request, (end, status, content_length, fields) for a response.
ScannedRequest = tuple[int, bytes, bytes, bytes, bytes, int, list[tuple[bytes, bytes]]]
ScannedResponse = tuple[int, int, int, list[tuple[bytes, bytes]]]

try:
    from sidegate.http._wire import join_head, scan_request, scan_response

    AVAILABLE = True
except ImportError:  # a pure-Python build: llhttp reads every head
    AVAILABLE = False

    def scan_request(data: bytes, start: int, max_head: int, max_fields: int) -> ScannedRequest | None:
        return None

    def scan_response(data: bytes, start: int, max_head: int) -> ScannedResponse | None:
        return None

    def join_head(lead: list[bytes], fields: list[tuple[bytes, bytes]], trail: list[bytes]) -> bytes:
        parts = list(lead)
        for name, value in fields:
            parts += (name, b": ", value, b"\r\n")
        parts += trail
        return b"".join(parts)


__all__ = ["AVAILABLE", "ScannedRequest", "ScannedResponse", "join_head", "scan_request", "scan_response"]

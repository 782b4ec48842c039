"""Range requests for the test origin's ``/cache...?ranges=TAG`` (see origin.py): a stable body,
a strong ETag, and 206 answers to a Range, as a real file server would give them.

``ranges=TAG``: the body is ``body`` (default ``cached body``) plus ``pad`` bytes, the same on
every answer, with ``ETag: "TAG"``; after ``changeafter=N`` answers to the target the
representation changes (body upper-cased, ``ETag: "TAG-2"``). A single-range ``Range`` gets a
206 with Content-Range, several ranges a ``multipart/byteranges`` 206, one past the end a 416;
without Range the whole 200.
"""

from __future__ import annotations

Answer = tuple[int, bytes, list[tuple[str, str]]]  # status, body, fields
BOUNDARY = "sidegate-test-boundary"


def representation(tag: str, body: str, pad: int, seen: int, change_after: int) -> tuple[bytes, str]:
    """The body and ETag of the representation current after ``seen`` answers."""
    data = body.encode() + b"x" * pad
    if seen > change_after:
        return data.upper(), f'"{tag}-2"'
    return data, f'"{tag}"'


def answer(data: bytes, etag: str, range_value: str | None) -> Answer:
    fields = [("ETag", etag), ("Accept-Ranges", "bytes")]
    spans = _spans(range_value, len(data)) if range_value else None
    if spans is None:
        return 200, data, fields
    if not spans:
        return 416, b"", [*fields, ("Content-Range", f"bytes */{len(data)}")]
    if len(spans) == 1:
        first, last = spans[0]
        return 206, data[first : last + 1], [*fields, ("Content-Range", f"bytes {first}-{last}/{len(data)}")]
    size = len(data)
    parts = [
        f"--{BOUNDARY}\r\nContent-Range: bytes {a}-{b}/{size}\r\n\r\n".encode() + data[a : b + 1] + b"\r\n"
        for a, b in spans
    ]
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return 206, body, [*fields, ("Content-Type", f"multipart/byteranges; boundary={BOUNDARY}")]


def _spans(value: str, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable ranges of ``bytes=...``; None to ignore the field (another unit, bad syntax)."""
    unit, _, specs = value.partition("=")
    if unit.strip() != "bytes":
        return None
    spans = []
    for spec in specs.split(","):
        first, dash, last = spec.strip().partition("-")
        if not dash or not (first or last) or not all(part.isdigit() for part in (first, last) if part):
            return None
        if not first:
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start < size and start <= end:
            spans.append((start, end))
    return spans

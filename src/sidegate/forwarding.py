"""The forwarding headers a proxy adds to requests: X-Forwarded-*, Forwarded (RFC 7239), Via.

Pure functions over a parsed head and the listener's :class:`ForwardedSpec`. The common request
carries none of these headers, so its lines depend only on the client address and the Host:
:class:`ForwardingCache` keeps those ready-made per (client, host) so the hot path only joins.
"""

from __future__ import annotations

from sidegate.config.snapshot import ForwardedSpec
from sidegate.http.request_parser import ParsedRequest


def forwarded_lines(spec: ForwardedSpec, head: ParsedRequest, proto: bytes = b"http") -> bytes:
    """Header lines (each ending in CRLF) that tell the app who asked and how."""
    ip = head.client_ip.encode()
    trust = spec.trust_incoming
    lines: list[bytes] = []
    if spec.mode == "x-forwarded":
        xff = head.xff + b", " + ip if trust and head.xff else ip
        lines += (b"X-Forwarded-For: ", xff, b"\r\n")
        lines += (b"X-Forwarded-Proto: ", head.xfp if trust and head.xfp else proto, b"\r\n")
        xfh = head.xfh if trust and head.xfh else head.host_header
        if xfh:
            lines += (b"X-Forwarded-Host: ", xfh, b"\r\n")
        if trust and head.forwarded:
            lines += (b"Forwarded: ", head.forwarded, b"\r\n")
    elif spec.mode == "forwarded":
        node = b'"[' + ip + b']"' if b":" in ip else ip
        element = b"for=" + node + b";proto=" + proto
        if head.host_header:
            element += b';host="' + head.host_header + b'"'
        value = head.forwarded + b", " + element if trust and head.forwarded else element
        lines += (b"Forwarded: ", value, b"\r\n")
        if trust and head.xff:
            lines += (b"X-Forwarded-For: ", head.xff, b"\r\n")
    elif trust:  # "off": pass on what came in, add nothing
        for name, value in (
            (b"X-Forwarded-For", head.xff),
            (b"X-Forwarded-Proto", head.xfp),
            (b"X-Forwarded-Host", head.xfh),
            (b"Forwarded", head.forwarded),
        ):
            if value:
                lines += (name, b": ", value, b"\r\n")
    via = spec.via
    if via:
        lines += (b"Via: ", head.via + b", " + via if head.via else via, b"\r\n")
    elif head.via:
        lines += (b"Via: ", head.via, b"\r\n")
    return b"".join(lines)


class ForwardingCache:
    """Forwarding lines for requests that brought none of their own, per (client ip, Host)."""

    __slots__ = ("_lines", "_max", "spec")

    def __init__(self, spec: ForwardedSpec, max_entries: int = 4096) -> None:
        self.spec = spec
        self._lines: dict[tuple[str, bytes], bytes] = {}
        self._max = max_entries

    def lines(self, head: ParsedRequest) -> bytes:
        if not head.plain_forwarding:
            return forwarded_lines(self.spec, head)
        key = (head.client_ip, head.host_header)
        lines = self._lines.get(key)
        if lines is None:
            if len(self._lines) >= self._max:
                self._lines.clear()
            lines = self._lines[key] = forwarded_lines(self.spec, head)
        return lines

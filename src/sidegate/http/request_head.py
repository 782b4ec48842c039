"""The request head the request reader makes: :class:`ParsedRequest`, its request-target split
(RFC 9112 section 3.2) and its Host resolved and validated, its nominated hop-by-hop fields
dropped. Every violation raises :class:`~sidegate.http.errors.ProtocolError` (400).
"""

from __future__ import annotations

from typing import Final

from sidegate.http.errors import ProtocolError
from sidegate.http.messages import RequestHead
from sidegate.http.syntax import nominated_headers, normalize_path, parse_authority

# Host header value -> validated host name; a pod sees few distinct hosts.
_HOSTS: Final[dict[bytes, bytes]] = {}
_HOSTS_MAX: Final = 1024


class ParsedRequest(RequestHead):
    """A request head plus the forwarding headers the proxy rewrites (empty when absent)."""

    host_header: bytes = b""  # Host as sent (with port), forwarded upstream unchanged
    connection_tokens: tuple[bytes, ...] = ()
    xff: bytes = b""
    xfp: bytes = b""
    xfh: bytes = b""
    forwarded: bytes = b""
    via: bytes = b""
    # True when none of the forwarding headers above came in (the common case, cached bytes).
    plain_forwarding: bool = True
    expect_continue: bool = False  # the client waits for "100 Continue" before sending the body
    traceparent: bytes = b""  # W3C trace context as sent


def resolve_host(head: ParsedRequest) -> None:
    """The host name from Host (or the target's authority), validated; 400 when missing."""
    host_header = head.host_header
    if host_header:
        host = _HOSTS.get(host_header)
        if host is None:
            host = _valid_host(host_header)
        head.host = host
    elif head.version == b"1.1":
        raise ProtocolError(400, "missing Host header")


def split_target(head: ParsedRequest, url: bytes) -> None:
    """Split the request-target; resolve Host per RFC 9112 section 3.2."""
    if url.find(b"#") >= 0:  # RFC 9112 section 3.2: a fragment is never sent
        raise ProtocolError(400, "a fragment (#) has no place in a request-target")
    if url[:1] == b"/":
        path, _, query = url.partition(b"?")
    elif url[:7].lower() == b"http://" or url[:8].lower() == b"https://":
        rest = url[url.find(b"://") + 3 :]
        end = len(rest)  # the authority ends at the first "/" or "?" (a loop: a generator costs more)
        slash, question = rest.find(b"/"), rest.find(b"?")
        if 0 <= slash < end:
            end = slash
        if 0 <= question < end:
            end = question
        authority, path_q = rest[:end], rest[end:]
        if not authority:
            raise ProtocolError(400, "absolute-form target without an authority")
        head.host_header = authority  # the target's authority overrides Host
        path, _, query = path_q.partition(b"?")
        path = path or b"/"
        url = path + b"?" + query if query else path
    elif url == b"*" and head.method == b"OPTIONS":
        path, query = b"*", b""
    else:
        raise ProtocolError(400, "request-target must start with '/' or be an absolute URL")
    resolve_host(head)
    if path.find(b"/.") >= 0:  # dot-segments: route on the path the app will see
        path = normalize_path(path)
        url = path + b"?" + query if query else path
    head.path = path
    head.query = query
    head.target = url


def _valid_host(host_header: bytes) -> bytes:
    if host_header.find(b",") >= 0:  # never cached, so every such request comes here
        raise ProtocolError(400, "more than one Host header")
    host = parse_authority(host_header)
    if host is None:
        raise ProtocolError(400, "invalid Host header")
    if len(_HOSTS) >= _HOSTS_MAX:
        _HOSTS.clear()
    _HOSTS[host_header] = host
    return host


def drop_nominated(head: ParsedRequest, tokens: tuple[bytes, ...]) -> None:
    """Remove headers that ``Connection`` names as hop-by-hop (RFC 9110 section 7.6.1)."""
    nominated = nominated_headers(tokens)
    if nominated:
        head.headers = [(n, v) for n, v in head.headers if n.lower() not in nominated]

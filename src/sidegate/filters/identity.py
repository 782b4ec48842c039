"""What the authentication filters share: consumers by credential, and how a request is marked
as coming from one (the context fields later filters read, the headers the app receives).

Counting for ``/metrics`` happens in :mod:`sidegate.filters.counters`; a consumer's name becomes a
label only when it is configured (a name taken from a token is counted as ``_other``), so the
number of series stays bounded whatever callers send.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from sidegate.config.snapshot import ConsumerSpec, IdentitySpec
from sidegate.filters.base import RequestContext
from sidegate.http.messages import LocalResponse, RequestHead

OTHER = "_other"


@dataclass(frozen=True, slots=True)
class Caller:
    """An identified caller: names and the header lines the app gets for it."""

    consumer: str
    tenant: str
    lines: bytes


def caller(consumer: str, tenant: str, identity: IdentitySpec) -> Caller:
    """The caller with its identity header lines (values restricted to visible ASCII)."""
    lines = b""
    if identity.consumer_header and consumer:
        lines += identity.consumer_header + b": " + _safe(consumer) + b"\r\n"
    if identity.tenant_header and tenant:
        lines += identity.tenant_header + b": " + _safe(tenant) + b"\r\n"
    return Caller(consumer, tenant, lines)


def mark(ctx: RequestContext, who: Caller) -> None:
    """The request comes from ``who``: later filters, metrics and the app see it."""
    ctx.consumer = who.consumer
    ctx.tenant = who.tenant
    ctx.upstream_lines = who.lines


def by_name(consumers: Iterable[ConsumerSpec], identity: IdentitySpec) -> dict[str, Caller]:
    return {c.name: caller(c.name, c.tenant, identity) for c in consumers}


def deny(status: int, error: str, detail: str, challenge: bytes = b"") -> LocalResponse:
    """A 401/403 answer with a JSON body and, for 401, the ``WWW-Authenticate`` challenge."""
    body = b'{"error": "%s", "status": %d, "detail": "%s"}\n' % (
        error.encode(),
        status,
        detail.replace("\\", "\\\\").replace('"', '\\"').encode(),
    )
    headers = ((b"WWW-Authenticate", challenge),) if challenge else ()
    return LocalResponse(status=status, body=body, headers=headers)


def credential(request: RequestHead, header: bytes, query: bytes) -> bytes | None:
    """A credential sent in header ``header`` (lower-case; its value stripped) or, failing that, in
    query parameter ``query`` (percent-decoded); None when neither carries one."""
    if header:
        for name, value in request.headers:
            if name.lower() == header:
                return value.strip() or None
    if query and request.query:
        for part in request.query.split(b"&"):
            name, _, value = part.partition(b"=")
            if name == query and value:
                return unquote_to_bytes(value)
    return None


def _safe(text: str) -> bytes:
    """A header value from a name: printable ASCII only (a token's claim may hold anything)."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text).encode()

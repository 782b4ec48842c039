"""What the authentication filters share: consumers by credential, and how a request is marked
as coming from one (the context fields later filters read, the headers the app receives).

Counting for ``/metrics`` happens in :mod:`sidegate.filters.counters`; a consumer's name becomes a
label only when it is configured (a name taken from a token is counted as ``_other``), so the
number of series stays bounded whatever callers send.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sidegate.config.snapshot import ConsumerSpec, IdentitySpec
from sidegate.filters.base import RequestContext
from sidegate.http.messages import LocalResponse

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


def _safe(text: str) -> bytes:
    """A header value from a name: printable ASCII only (a token's claim may hold anything)."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text).encode()

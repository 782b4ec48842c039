"""TLS an upstream pool speaks to its endpoint: egress TLS origination's half in the upstream client.

Kept out of the mypyc-compiled pool and connection (a dataclass, as ``config.snapshot``'s are,
is not compiled faithfully), and looked at only when a pool has one: every inbound pool has
``tls=None`` and takes the plain path it always took.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from sidegate.errors import UpstreamFailure


@dataclass(frozen=True, slots=True)
class TlsOrigin:
    """TLS the pool speaks to its endpoint (egress TLS origination): the client ``context``
    (verification on) and ``server_name``, the name verified and sent as SNI (an IP literal is
    verified against the certificate's IP addresses, and the ssl module sends no SNI for it).
    Equal (hence one pool) only for the same context object and name."""

    context: ssl.SSLContext
    server_name: str


def tls_failure(endpoint: str, error: ssl.SSLError) -> UpstreamFailure:
    """A TLS handshake (or the peer's alert right after it) failed: never retried elsewhere,
    since another address of the name would present the same certificate."""
    if isinstance(error, ssl.SSLCertVerificationError):
        why = f"certificate verify failed: {error.verify_message}"
    else:
        why = error.reason or str(error)
        why = why.replace("_", " ").lower() if why.isupper() else why
    return UpstreamFailure("tls_failed", 502, f"TLS with {endpoint} failed: {why}")

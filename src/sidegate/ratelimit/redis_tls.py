"""TLS to Redis (``rediss://``): the client's SSL context, and failures told in words a user can act on.

The context is the stdlib's default client context (certificate and host name verified, TLS 1.2 or
later) with ``ca_file`` as its trust anchors (the system trust store when it is ""), and the client
certificate for Redis servers that require one (``tls-auth-clients yes``). :class:`~sidegate.ratelimit.
redis.RedisLimiter` makes a fresh context for every (re)connect, so certificates renewed on disk (a
Kubernetes secret rotated by cert-manager) are used from the next connection on, with no reload.

OpenSSL's reasons (``CERTIFICATE_VERIFY_FAILED``, ``TLSV13_ALERT_CERTIFICATE_REQUIRED``...) are
turned into a sentence that says which ``redis.tls`` key to look at; the log line and the reason a
request falls back with carry it.
"""

from __future__ import annotations

import ssl

from sidegate.config.snapshot import RedisTls

__all__ = ["RedisTls", "client_context", "describe_tls_error"]


def client_context(settings: RedisTls) -> ssl.SSLContext:
    """A verifying client context from ``settings``; ValueError naming the key when a file is unusable."""
    try:
        context = ssl.create_default_context(cafile=settings.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"redis.tls.ca_file {settings.ca_file!r}: {_file_problem(exc)}") from None
    if settings.cert_file:
        try:
            context.load_cert_chain(settings.cert_file, settings.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"redis.tls.cert_file {settings.cert_file!r} / key_file {settings.key_file!r}: "
                f"{_file_problem(exc)}"
            ) from None
    return context


def _file_problem(exc: OSError | ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None)
    if reason == "KEY_VALUES_MISMATCH":
        return "the key does not belong to the certificate"
    if isinstance(exc, ssl.SSLError):
        return f"not a PEM certificate or key ({reason or exc})"
    return exc.strerror or str(exc)


def describe_tls_error(exc: BaseException, settings: RedisTls) -> str | None:
    """What went wrong in a TLS handshake with Redis, naming the key to fix; None if ``exc`` is not TLS."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = (exc.verify_message or exc.reason or str(exc)).rstrip(".")
        if "mismatch" in detail.lower():
            hint = "set redis.tls.server_name to a name the certificate is for"
        elif settings.ca_file:
            hint = "redis.tls.ca_file is not the CA that signed Redis' certificate"
        else:
            hint = "the system trust store does not trust it: set redis.tls.ca_file to Redis' CA"
        return f"TLS certificate verification failed: {detail} ({hint})"
    if not isinstance(exc, ssl.SSLError):
        return None
    reason = exc.reason or ""
    if reason.endswith("CERTIFICATE_REQUIRED"):
        return "TLS: Redis requires a client certificate: set redis.tls.cert_file and key_file"
    if "ALERT" in reason:  # Redis refused what we presented: unknown CA, bad or expired certificate
        told = reason.split("ALERT_", 1)[-1].replace("_", " ").lower()
        if settings.cert_file:
            return f"TLS: Redis refused the client certificate in redis.tls.cert_file ({told})"
        return f"TLS handshake refused by Redis ({told})"
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return "TLS handshake failed: Redis does not speak TLS on this port (use redis:// for a plain port)"
    return f"TLS handshake failed: {reason or exc}"

"""A destination's ``tls:`` block compiled, and the one place its ``ssl.SSLContext`` is made.

TLS origination: the app speaks plain HTTP to the sidecar, the sidecar speaks HTTPS to the
destination (Istio's egress TLS origination, Envoy's ``UpstreamTlsContext``). Certificate
verification is always on: the chain must reach ``ca_file`` (absent: the system trust store,
as :func:`ssl.create_default_context` loads it) and the certificate must name the server
(``server_name``, else the host called; an IP literal is checked against the IP SANs and no
SNI is sent, as the ssl module does for an IP). There is no ``insecure_skip_verify``: a
partner with a self-signed or private CA is served by ``ca_file`` naming that certificate,
and a TLS connection that verifies nothing would hand the injected credentials to whoever
sits on the path.

The context is built by the ssl module alone (no certificate handling of our own), by
:func:`build_context`, which both the config checker (so a missing or broken file is an error
naming the field and the file at load, not a 502 at the first request) and the runtime
(:mod:`sidegate.egress.tls`, which rebuilds it when a mounted Secret rotates) call.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: ``min_version`` values and what the ssl module calls them.
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """A destination's ``tls:`` (see :class:`sidegate.config.egress.EgressTls`). Hashable: the
    runtime keeps one context per distinct settings, across reloads."""

    originate: bool = False  # plain http:// requests to the destination go out over TLS
    port: int = 443  # where an originated request asked for port 80 goes
    ca_file: str | None = None  # None: the system trust store
    server_name: str | None = None  # None: the host called
    client_cert_file: str | None = None
    client_key_file: str | None = None
    min_version: str = "1.2"

    def files(self) -> tuple[str, ...]:
        """The files the context is made from (what a rotation changes)."""
        names = (self.ca_file, self.client_cert_file, self.client_key_file)
        return tuple(name for name in names if name)


#: What an ``https://`` request to a destination without a ``tls:`` block gets.
DEFAULT_TLS = TlsSettings()


class TlsFileError(ValueError):
    """A file of the ``tls:`` block is missing or unusable; ``str()`` names the field and the file."""

    def __init__(self, field: str, path: str, why: str) -> None:
        super().__init__(f"{field} {path}: {why}")
        self.field = field
        self.path = path


def _readable(field: str, path: str) -> None:
    try:
        with open(path, "rb") as handle:
            start = handle.read(64 * 1024)
    except FileNotFoundError:
        raise TlsFileError(field, path, "no such file") from None
    except IsADirectoryError:
        raise TlsFileError(field, path, "is a directory, not a PEM file") from None
    except OSError as error:
        raise TlsFileError(field, path, f"cannot be read ({error.strerror or error})") from None
    if b"-----BEGIN " not in start:
        raise TlsFileError(field, path, "holds no PEM block (-----BEGIN ...); give a PEM file")


def build_context(settings: TlsSettings) -> ssl.SSLContext:
    """The client context for ``settings``: verification on, hostname checked, at least
    ``min_version``, ALPN ``http/1.1`` (the request goes out as HTTP/1.1). Raises
    :class:`TlsFileError` naming the field and the file when one is missing or does not parse."""
    for field, path in (
        ("ca_file", settings.ca_file),
        ("client_cert_file", settings.client_cert_file),
        ("client_key_file", settings.client_key_file),
    ):
        if path:
            _readable(field, path)
    try:  # with a ca_file, only that CA: a partner's private CA does not add the public ones
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
    except ssl.SSLError as error:
        why = f"holds no usable CA certificate ({error.reason or error})"
        raise TlsFileError("ca_file", settings.ca_file or "", why) from None
    context.minimum_version = TLS_VERSIONS[settings.min_version]
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    if settings.client_cert_file and settings.client_key_file:
        _load_client_pair(context, settings.client_cert_file, settings.client_key_file)
    return context


def _load_client_pair(context: ssl.SSLContext, cert: str, key: str) -> None:
    # The ssl module says only "PEM lib" for a wrong file: look first, to name the one at fault.
    if "-----BEGIN CERTIFICATE-----" not in _text(cert):
        raise TlsFileError("client_cert_file", cert, "holds no PEM certificate") from None
    if "PRIVATE KEY-----" not in _text(key):
        raise TlsFileError("client_key_file", key, "holds no PEM private key") from None
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in (error.reason or ""):
            raise TlsFileError("client_key_file", key, f"is not the key of client_cert_file {cert}") from None
        why = f"cannot be used with client_key_file {key} ({error.reason or error})"
        raise TlsFileError("client_cert_file", cert, why) from None


def _text(path: str) -> str:
    with open(path, encoding="latin-1") as handle:
        return handle.read(1024 * 1024)


def file_stamps(settings: TlsSettings) -> tuple[tuple[int, int, int, int] | None, ...]:
    """Device, inode, size and modification time of each file: what a Secret rotation changes
    (Kubernetes swaps a ``..data`` symlink, so the path's target changes inode). None: gone."""
    out: list[tuple[int, int, int, int] | None] = []
    for path in settings.files():
        try:
            info = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(out)


def compile_tls(config: Mapping[str, Any] | None) -> TlsSettings | None:
    """The checked ``tls:`` block as plain values; None when the destination has none."""
    if config is None:
        return None
    return TlsSettings(
        originate=config["originate"],
        port=config["port"],
        ca_file=config["ca_file"],
        server_name=config["server_name"],
        client_cert_file=config["client_cert_file"],
        client_key_file=config["client_key_file"],
        min_version=config["min_version"],
    )

"""Which proxy an outgoing fetch of ours (the JWKS) goes through: the environment's, as curl reads it.

Theory of operation: :func:`proxy_for` looks at the URL's scheme and host and the process
environment, once per request (a redirect to another host asks again), and answers with the proxy's
:class:`ForwardProxy` or None for a direct connection.

- ``https://`` URLs use ``https_proxy`` (or ``HTTPS_PROXY``), ``http://`` URLs ``http_proxy`` (or
  ``HTTP_PROXY``); either falls back to ``all_proxy``/``ALL_PROXY``. The lower-case name wins when
  both are set, and an empty value means no proxy. A value without a scheme is an ``http://`` proxy
  (``proxy.local:3128``); ``user:password@`` in it is sent as ``Proxy-Authorization: Basic``. Only
  ``http://`` proxies are spoken to (an https URL goes through them with ``CONNECT``).
- ``no_proxy``/``NO_PROXY`` (lower-case wins) lists hosts reached directly, separated by commas:
  ``*`` (every host), a domain (``example.com`` or ``.example.com``: the domain and every name under
  it), a name with a port (``idp.local:8443``: only that port), an IP address, or a CIDR range
  (``10.0.0.0/8``, ``fd00::/8``; an IP host only: names are not resolved to decide).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class ForwardProxy:
    """An HTTP proxy: where to connect, and the ``Proxy-Authorization`` value ("" = none)."""

    host: str
    port: int
    authorization: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def proxy_for(scheme: str, host: str, port: int, environ: Mapping[str, str]) -> ForwardProxy | None:
    """The proxy for a request to ``scheme://host:port`` under ``environ``; None to go direct.

    Raises ValueError for a proxy setting that cannot be used (not http://, no host, a bad port).
    """
    names = ("https_proxy", "HTTPS_PROXY") if scheme == "https" else ("http_proxy", "HTTP_PROXY")
    value = _first(environ, (*names, "all_proxy", "ALL_PROXY"))
    if not value or bypassed(host, port, _first(environ, ("no_proxy", "NO_PROXY"))):
        return None
    return parse_proxy(value)


def parse_proxy(value: str) -> ForwardProxy:
    """A proxy setting (``http://[user:password@]host[:port]``, the scheme optional) as a ForwardProxy."""
    text = value.strip()
    parts = urlsplit(text if "://" in text else "http://" + text)
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"proxy {_safe(parts.hostname)}: bad port") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"proxy must be an http:// URL with a host (scheme {parts.scheme!r})")
    authorization = ""
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return ForwardProxy(parts.hostname, port, authorization)


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``no_proxy`` sends a request to ``host:port`` directly (see the module's rules)."""
    name = host.strip("[]").rstrip(".").lower()
    address = _ip(name)
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        if not entry:
            continue
        if "/" in entry:  # a CIDR range
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if address is not None and address.version == network.version and address in network:
                return True
            continue
        entry_host, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        entry_host = entry_host.removeprefix("*").lstrip(".").rstrip(".")
        entry_address = _ip(entry_host)
        if entry_address is not None:
            if address == entry_address:
                return True
        elif entry_host and (name == entry_host or name.endswith("." + entry_host)):
            return True
    return False


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        if name in environ:
            return environ[name]
    return ""


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [::1]:8080 or [::1]
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:
        return entry, None  # a bare IPv6 address, or no port
    return host, int(port) if port.isdigit() else None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _safe(host: str | None) -> str:
    return repr(host or "")

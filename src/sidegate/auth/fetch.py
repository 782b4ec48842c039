"""One HTTP GET for the JWKS: through the environment's proxy, following redirects, with its lifetime.

Theory of operation: :func:`fetch` asks for a URL with HTTP/1.1, one connection per request, closed
after (the fetch is rare: every few minutes at most). For each request it asks
:func:`~sidegate.auth.proxies.proxy_for` whether a proxy is due: an ``http://`` URL is then sent to
the proxy in absolute form, an ``https://`` URL through a ``CONNECT`` tunnel with TLS to the origin
inside it (the certificate is checked against the origin's name, not the proxy's).

A 301, 302, 303, 307 or 308 answer is followed to its ``Location`` (resolved against the URL that
answered), at most ``max_redirects`` times, each hop with its own proxy decision; a redirect from
``https://`` to ``http://`` is refused (the keys would then travel unprotected). Any other status but
200 is a failure. The caller bounds the whole of it, redirects included, with one timeout.

The answer's lifetime is what its cache fields say, read as a private cache does (RFC 9111):
``Cache-Control: max-age`` (``s-maxage`` is for shared caches), else ``Expires`` minus ``Date``,
less the ``Age`` it already had and its time in flight; ``no-store``, ``no-cache`` or an invalid
value count as 0. None when the answer states nothing: the caller then uses its own refresh interval.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import SplitResult, urljoin, urlsplit

from sidegate.auth.proxies import ForwardProxy, proxy_for
from sidegate.http.messages import Headers
from sidegate.policy.cache_control import format_http_date, response_directives
from sidegate.policy.cache_rules import freshness_lifetime

if TYPE_CHECKING:  # asyncio and ssl are imported when a URL is first fetched: `sidegate validate` stays light
    import asyncio

MAX_HEAD: Final = 64 * 1024
_REDIRECTS: Final = frozenset({b"301", b"302", b"303", b"307", b"308"})


@dataclass(frozen=True)
class Fetched:
    """A 200 answer: its body and how long it stays fresh (None: it does not say)."""

    body: bytes
    lifetime: float | None


def check_url(url: str) -> SplitResult:
    """The parts of an http(s) URL fit for a request line; ValueError otherwise."""
    parts = urlsplit(url)
    plain = url.isprintable() and " " not in url  # it goes into a request line as is
    if parts.scheme not in ("http", "https") or not parts.hostname or not plain:
        raise ValueError(f"url must be http:// or https:// with a host and no spaces: {url!r}")
    try:
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        raise ValueError(f"url has a bad port: {url!r}") from None
    return parts


async def fetch(url: str, *, max_bytes: int, max_redirects: int, environ: Mapping[str, str]) -> Fetched:
    """GET ``url`` (see the module's rules); ValueError or OSError saying why it failed."""
    for _ in range(max_redirects + 1):
        parts = check_url(url)
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        proxy = proxy_for(parts.scheme, parts.hostname or "", port, environ)
        sent = time.time()
        status, headers, body = await _get(parts, port, proxy, max_bytes)
        if status == b"200":
            return Fetched(body, lifetime(headers, sent, time.time()))
        if status not in _REDIRECTS:
            raise ValueError(f"HTTP status {status.decode('ascii', 'replace')}")
        location = _field(headers, b"location")
        if not location:
            raise ValueError(f"HTTP status {status.decode('ascii')} without a Location")
        target = urljoin(url, location.decode("latin-1").strip())
        if https and urlsplit(target).scheme == "http":
            raise ValueError(f"redirect from https to http refused: {target[:200]!r}")
        url = target
    raise ValueError(f"more than {max_redirects} redirects")


def lifetime(headers: Headers, sent: float, received: float) -> float | None:
    """Seconds the answer stays fresh for a private cache, its age deducted (None: not said)."""
    directives = response_directives(headers, targeted=())
    if directives.no_store or directives.no_cache:
        return 0.0
    if directives.max_age is None and _field(headers, b"expires") is None:
        return None
    if _field(headers, b"date") is None:  # RFC 9110 6.6.1: the recipient adds one
        headers = [*headers, (b"date", format_http_date(received))]
    private = dataclasses.replace(directives, s_maxage=None)
    # The age is what the answer says it had (Age) plus its time in flight; not "now - Date", which
    # would turn a clock skew between us and the provider into an age.
    age_text = (_field(headers, b"age") or b"").strip()
    age = (min(int(age_text), 1 << 31) if age_text.isdigit() else 0) + max(0.0, received - sent)
    return max(0.0, freshness_lifetime(200, headers, private) - age)


async def _get(
    parts: SplitResult, port: int, proxy: ForwardProxy | None, max_bytes: int
) -> tuple[bytes, Headers, bytes]:
    """(status, fields, body) of one GET; the body is read for a 200 only."""
    import asyncio
    import ssl

    host = parts.hostname or ""
    https = parts.scheme == "https"
    context = ssl.create_default_context() if https else None
    authority = parts.netloc.rpartition("@")[2]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    extra = ""
    if proxy is None:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=host if https else None, limit=MAX_HEAD
        )
    else:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port, limit=MAX_HEAD)
        auth = f"Proxy-Authorization: {proxy.authorization}\r\n" if proxy.authorization else ""
        if not https:  # absolute form: the proxy makes the request
            target = f"http://{authority}{target}"
            extra = auth
    try:
        if proxy is not None and context is not None:
            tunnel = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
            writer.write(f"CONNECT {tunnel} HTTP/1.1\r\nHost: {tunnel}\r\n{auth}\r\n".encode("ascii"))
            status, _ = await _read_head(reader)
            if not status.startswith(b"2"):
                answer = status.decode("ascii", "replace")
                raise ValueError(f"proxy {proxy.address} refused CONNECT: HTTP status {answer}")
            await writer.start_tls(context, server_hostname=host)
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\n"
            f"User-Agent: sidegate\r\n{extra}Connection: close\r\n\r\n".encode("ascii")
        )
        await writer.drain()
        status, headers = await _read_head(reader)
        if status != b"200":
            return status, headers, b""
        return status, headers, await _read_body(reader, headers, max_bytes)
    finally:
        writer.close()
        with contextlib.suppress(OSError):  # ssl.SSLError included
            await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> tuple[bytes, Headers]:
    import asyncio

    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ValueError("response head too large") from None
    status_line, *lines = head[:-4].split(b"\r\n")
    fields = status_line.split(b" ", 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/1."):
        raise ValueError("not an HTTP/1.x response")
    headers: Headers = []
    for line in lines:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return fields[1], headers


def _field(headers: Headers, name: bytes) -> bytes | None:
    """The last value of field ``name`` (lower-case), None when absent."""
    found = None
    for field_name, value in headers:
        if field_name == name:
            found = value
    return found


async def _read_body(reader: asyncio.StreamReader, headers: Headers, max_bytes: int) -> bytes:
    if (_field(headers, b"transfer-encoding") or b"").lower().endswith(b"chunked"):
        return await _read_chunked(reader, max_bytes)
    length_text = _field(headers, b"content-length")
    if length_text is not None:
        length = int(length_text)
        if length > max_bytes:
            raise ValueError(f"response larger than {max_bytes} bytes")
        return await reader.readexactly(length)
    body = b""  # neither length nor chunked: the body ends when the server closes
    while len(body) <= max_bytes and (more := await reader.read(max_bytes + 1 - len(body))):
        body += more
    if len(body) > max_bytes:
        raise ValueError(f"response larger than {max_bytes} bytes")
    return body


async def _read_chunked(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    body = b""
    while True:
        size_line = await reader.readline()
        if not size_line.endswith(b"\n"):
            raise ValueError("chunked body cut short")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            return body  # trailers, if any, are not needed
        if len(body) + size > max_bytes:
            raise ValueError(f"response larger than {max_bytes} bytes")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("bad chunk framing")

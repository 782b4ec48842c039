"""Where JWT verification keys come from: a JWKS file or URL, refreshed without a restart.

Theory of operation: one :class:`JwksSource` per ``jwt`` filter config. The filter keeps the
``version()`` it built its :class:`~sidegate.policy.jwt.Verifier` from and builds a new one from
``keys()`` when the version moves (a new key set means a new Verifier, and so a fresh token cache).
Per request it calls ``maybe_refresh(now, unknown_kid)``, which is a float comparison unless a check is
due; ``now`` is any monotonic clock (``loop.time()``), the same on every call.

- A file (a mounted Secret or ConfigMap) is stat'ed at most once a second and re-read when its
  identity changed (mtime, size, inode: Kubernetes swaps a ``..data`` symlink, so the inode moves).
  That work is synchronous and small, so ``maybe_refresh`` returns None.
- A URL is fetched when ``refresh`` seconds passed, or sooner, at most every ``min_refetch`` seconds,
  when a token named a ``kid`` we do not know (the provider may have rotated). ``maybe_refresh``
  then starts the fetch as a Task and returns it, to be awaited by a caller that wants the new keys
  before it answers (or ignored); only one fetch runs at a time. A failed fetch is retried after
  ``min_refetch``.

A failure (unreadable file, HTTP error, timeout, bad JSON, a JWKS without a usable key) keeps the keys
we have and is logged: a provider's bad minute must not lock every client out.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from sidegate.policy.jwk import Jwk, parse_jwks

if TYPE_CHECKING:  # asyncio and ssl are imported when a URL is first fetched: `sidegate validate` stays light
    import asyncio

log = logging.getLogger(__name__)

FILE_CHECK_INTERVAL: Final = 1.0
_MAX_HEAD: Final = 64 * 1024
_NO_USABLE_KEY: Final = (
    'no usable signing key (each needs "use": "sig" or no "use", and an allowed "alg"; an RSA or oct key '
    'without "alg" needs exactly one allowed RS/PS or HS algorithm)'
)


class JwksSource:
    """The current verification keys of one JWKS file or URL (exactly one of the two)."""

    fetch_timeout: float = 5.0  # the whole fetch: connect, TLS, request, response
    max_bytes: int = 1 << 20

    def __init__(
        self,
        *,
        file: str | None = None,
        url: str | None = None,
        algorithms: frozenset[str] | None,
        refresh: float = 300.0,
        min_refetch: float = 10.0,
    ) -> None:
        if (file is None) == (url is None):
            raise ValueError("a JWKS source needs exactly one of file and url")
        if url is not None:
            parts = urlsplit(url)
            plain = url.isprintable() and " " not in url  # it goes into a request line as is
            if parts.scheme not in ("http", "https") or not parts.hostname or not plain:
                raise ValueError(f"JWKS url must be http:// or https:// with a host and no spaces: {url!r}")
        self._file = file
        self._url = url
        self._algorithms = algorithms
        self._refresh = refresh
        self._min_refetch = min_refetch
        self._keys: tuple[Jwk, ...] = ()
        self._fingerprint: tuple[tuple[str | None, str, bytes], ...] = ()
        self._version = 0
        self._next_check = -math.inf  # file: next stat; url: next scheduled fetch
        self._last_attempt = -math.inf
        self._file_id: tuple[int, int, int, int] | None = None
        self._fetching = False
        self._task: asyncio.Task[None] | None = None

    @property
    def where(self) -> str:
        """The file path or URL, for messages."""
        return self._file if self._file is not None else str(self._url)

    def keys(self) -> tuple[Jwk, ...]:
        """The current keys (empty before the first successful load)."""
        return self._keys

    def version(self) -> int:
        """A number that grows each time the key set changes (0: never loaded)."""
        return self._version

    def load_now(self) -> None:
        """Read the file now (blocking), e.g. at config load; raises ValueError saying what is wrong."""
        if self._file is None:
            raise ValueError("load_now() reads a JWKS file; a URL source loads through maybe_refresh()")
        try:
            self._file_id = _file_id(self._file)
            with open(self._file, "rb") as f:
                data = f.read(self.max_bytes + 1)
        except OSError as exc:
            raise ValueError(f"cannot read JWKS file {self._file}: {exc.strerror or exc}") from None
        if len(data) > self.max_bytes:
            raise ValueError(f"JWKS file {self._file} is larger than {self.max_bytes} bytes")
        self._install(self._parse(data))

    def maybe_refresh(self, now: float, unknown_kid: bool = False) -> Awaitable[None] | None:
        """Check for new keys if due; for a URL source, an awaitable of the fetch it started, else None.

        Called in a running event loop, the fetch is a Task already scheduled: awaiting it waits for the
        new keys (e.g. before answering a token with an unknown kid), dropping it is fine. Without a
        running loop the awaitable is a bare coroutine that the caller must run.
        """
        if self._file is not None:
            if now >= self._next_check:
                self._next_check = now + FILE_CHECK_INTERVAL
                self._check_file()
            return None
        if self._fetching:
            return None
        due = now >= self._next_check or (unknown_kid and now >= self._last_attempt + self._min_refetch)
        if not due:
            return None
        self._last_attempt = now
        self._next_check = now + self._min_refetch  # until a fetch succeeds
        import asyncio

        fetch = self._fetch(now)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return fetch
        self._task = loop.create_task(fetch)  # held: the loop keeps only a weak reference
        return self._task

    def _check_file(self) -> None:
        assert self._file is not None
        try:
            file_id = _file_id(self._file)
        except OSError as exc:
            if self._file_id is not None:
                log.warning("JWKS file %s: %s; keeping %d keys", self._file, exc.strerror, len(self._keys))
                self._file_id = None
            return
        if file_id == self._file_id:
            return
        try:
            self.load_now()
        except ValueError as exc:
            self._file_id = file_id  # report a bad file once, not every second
            log.warning("JWKS file %s not loaded: %s; keeping %d keys", self._file, exc, len(self._keys))

    async def _fetch(self, now: float) -> None:
        import asyncio

        self._fetching = True
        try:
            async with asyncio.timeout(self.fetch_timeout):
                body = await _http_get(str(self._url), self.max_bytes)
            self._install(self._parse(body))
            self._next_check = now + self._refresh
        except Exception as exc:  # a background refresh must never take the filter down
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            log.warning("JWKS fetch from %s failed: %s; keeping %d keys", self._url, reason, len(self._keys))
        finally:
            self._fetching = False

    def _parse(self, data: bytes) -> tuple[Jwk, ...]:
        keys = parse_jwks(data, algorithms=self._algorithms)
        if not keys:
            raise ValueError(_NO_USABLE_KEY)
        return keys

    def _install(self, keys: tuple[Jwk, ...]) -> None:
        fingerprint = tuple((key.kid, key.alg, _key_bytes(key.key)) for key in keys)
        if fingerprint == self._fingerprint:
            return
        self._keys = keys
        self._fingerprint = fingerprint
        self._version += 1
        log.info("JWKS from %s: %d keys (version %d)", self.where, len(keys), self._version)


def _file_id(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev


def _key_bytes(key: Any) -> bytes:
    if isinstance(key, bytes):
        return key
    der: bytes = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


async def _http_get(url: str, max_bytes: int) -> bytes:
    """The body of a 200 answer to GET ``url`` (HTTP/1.1, one connection, closed after); ValueError else."""
    import asyncio
    import ssl

    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    context = ssl.create_default_context() if https else None
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=host if https else None, limit=_MAX_HEAD
    )
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\n"
            "User-Agent: sidegate\r\nConnection: close\r\n\r\n".encode("ascii")
        )
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ValueError("response head too large") from None
        status_line, *lines = head[:-4].split(b"\r\n")
        fields = status_line.split(b" ", 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/1."):
            raise ValueError("not an HTTP/1.x response")
        if fields[1] != b"200":
            raise ValueError(f"HTTP status {fields[1].decode('ascii', 'replace')}")
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower().endswith(b"chunked"):
            return await _read_chunked(reader, max_bytes)
        if b"content-length" in headers:
            length = int(headers[b"content-length"])
            if length > max_bytes:
                raise ValueError(f"response larger than {max_bytes} bytes")
            return await reader.readexactly(length)
        body = b""  # neither length nor chunked: the body ends when the server closes
        while len(body) <= max_bytes and (more := await reader.read(max_bytes + 1 - len(body))):
            body += more
        if len(body) > max_bytes:
            raise ValueError(f"response larger than {max_bytes} bytes")
        return body
    finally:
        writer.close()
        with contextlib.suppress(OSError):  # ssl.SSLError included
            await writer.wait_closed()


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

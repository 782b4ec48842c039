"""Where JWT verification keys come from: a JWKS file or URL, refreshed without a restart.

Theory of operation: one :class:`JwksSource` per ``jwt`` filter config. The filter keeps the
``version()`` it built its :class:`~sidegate.policy.jwt.Verifier` from and builds a new one from
``keys()`` when the version moves (a new key set means a new Verifier, and so a fresh token cache).
Per request it calls ``maybe_refresh(now, unknown_kid)``, which is a float comparison unless a check is
due; ``now`` is any monotonic clock (``loop.time()``), the same on every call.

- A file (a mounted Secret or ConfigMap) is stat'ed at most once a second and re-read when its
  identity changed (mtime, size, inode: Kubernetes swaps a ``..data`` symlink, so the inode moves).
  That work is synchronous and small, so ``maybe_refresh`` returns None.
- A URL is fetched (:mod:`sidegate.auth.fetch`: through the environment's ``HTTPS_PROXY``/
  ``HTTP_PROXY`` unless ``NO_PROXY`` says otherwise, following up to ``max_redirects`` redirects)
  when the last answer's lifetime is over, or sooner, at most every ``min_refetch`` seconds, when a
  token named a ``kid`` we do not know (the provider may have rotated). The lifetime is what the
  answer's ``Cache-Control: max-age`` or ``Expires`` says, kept between ``refresh_min`` and
  ``refresh_max``; ``refresh`` when it says nothing. ``maybe_refresh`` then starts the fetch as a
  Task and returns it, to be awaited by a caller that wants the new keys before it answers (or
  ignored); only one fetch runs at a time. A failed fetch is retried after ``min_refetch``.

A failure (unreadable file, HTTP error, timeout, bad JSON, a JWKS without a usable key) keeps the keys
we have and is logged: a provider's bad minute must not lock every client out.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives import serialization

from sidegate.auth.fetch import check_url, fetch
from sidegate.policy.jwk import Jwk, parse_jwks

if TYPE_CHECKING:  # asyncio and ssl are imported when a URL is first fetched: `sidegate validate` stays light
    import asyncio

log = logging.getLogger(__name__)

FILE_CHECK_INTERVAL: Final = 1.0
_NO_USABLE_KEY: Final = (
    'no usable signing key (each needs "use": "sig" or no "use", and an allowed "alg"; an RSA or oct key '
    'without "alg" needs exactly one allowed RS/PS or HS algorithm)'
)


class JwksSource:
    """The current verification keys of one JWKS file or URL (exactly one of the two)."""

    fetch_timeout: float = 5.0  # the whole fetch: connect, proxy, TLS, redirects, request, response
    max_bytes: int = 1 << 20
    max_redirects: int = 5

    def __init__(
        self,
        *,
        file: str | None = None,
        url: str | None = None,
        algorithms: frozenset[str] | None,
        refresh: float = 300.0,
        refresh_min: float = 60.0,
        refresh_max: float = 3600.0,
        min_refetch: float = 10.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``environ`` holds the proxy settings (``os.environ`` when None, read at each fetch)."""
        if (file is None) == (url is None):
            raise ValueError("a JWKS source needs exactly one of file and url")
        if url is not None:
            try:
                check_url(url)
            except ValueError as exc:
                raise ValueError(f"JWKS {exc}") from None
        if not 0 <= refresh_min <= refresh_max:
            raise ValueError(f"refresh_min ({refresh_min}) must be at most refresh_max ({refresh_max})")
        self._file = file
        self._url = url
        self._algorithms = algorithms
        self._refresh = refresh
        self._refresh_min = refresh_min
        self._refresh_max = refresh_max
        self._min_refetch = min_refetch
        self._environ = environ
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
                answer = await fetch(
                    str(self._url),
                    max_bytes=self.max_bytes,
                    max_redirects=self.max_redirects,
                    environ=os.environ if self._environ is None else self._environ,
                )
            self._install(self._parse(answer.body))
            self._next_check = now + self.next_refresh(answer.lifetime)
        except Exception as exc:  # a background refresh must never take the filter down
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            log.warning("JWKS fetch from %s failed: %s; keeping %d keys", self._url, reason, len(self._keys))
        finally:
            self._fetching = False

    def next_refresh(self, lifetime: float | None) -> float:
        """Seconds until the next fetch after an answer with ``lifetime`` (None: it said nothing)."""
        if lifetime is None:
            return self._refresh
        return min(max(lifetime, self._refresh_min), self._refresh_max)

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

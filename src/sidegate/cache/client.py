"""The app's side of the shared cache: read, write and purge what Sidegate serves, with no network.

The app opens the cache directory Sidegate uses (the shared volume) and works on the same LMDB
environment: what :meth:`SharedCache.put` stores, the next request through Sidegate is answered
with, and what Sidegate stored, :meth:`SharedCache.get` returns. Each call is its own
transaction, so both sides see each other's changes at once. Nothing here imports Sidegate's
server side; the client needs only ``lmdb``.

    from sidegate.cache.client import SharedCache

    with SharedCache("/var/cache/sidegate") as cache:
        cache.put("http://api.local/items/7", 200, {"Content-Type": "application/json"}, body,
                  ttl=60, tags=["item-7"])
        hit = cache.get("http://api.local/items/7")
        cache.purge_tag("item-7")

URLs are absolute, as Sidegate keys them: `http://` + the Host the clients send (port included)
+ path and query (docs/cache-layout.md, "Keys").
Each process opens its own SharedCache: one inherited through fork() is reopened on first use,
unless another thread was inside a cache call at the moment of the fork (then it says so).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from sidegate.cache.entry import MUST_REVALIDATE, NO_CACHE, Entry
from sidegate.cache.keys import normalize_url
from sidegate.cache.store import Store, StoreStats
from sidegate.http.messages import Headers
from sidegate.policy.cache_rules import freshness_lifetime, initial_age, response_directives, vary_names

__all__ = ["DEFAULT_MAX_SIZE", "CachedResponse", "SharedCache", "normalize_url"]

DEFAULT_MAX_SIZE: Final = 256 << 20  # when Sidegate has not recorded its limit yet


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A stored response as the app sees it (header names as stored, values decoded Latin-1)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    age: float  # seconds, RFC 9111 4.2.3
    fresh: bool  # servable without revalidation
    tags: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        return next((value for field, value in self.headers if field.lower() == lname), None)


class SharedCache:
    """The shared cache in ``directory``, seen from the app.

    ``partition`` must match the partition of the Sidegate routes that serve these URLs (""
    unless the configuration names one). ``max_size`` bounds what the app's writes leave in
    the store; None follows the limit Sidegate recorded (256 MiB if it has not run yet).
    Per-partition quotas are always Sidegate's. Raises StoreError when the directory cannot
    be used (the message says why and the fix).
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, partition: str = "", max_size: int | None = None
    ) -> None:
        self.partition = partition
        self._store = Store(directory, max_size=max_size or DEFAULT_MAX_SIZE, publish=False)
        try:
            recorded = self._store.recorded_limits()
            self._store.set_limits(max_size or recorded.max_size or DEFAULT_MAX_SIZE, recorded.quotas)
        except BaseException:
            self._store.close()
            raise

    def get(
        self, url: str, headers: Mapping[str, str] | None = None, *, allow_stale: bool = False
    ) -> CachedResponse | None:
        """The response stored for ``url`` and these request ``headers`` (which select the
        variant when the response had Vary); None when there is none, or it is stale (or must
        always be revalidated) and ``allow_stale`` is false."""
        now = time.time()
        entry = self._store.lookup(self.partition, normalize_url(url), _to_bytes(headers), now)
        if entry is None:
            return None
        fresh = entry.fresh(now)
        if not fresh and not allow_stale:
            return None
        fields = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in entry.headers]
        return CachedResponse(entry.status, fields, entry.body, entry.age(now), fresh, entry.tags)

    def put(
        self,
        url: str,
        status: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes,
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        request_headers: Mapping[str, str] | None = None,
    ) -> bool:
        """Store a response for ``url``; Sidegate serves it from the next request on.

        Freshness comes from the response headers (Sidegate-Cache-Control, CDN-Cache-Control,
        Cache-Control, Expires, as Sidegate reads them) unless ``ttl`` (seconds, age starting at
        0) is given. With Vary, ``request_headers`` are the request's values of those names.
        Returns False, storing nothing, when the headers say no-store or private, Vary is
        ``*``, the response could never be used (no freshness and no validator), or the store
        refuses it (URL too long, bigger than the cache). ValueError for a malformed status,
        header, tag or URL.
        """
        fields = _to_bytes(headers)
        directives = response_directives(fields)
        vary = vary_names(fields)
        if directives.no_store or directives.private or vary is None:
            return False
        now = time.time()
        if ttl is None:
            freshness = freshness_lifetime(status, fields, directives)
            age = initial_age(fields, now, now)
        else:
            freshness, age = float(ttl), 0.0
        validated = any(name.lower() in (b"etag", b"last-modified") for name, _ in fields)
        if freshness <= 0 and not validated:
            return False
        revalidate = (
            directives.must_revalidate or directives.proxy_revalidate or directives.s_maxage is not None
        )
        entry = Entry.build(
            status,
            fields,
            body,
            response_time=now,
            initial_age=age,
            freshness=freshness,
            stale_while_revalidate=float(directives.stale_while_revalidate or 0),
            stale_if_error=float(directives.stale_if_error or 0),
            flags=(MUST_REVALIDATE if revalidate else 0) | (NO_CACHE if directives.no_cache else 0),
            tags=tags,
        )
        return self._store.store(self.partition, normalize_url(url), vary, _to_bytes(request_headers), entry)

    def invalidate(self, url: str) -> int:
        """Delete every variant of ``url``; how many entries went."""
        return self._store.invalidate(self.partition, normalize_url(url))

    def purge_prefix(self, prefix: str) -> int:
        """Delete the entries whose URL starts with ``prefix`` (absolute, e.g. ``http://api.local/users/``)."""
        return self._store.purge_prefix(self.partition, normalize_url(prefix))

    def purge_tag(self, tag: str) -> int:
        """Delete the entries stored with ``tag`` (by the app's put or Sidegate's tag headers)."""
        return self._store.purge_tag(self.partition, tag)

    def purge_all(self) -> int:
        """Delete every entry of this partition."""
        return self._store.purge_all(self.partition)

    def stats(self) -> StoreStats:
        return self._store.stats()

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> SharedCache:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def _to_bytes(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> Headers:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in items]

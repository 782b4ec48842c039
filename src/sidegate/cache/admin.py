"""Operations on the shared store for the admin API and the metrics: purge and sizes.

Both open the store through the same per-process registry as the cache filter, so a purge from
the admin API is seen by every worker and by the app at once (it is one LMDB environment).
"""

from __future__ import annotations

from typing import Any

from sidegate.cache.keys import normalize_url
from sidegate.cache.store import StoreError, open_store
from sidegate.config.snapshot import CacheSettings


class PurgeError(ValueError):
    """A purge request that names nothing to purge, or a store that cannot be opened."""


def purge(
    settings: CacheSettings,
    *,
    url: str | None = None,
    prefix: str | None = None,
    tag: str | None = None,
    everything: bool = False,
    partition: str = "",
) -> int:
    """Remove entries: every variant of ``url``, URLs starting with ``prefix``, entries tagged
    ``tag``, or all of them; returns how many entries went. Exactly one of the four is given."""
    given = [name for name, value in (("url", url), ("prefix", prefix), ("tag", tag)) if value]
    if everything:
        given.append("all")
    if len(given) != 1:
        raise PurgeError("give exactly one of url=, prefix=, tag= or all=1 (and optionally partition=)")
    try:
        store = open_store(settings.dir, max_size=settings.max_size, quotas=settings.quotas)
    except StoreError as exc:
        raise PurgeError(str(exc)) from None
    if url:
        return store.invalidate(partition, normalize_url(url))
    if prefix:
        return store.purge_prefix(partition, normalize_url(prefix) if "://" in prefix else prefix.encode())
    if tag:
        return store.purge_tag(partition, tag)
    return store.purge_all(partition or None)


def store_stats(settings: CacheSettings) -> dict[str, Any] | None:
    """Entries, bytes, evictions and bytes per partition of the shared store (None if unusable)."""
    try:
        stats = open_store(settings.dir, max_size=settings.max_size, quotas=settings.quotas).stats()
    except StoreError:
        return None
    return {
        "entries": stats.entries,
        "bytes": stats.bytes,
        "evictions": stats.evictions,
        "partitions": dict(stats.partitions),
    }

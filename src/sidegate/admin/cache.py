"""The admin API's cache endpoints, ``POST /cache/purge`` and ``GET /cache/stats``, and the
store operations behind them (also read by the metrics: :func:`store_stats`).

    curl -X POST 'localhost:9901/cache/purge?url=http://api.example.com/items/1'
    curl -X POST 'localhost:9901/cache/purge?prefix=http://api.example.com/items/'
    curl -X POST 'localhost:9901/cache/purge?tag=product-42&partition=tenant-a'

Answers ``{"purged": N}``; a request that names nothing (or two things) is a 400 saying what to give.

Both operations open the store through the same per-process registry as the cache filter, so a
purge from the admin API is seen by every worker and by the app at once (it is one LMDB
environment). The store is imported inside them: LMDB is loaded only when the cache is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sidegate.admin.app import AdminRequest, AdminResponse, Handler, error_response
from sidegate.config.snapshot import CacheSettings


def cache_routes(settings: Callable[[], CacheSettings]) -> dict[tuple[str, str], Handler]:
    """Admin routes over the store that ``settings()`` (the running config's) names."""

    def purge_handler(request: AdminRequest) -> AdminResponse:
        def arg(name: str) -> str | None:
            values = request.query.get(name)
            return values[0] if values else None

        try:
            purged = purge(
                settings(),
                url=arg("url"),
                prefix=arg("prefix"),
                tag=arg("tag"),
                everything=arg("all") in ("1", "true", "yes"),
                partition=arg("partition") or "",
            )
        except PurgeError as exc:
            return error_response(400, str(exc))
        return AdminResponse.json(200, {"purged": purged})

    def stats_handler(_: AdminRequest) -> AdminResponse:
        current = settings()
        stats = store_stats(current)
        if stats is None:
            return error_response(503, f"the cache store in {current.dir} cannot be opened; see the log")
        return AdminResponse.json(200, {"dir": current.dir, "max_size": current.max_size, **stats})

    return {("POST", "/cache/purge"): purge_handler, ("GET", "/cache/stats"): stats_handler}


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
    from sidegate.cache.keys import normalize_url
    from sidegate.cache.store import StoreError, open_store

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
    from sidegate.cache.store import StoreError, open_store

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

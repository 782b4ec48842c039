"""The admin API's cache endpoints: ``POST /cache/purge`` and ``GET /cache/stats``.

    curl -X POST 'localhost:9901/cache/purge?url=http://api.example.com/items/1'
    curl -X POST 'localhost:9901/cache/purge?prefix=http://api.example.com/items/'
    curl -X POST 'localhost:9901/cache/purge?tag=product-42&partition=tenant-a'

Answers ``{"purged": N}``; a request that names nothing (or two things) is a 400 saying what to give.
"""

from __future__ import annotations

from collections.abc import Callable

from sidegate.admin.app import AdminRequest, AdminResponse, Handler, error_response
from sidegate.config.snapshot import CacheSettings


def cache_routes(settings: Callable[[], CacheSettings]) -> dict[tuple[str, str], Handler]:
    """Admin routes over the store that ``settings()`` (the running config's) names."""

    def purge_handler(request: AdminRequest) -> AdminResponse:
        from sidegate.cache.admin import PurgeError, purge  # LMDB: loaded only when the cache is used

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
        from sidegate.cache.admin import store_stats

        current = settings()
        stats = store_stats(current)
        if stats is None:
            return error_response(503, f"the cache store in {current.dir} cannot be opened; see the log")
        return AdminResponse.json(200, {"dir": current.dir, "max_size": current.max_size, **stats})

    return {("POST", "/cache/purge"): purge_handler, ("GET", "/cache/stats"): stats_handler}

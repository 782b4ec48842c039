"""Cache outcomes counted per route, for ``/metrics``: one object per process, kept across reloads.

The cache filter counts here (it may not import the metrics layer); the runtime adds these numbers
to the process's metrics snapshot, so workers' counts are summed like every other counter.
"""

from __future__ import annotations

from collections import Counter, defaultdict

#: What a request's cache lookup came to; also the X-Cache header values.
RESULTS = ("HIT", "MISS", "STALE", "REVALIDATED", "BYPASS")


class CacheCounters:
    def __init__(self) -> None:
        self.results: dict[str, defaultdict[str, int]] = {}  # route -> result -> requests
        self.stored_bytes = 0  # bytes written to the store (keys and values)
        self.stored = 0  # entries written
        self.store_errors: Counter[str] = Counter()  # reason -> count (each degraded to no caching)

    def route(self, name: str) -> defaultdict[str, int]:
        """The outcome counts of route ``name`` (one mapping per name, kept across reloads)."""
        counts = self.results.get(name)
        if counts is None:
            counts = self.results[name] = defaultdict(int)
        return counts

    def snapshot(self) -> dict[str, object]:
        return {
            "results": [
                [route, result, n]
                for route, counts in sorted(self.results.items())
                for result, n in sorted(counts.items())
            ],
            "stored_bytes": self.stored_bytes,
            "stored": self.stored,
            "store_errors": dict(self.store_errors),
        }


COUNTERS = CacheCounters()

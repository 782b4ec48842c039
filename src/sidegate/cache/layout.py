"""The named databases of a cache directory's LMDB environment (docs/cache-layout.md).

Both the environment (:mod:`sidegate.cache.env`, which opens them) and the writer
(:mod:`sidegate.cache.writer`, which keeps them consistent) speak of these six databases; they
meet here, so that neither has to import the other to name them.
"""

from __future__ import annotations

from typing import Final, Protocol

import lmdb

DB_NAMES: Final = (b"entries", b"variants", b"lru", b"access", b"tags", b"meta")
DUPSORT: Final = frozenset((b"lru", b"tags"))  # several values per key


class Databases(Protocol):
    """An LMDB environment as a writer sees it: the handles of its named databases
    (:class:`~sidegate.cache.env.Env` is one)."""

    entries: lmdb._Database
    variants: lmdb._Database
    lru: lmdb._Database
    access: lmdb._Database
    tags: lmdb._Database
    meta: lmdb._Database

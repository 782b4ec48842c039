"""Every change to the store, inside one LMDB write transaction: entries, indexes, totals, eviction.

A :class:`Writer` keeps the named DBs consistent with each other (docs/cache-layout.md lists
the invariants a writer in another language must keep too):

- ``entries``  entry key -> value (sidegate.cache.entry layout)
- ``variants`` primary key -> Vary names; present while the URL has at least one entry
- ``access``   entry key -> u64le last access (ms) + u64le size, where size = len(key) + len(value)
- ``lru``      partition + 0x1F + u64be(ms) -> entry key (dupsort), one record per entry
- ``tags``     partition + 0x1F + tag -> entry key (dupsort), one record per tag of an entry
- ``meta``     byte and entry totals (all, and per partition) and counters, u64le

Eviction reads the oldest LRU records: of one partition for its quota, and of every partition
merged by access time for the global limit. It frees down to 90 % of the limit, so one store()
evicts a batch rather than one entry per write.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

import lmdb

from sidegate.cache.entry import value_tags
from sidegate.cache.keys import VARIANT_SEP, key_partition, lru_key, lru_time, tag_key

ACCESS: Final = struct.Struct("<QQ")  # access DB value: last access (ms), size (bytes)
U64: Final = struct.Struct("<Q")  # every number in the meta DB
EVICT_TO: Final = 0.9  # of the limit that was exceeded

# meta DB keys (per partition: the key followed by the partition name)
BYTES: Final = b"bytes"
ENTRIES: Final = b"entries"
PARTITION_BYTES: Final = b"bytes:"
PARTITION_ENTRIES: Final = b"entries:"
EVICTIONS: Final = b"evictions"
CORRUPT: Final = b"corrupt"
FORMAT: Final = b"format"
MAX_SIZE: Final = b"max_size"
QUOTA: Final = b"quota:"
FORMAT_VERSION: Final = 1

if TYPE_CHECKING:
    from sidegate.cache.layout import Databases

    Txn = lmdb.Transaction[memoryview]  # buffers=True: values are views valid until the next write


class Writer:
    """Changes made in ``txn`` (a write transaction opened with ``buffers=True``); call
    :meth:`finish` before committing so the totals in ``meta`` follow."""

    def __init__(self, env: Databases, txn: Txn) -> None:
        self.env = env
        self.txn = txn
        self._deltas: dict[bytes, int] = {}
        self.removed = 0  # entries deleted (any reason)

    # counters ------------------------------------------------------------------------------

    def number(self, key: bytes) -> int:
        """A meta counter as it will be after this transaction."""
        return read_number(self.txn, self.env, key) + self._deltas.get(key, 0)

    def add(self, key: bytes, delta: int) -> None:
        self._deltas[key] = self._deltas.get(key, 0) + delta

    def _account(self, prefix: bytes, size: int, count: int) -> None:
        name = prefix[:-1]
        self.add(BYTES, size)
        self.add(ENTRIES, count)
        self.add(PARTITION_BYTES + name, size)
        self.add(PARTITION_ENTRIES + name, count)

    def finish(self) -> None:
        for key, delta in self._deltas.items():
            if delta:
                value = max(0, read_number(self.txn, self.env, key) + delta)
                self.txn.put(key, U64.pack(value), db=self.env.meta)
        self._deltas.clear()

    # entries -------------------------------------------------------------------------------

    def put_entry(
        self, primary: bytes, key: bytes, *, vary: bytes, value: bytes, tags: tuple[str, ...], ms: int
    ) -> None:
        """Store one variant; the other variants go when the URL's Vary names changed."""
        txn, env = self.txn, self.env
        old = txn.get(primary, db=env.variants)
        if old is None or bytes(old) != vary:
            if old is not None:
                self.delete_prefix(primary + VARIANT_SEP, keep_variants=True)
            txn.put(primary, vary, db=env.variants)
        else:
            self.delete_entry(key)
            self.delete_prefix(key + VARIANT_SEP, keep_variants=True)  # its pieces (cache.pieces)
        prefix = key_partition(key)
        size = len(key) + len(value)
        txn.put(key, value, db=env.entries)
        txn.put(key, ACCESS.pack(ms, size), db=env.access)
        txn.put(lru_key(prefix, ms), key, db=env.lru)
        for tag in tags:
            txn.put(tag_key(prefix, tag), key, db=env.tags)
        self._account(prefix, size, 1)

    def delete_entry(self, key: bytes, *, drop_variants: bool = False) -> bool:
        """Delete one entry and its index records; with ``drop_variants``, also the URL's
        variants record when this was its last variant. False when there was no such entry."""
        txn, env = self.txn, self.env
        raw = txn.get(key, db=env.entries)
        if raw is None:
            return False
        tags = value_tags(raw)
        size = len(key) + len(raw)  # the memoryview is invalid after the first write below
        prefix = key_partition(key)
        access = txn.get(key, db=env.access)
        if access is not None:
            ms, size = ACCESS.unpack(access)
            txn.delete(lru_key(prefix, ms), key, db=env.lru)
            txn.delete(key, db=env.access)
        for tag in tags:
            txn.delete(tag_key(prefix, tag), key, db=env.tags)
        txn.delete(key, db=env.entries)
        self._account(prefix, -size, -1)
        self.removed += 1
        end = key.find(VARIANT_SEP, len(prefix))
        if drop_variants and end > 0 and not self._has_prefix(env.entries, key[: end + 1]):
            txn.delete(key[:end], db=env.variants)
        return True

    def delete_prefix(self, prefix: bytes, *, keep_variants: bool = False) -> int:
        """Delete every entry whose key starts with ``prefix`` (and, unless ``keep_variants``,
        every variants record whose primary key does); the number of entries deleted."""
        keys = self._keys(self.env.entries, prefix)
        for key in keys:
            self.delete_entry(key)
        if not keep_variants:
            for primary in self._keys(self.env.variants, prefix):
                self.txn.delete(primary, db=self.env.variants)
        return len(keys)

    def delete_tag(self, prefix: bytes, tag: str) -> int:
        """Delete the entries of partition ``prefix`` tagged ``tag``."""
        tkey = tag_key(prefix, tag)
        with self.txn.cursor(self.env.tags) as cur:
            keys = [bytes(v) for v in cur.iternext_dup()] if cur.set_key(tkey) else []
        count = sum(self.delete_entry(key, drop_variants=True) for key in keys)
        self.txn.delete(tkey, db=self.env.tags)  # records of entries that were already gone
        return count

    def drop_everything(self) -> int:
        """Empty the store (counters such as evictions stay); the number of entries it held."""
        env, txn = self.env, self.txn
        count = self.number(ENTRIES)
        for db in (env.entries, env.variants, env.lru, env.access, env.tags):
            txn.drop(db, delete=False)
        for prefix in (PARTITION_BYTES, PARTITION_ENTRIES):
            for name in numbers(txn, env, prefix):
                txn.delete(prefix + name.encode(), db=env.meta)
        self._deltas.clear()
        for key in (BYTES, ENTRIES):
            txn.put(key, U64.pack(0), db=env.meta)
        return count

    def drop_partition(self, prefix: bytes) -> int:
        """Delete every entry of partition ``prefix``; the number deleted."""
        count = self.delete_prefix(prefix)
        env, txn = self.env, self.txn
        # Index records that a writer left without their entry go too, and the totals restart.
        for db in (env.lru, env.tags, env.access):
            for key in self._keys(db, prefix):
                txn.delete(key, db=db)
        name = prefix[:-1]
        for total, part in ((BYTES, PARTITION_BYTES + name), (ENTRIES, PARTITION_ENTRIES + name)):
            left = self.number(part)
            self.add(total, -left)
            self.add(part, -left)
        return count

    def _keys(self, db: lmdb._Database, prefix: bytes) -> list[bytes]:
        out: list[bytes] = []
        with self.txn.cursor(db) as cur:
            if cur.set_range(prefix):
                for key in cur.iternext(keys=True, values=False):
                    if key[: len(prefix)] != prefix:
                        break
                    out.append(bytes(key))
        return out

    def _has_prefix(self, db: lmdb._Database, prefix: bytes) -> bool:
        with self.txn.cursor(db) as cur:
            return cur.set_range(prefix) and cur.key()[: len(prefix)] == prefix

    # eviction ------------------------------------------------------------------------------

    def evict_partition(self, prefix: bytes, quota: int, keep: bytes) -> None:
        """Evict the least recently used entries of one partition when it is over ``quota``."""
        used = self.number(PARTITION_BYTES + prefix[:-1])
        if used > quota:
            need = used - int(quota * EVICT_TO)
            self._evict_oldest(self._oldest(prefix, need, keep), need)

    def evict_all(self, max_size: int, keep: bytes) -> None:
        """Evict the least recently used entries of all partitions when over ``max_size``."""
        if self.number(BYTES) > max_size:
            self.evict_to(int(max_size * EVICT_TO), keep)

    def evict_to(self, target: int, keep: bytes) -> None:
        """Evict the least recently used entries of all partitions down to ``target`` bytes."""
        need = self.number(BYTES) - target
        if need <= 0:
            return
        candidates: list[tuple[int, bytes, int]] = []
        for prefix in self._partitions():
            candidates += self._oldest(prefix, need, keep)
        candidates.sort()
        self._evict_oldest(candidates, need)

    def _evict_oldest(self, candidates: list[tuple[int, bytes, int]], need: int) -> None:
        freed = 0
        for _, key, size in candidates:
            if freed >= need:
                break
            if self.delete_entry(key, drop_variants=True):
                freed += size
                self.add(EVICTIONS, 1)

    def _oldest(self, prefix: bytes, need: int, keep: bytes) -> list[tuple[int, bytes, int]]:
        """(access ms, entry key, size) of the oldest entries of a partition, ``need`` bytes' worth."""
        out: list[tuple[int, bytes, int]] = []
        total = 0
        env, txn = self.env, self.txn
        with txn.cursor(env.lru) as cur:
            if not cur.set_range(prefix):
                return out
            for lkey, value in cur.iternext():
                if lkey[: len(prefix)] != prefix:
                    break
                key = bytes(value)
                if key == keep:
                    continue
                access = txn.get(key, db=env.access)
                size = ACCESS.unpack(access)[1] if access is not None else 0
                out.append((lru_time(bytes(lkey)), key, size))
                total += size
                if total >= need:
                    break
        return out

    def _partitions(self) -> list[bytes]:
        """The ``partition + 0x1F`` prefixes present in the LRU index (a hop per partition)."""
        out: list[bytes] = []
        with self.txn.cursor(self.env.lru) as cur:
            found = cur.first()
            while found:
                prefix = key_partition(bytes(cur.key()))
                out.append(prefix)
                # Every key of this partition starts with prefix; 0x20 sorts right after 0x1F.
                found = cur.set_range(prefix[:-1] + b"\x20")
        return out


def apply_touches(env: Databases, txn: Txn, touches: dict[bytes, int]) -> None:
    """Move each entry read since the last flush to its new place in the LRU index."""
    for key, ms in touches.items():
        access = txn.get(key, db=env.access)
        if access is None:
            continue  # deleted since
        old, size = ACCESS.unpack(access)
        if ms <= old:
            continue
        prefix = key_partition(key)
        txn.delete(lru_key(prefix, old), key, db=env.lru)
        txn.put(lru_key(prefix, ms), key, db=env.lru)
        txn.put(key, ACCESS.pack(ms, size), db=env.access)


def read_number(
    txn: lmdb.Transaction[memoryview] | lmdb.Transaction[bytes], env: Databases, key: bytes
) -> int:
    value = txn.get(key, db=env.meta)
    return int.from_bytes(value, "little") if value is not None and len(value) == 8 else 0


def numbers(txn: Txn, env: Databases, prefix: bytes) -> dict[str, int]:
    """The meta counters named ``prefix + partition``, by partition."""
    out: dict[str, int] = {}
    with txn.cursor(env.meta) as cur:
        if cur.set_range(prefix):
            for key, value in cur.iternext():
                if key[: len(prefix)] != prefix:
                    break
                out[bytes(key[len(prefix) :]).decode()] = int.from_bytes(value, "little")
    return out

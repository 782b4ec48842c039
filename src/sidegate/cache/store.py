"""The shared response store: RFC 9111 entries in an LMDB environment in the cache directory.

Sidegate's workers and the app (through :mod:`sidegate.cache.client`) open the same directory;
every call runs in its own LMDB transaction, so each side sees the other's writes at once.
Reads never wait: LMDB readers work on a snapshot while one writer (over all processes) writes.

A lookup is one read transaction (variants record, entry, access record) and one decode. The
only write a hit causes is the LRU touch, at most once a second per entry, queued to a
background thread (see sidegate.cache.env). Writes evict least recently used entries: of the
partition when over its quota, of everything when over ``max_size``.

Errors: :class:`StoreError` for a directory or environment that cannot be used (the message
says what and the fix). A stored value that is not a valid entry is deleted and is a miss.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

import lmdb

from sidegate.cache.entry import HEADER_SIZE, CorruptEntry, Entry
from sidegate.cache.env import Env, StoreError, acquire, failure, map_size_for, release
from sidegate.cache.keys import (
    MAX_KEY,
    VARIANT_SEP,
    decode_vary,
    encode_vary,
    partition_prefix,
    secondary_key,
    tag_key,
)
from sidegate.cache.pieces import stored_pieces, write_piece
from sidegate.cache.writer import (
    BYTES,
    CORRUPT,
    ENTRIES,
    EVICTIONS,
    FORMAT,
    FORMAT_VERSION,
    MAX_SIZE,
    PARTITION_BYTES,
    PARTITION_ENTRIES,
    QUOTA,
    U64,
    Writer,
    apply_touches,
    numbers,
    read_number,
)
from sidegate.http.messages import Headers

__all__ = ["Store", "StoreError", "StoreLimits", "StoreStats", "open_store"]

TOUCH_EVERY_MS: Final = 1000  # an entry's place in the LRU index moves at most once a second
# Decoded entries kept per process for the hit path, checked against the stored bytes on each use.
_MEMO_KEYS: Final = 4096
_MEMO_BYTES: Final = 8 * 1024 * 1024
_MEMO_ENTRY_BYTES: Final = 64 * 1024
_T = TypeVar("_T")
_decode = Entry.decode
_access_ms = U64.unpack_from


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Totals over all processes using the directory (kept in the ``meta`` DB)."""

    entries: int
    bytes: int  # sum of len(key) + len(value) over entries
    evictions: int
    corrupt: int  # invalid values found (and deleted) by lookups
    max_size: int  # this Store's limit
    map_size: int  # the LMDB map (address space; on tmpfs only used pages take memory)
    partitions: dict[str, int] = field(default_factory=dict)  # bytes per partition
    partition_entries: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """The limits Sidegate recorded in the store (what the app-side client follows by default)."""

    max_size: int | None
    quotas: dict[str, int]


class Store:
    """The shared store in ``directory`` (created if missing).

    ``max_size`` and ``quotas`` (bytes per partition) bound what this process's writes leave
    in the store; with ``publish`` (Sidegate's own stores) they are also recorded in ``meta``
    for the app-side client. Raises StoreError when the directory cannot be used.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_size: int,
        quotas: Mapping[str, int] = {},
        publish: bool = True,
    ) -> None:
        self.directory = os.fspath(directory)
        self.max_size = 0
        self.quotas: dict[str, int] = {}
        self._check_limits(max_size, quotas)
        self._publish_limits = publish
        self._prefixes: dict[str, bytes] = {}
        self._decoded: dict[bytes, tuple[bytes, Entry]] = {}  # entry key -> (value header, entry)
        self._decoded_bytes = 0
        self._touched: dict[bytes, int] = {}  # entry key -> when this process last moved it (ms)
        # Read under the generation in _generation (see sidegate.cache.env): reusable without LMDB.
        self._generation = b""
        self._current: dict[bytes, Entry] = {}  # entry key -> entry
        self._vary_seen: dict[bytes, tuple[bytes, ...]] = {}  # primary key -> its Vary names
        self._refs = 1
        self._lock = threading.Lock()
        self._env: Env | None = acquire(directory, map_size_for(max_size))
        try:
            self._check_format()
            self.set_limits(max_size, quotas)
        except BaseException:
            self.close()
            raise

    # limits --------------------------------------------------------------------------------

    def set_limits(self, max_size: int, quotas: Mapping[str, int] = {}) -> None:
        """Change the limits (a configuration reload); published when this Store publishes."""
        self._check_limits(max_size, quotas)
        self.max_size, self.quotas = max_size, dict(quotas)
        env = self._live_env()
        env.grow(map_size_for(max_size))
        if self._publish_limits:
            self._write(env, self._record_limits)

    def recorded_limits(self) -> StoreLimits:
        """The limits Sidegate recorded (max_size None when no Sidegate store published any)."""
        env = self._live_env()
        with env.transaction(write=False) as txn:
            size = read_number(txn, env, MAX_SIZE) or None
            quotas = {name: value for name, value in numbers(txn, env, QUOTA).items() if value > 0}
        return StoreLimits(size, quotas)

    @staticmethod
    def _check_limits(max_size: int, quotas: Mapping[str, int]) -> None:
        if max_size <= 0 or any(quota <= 0 for quota in quotas.values()):
            raise ValueError("cache max_size and quotas must be positive byte counts")
        for partition in quotas:
            partition_prefix(partition)

    def _record_limits(self, writer: Writer) -> None:
        txn, meta = writer.txn, writer.env.meta
        txn.put(MAX_SIZE, U64.pack(self.max_size), db=meta)
        for name in numbers(txn, writer.env, QUOTA):
            txn.delete(QUOTA + name.encode(), db=meta)
        for name, quota in self.quotas.items():
            txn.put(QUOTA + name.encode(), U64.pack(quota), db=meta)

    def _check_format(self) -> None:
        env = self._live_env()
        with env.transaction(write=True) as txn:
            found = txn.get(FORMAT, db=env.meta)
            version = None if found is None else int.from_bytes(found, "little")
            if version is None:
                txn.put(FORMAT, U64.pack(FORMAT_VERSION), db=env.meta)
        if version is not None and version != FORMAT_VERSION:
            raise StoreError(
                f"cache directory {self.directory} holds cache format {version}, "
                f"this Sidegate reads format {FORMAT_VERSION}; delete data.mdb and lock.mdb there "
                "(the cache starts empty) or run matching Sidegate versions"
            )

    # reads ---------------------------------------------------------------------------------

    def lookup(self, partition: str, url: bytes, request_headers: Headers, now: float) -> Entry | None:
        """The variant stored for this request (Vary-aware), fresh or not; None on a miss.

        ``url`` is the effective request URL (:func:`sidegate.cache.keys.normalize_url`); ``now``
        (unix time) dates the LRU touch. A corrupt value is deleted and counted, and is a miss.
        """
        env = self._env
        if env is None or env.stale:
            env = self._live_env()
        prefix = self._prefixes.get(partition) or self._prefix(partition)
        primary = prefix + url
        if len(primary) >= MAX_KEY:
            return None
        ms = int(now * 1000)
        generation = env.generation()
        if generation == self._generation:  # no write since these were read: no transaction
            vary = self._vary_seen.get(primary)
            if vary is not None:
                key = (
                    primary + VARIANT_SEP + secondary_key(vary, request_headers)
                    if vary
                    else primary + VARIANT_SEP
                )
                current = self._current.get(key)
                if current is not None and ms - self._touched.get(key, 0) < TOUCH_EVERY_MS:
                    return current
        else:
            self._generation = generation
            self._vary_seen.clear()
            self._current.clear()
        # env.transaction() inlined: this is the cache-hit path, a generator context costs ~1 us.
        next(env.begin_count)
        try:
            try:
                txn = env.lmdb.begin(buffers=True)
            except lmdb.MapResizedError:
                env.adopt_map_size()
                txn = env.lmdb.begin(buffers=True)
            try:
                names = txn.get(primary, None, env.variants)
                if names is None:
                    return None
                key = primary + VARIANT_SEP
                vary = decode_vary(bytes(names)) if names else ()
                if vary:
                    key += secondary_key(vary, request_headers)
                    if len(key) > MAX_KEY:
                        return None
                raw = txn.get(key, None, env.entries)
                if raw is None:
                    return None
                # A value already decoded here is reused while its 64-byte header (times,
                # sizes) is unchanged: a rewrite always has a new response_time.
                stamp = bytes(raw[:HEADER_SIZE])
                memo = self._decoded.get(key)
                if memo is not None and memo[0] == stamp:
                    entry = memo[1]
                else:
                    try:
                        entry = _decode(raw)
                    except CorruptEntry:
                        entry = None
                    else:
                        self._remember(key, stamp, entry)
                if entry is not None:
                    if key in self._decoded:  # small enough to keep: later hits skip the transaction
                        if len(self._current) >= _MEMO_KEYS:
                            self._current.clear()
                            self._vary_seen.clear()
                        self._current[key] = entry
                        self._vary_seen[primary] = vary
                    touched = self._touched
                    if ms - touched.get(key, 0) >= TOUCH_EVERY_MS:  # else moved less than 1 s ago
                        if len(touched) >= _MEMO_KEYS:
                            touched.clear()
                        touched[key] = ms
                        access = txn.get(key, None, env.access)
                        stale_touch = access is not None and ms - _access_ms(access)[0] >= TOUCH_EVERY_MS
                        if stale_touch and key not in env.pending:
                            env.touch(key, ms)
            finally:
                txn.abort()
        except lmdb.Error as exc:
            raise self._failure(exc) from None
        finally:
            next(env.end_count)
        if entry is None:
            self._drop_corrupt(env, key)
        return entry

    def _remember(self, key: bytes, stamp: bytes, entry: Entry) -> None:
        """Keep a decoded entry for the next hit on it (small entries only, bounded in count and bytes)."""
        size = len(entry.head) + len(entry.body)
        if size > _MEMO_ENTRY_BYTES:
            return
        decoded = self._decoded
        old = decoded.pop(key, None)
        if old is not None:
            self._decoded_bytes -= len(old[1].head) + len(old[1].body)
        while decoded and (len(decoded) >= _MEMO_KEYS or self._decoded_bytes + size > _MEMO_BYTES):
            dropped_key, (_, dropped) = decoded.popitem()  # not LRU: a bound on memory only
            self._current.pop(dropped_key, None)
            self._decoded_bytes -= len(dropped.head) + len(dropped.body)
        decoded[key] = (stamp, entry)
        self._decoded_bytes += size

    def stats(self) -> StoreStats:
        """Entry and byte totals, evictions and corrupt values, over all processes."""
        env = self._live_env()
        with env.transaction(write=False) as txn:
            return StoreStats(
                entries=read_number(txn, env, ENTRIES),
                bytes=read_number(txn, env, BYTES),
                evictions=read_number(txn, env, EVICTIONS),
                corrupt=read_number(txn, env, CORRUPT),
                max_size=self.max_size,
                map_size=env.lmdb.info()["map_size"],
                partitions={k: v for k, v in numbers(txn, env, PARTITION_BYTES).items() if v},
                partition_entries={k: v for k, v in numbers(txn, env, PARTITION_ENTRIES).items() if v},
            )

    # writes --------------------------------------------------------------------------------

    def store(
        self, partition: str, url: bytes, vary: tuple[bytes, ...], request_headers: Headers, entry: Entry
    ) -> bool:
        """Store ``entry`` as the variant of ``url`` selected by ``vary`` and the request's headers.

        False when it cannot be stored: a key longer than LMDB's 511 bytes (URL, Vary values or
        a tag), an entry bigger than ``max_size`` or the partition's quota, or no room after
        evicting. Other variants of the URL are dropped when its Vary names changed. The entry's
        ``response_time`` is its first access time in the LRU index.
        """
        env = self._live_env()
        prefix = self._prefix(partition)
        names = tuple(name.lower() for name in vary)
        key = prefix + url + VARIANT_SEP + secondary_key(names, request_headers)
        if len(key) > MAX_KEY or any(len(tag_key(prefix, tag)) > MAX_KEY for tag in entry.tags):
            return False
        value = entry.encode()
        size = len(key) + len(value)
        quota = self.quotas.get(partition)
        if size > self.max_size or (quota is not None and size > quota):
            return False
        primary, vary_value, ms = prefix + url, encode_vary(names), int(entry.response_time * 1000)

        def put(writer: Writer) -> None:
            writer.put_entry(primary, key, vary=vary_value, value=value, tags=entry.tags, ms=ms)
            if quota is not None:
                writer.evict_partition(prefix, quota, keep=key)
            writer.evict_all(self.max_size, keep=key)

        try:
            self._write(env, put, full_ok=True)
        except lmdb.MapFullError:
            # The map fills before max_size only when readers pin old pages or another process
            # mapped less: clear dead readers' slots, evict half, try once more.
            env.lmdb.reader_check()
            try:
                self._write(env, lambda w: w.evict_to(w.number(BYTES) // 2, keep=key), full_ok=True)
                self._write(env, put, full_ok=True)
            except lmdb.MapFullError:
                return False
        return True

    def store_piece(
        self, partition: str, url: bytes, vary: tuple[bytes, ...], request_headers: Headers, piece: Entry
    ) -> Entry | None:
        """Store a 206 ``piece`` of the variant ``store`` would choose, joined with the pieces
        stored for it (sidegate.cache.pieces): the joined piece, or the whole 200 once they
        cover the representation; None when nothing was stored."""
        primary = self._prefix(partition) + url
        quota, max_size = self.quotas.get(partition), self.max_size

        def put(writer: Writer) -> Entry | None:
            return write_piece(writer, primary, vary, request_headers, piece, quota=quota, max_size=max_size)

        try:
            return self._write(self._live_env(), put, full_ok=True)
        except lmdb.MapFullError:
            return None

    def pieces(self, partition: str, url: bytes, request_headers: Headers, now: float) -> list[Entry]:
        """The 206 pieces stored for this request's variant of ``url``, by first byte (``now``
        dates their LRU touch, as for ``lookup``)."""
        primary = self._prefix(partition) + url
        return stored_pieces(self._live_env(), primary, request_headers, int(now * 1000))

    def invalidate(self, partition: str, url: bytes) -> int:
        """Delete every variant of ``url``; the number of entries deleted."""
        primary = self._prefix(partition) + url

        def drop(writer: Writer) -> int:
            count = writer.delete_prefix(primary + VARIANT_SEP, keep_variants=True)
            writer.txn.delete(primary, db=writer.env.variants)
            return count

        return self._write(self._live_env(), drop) if len(primary) < MAX_KEY else 0

    def purge_prefix(self, partition: str, prefix: bytes) -> int:
        """Delete the entries whose URL starts with ``prefix`` (e.g. ``b"http://api.local/users/"``)."""
        start = self._prefix(partition) + prefix
        return self._write(self._live_env(), lambda w: w.delete_prefix(start)) if len(start) <= MAX_KEY else 0

    def purge_tag(self, partition: str, tag: str) -> int:
        """Delete the entries of ``partition`` stored with ``tag``."""
        prefix = self._prefix(partition)
        if len(tag_key(prefix, tag)) > MAX_KEY:
            return 0
        return self._write(self._live_env(), lambda w: w.delete_tag(prefix, tag))

    def purge_all(self, partition: str | None = None) -> int:
        """Delete every entry (of ``partition`` when given); the number deleted."""
        env = self._live_env()
        if partition is None:
            return self._write(env, Writer.drop_everything)
        prefix = self._prefix(partition)
        return self._write(env, lambda w: w.drop_partition(prefix))

    # plumbing ------------------------------------------------------------------------------

    def _write(self, env: Env, change: Callable[[Writer], _T], *, full_ok: bool = False) -> _T:
        """Run ``change`` in a write transaction (with the queued LRU touches) and commit.
        MDB_MAP_FULL stays an lmdb.MapFullError with ``full_ok`` (the caller evicts), else
        it is a StoreError like any other LMDB failure."""
        try:
            with env.transaction(write=True) as txn:
                writer = Writer(env, txn)
                apply_touches(env, txn, env.take_touches())
                result = change(writer)
                writer.finish()
            env.bump()  # after the commit: a reader that saw the old bytes reads again
        except lmdb.MapFullError as exc:
            if full_ok:
                raise
            raise self._failure(exc) from None
        except lmdb.Error as exc:
            raise self._failure(exc) from None
        return result

    def _drop_corrupt(self, env: Env, key: bytes) -> None:
        def drop(writer: Writer) -> None:
            if writer.delete_entry(key, drop_variants=True):
                writer.add(CORRUPT, 1)

        with contextlib.suppress(lmdb.MapFullError):  # deleting needs a page; a later lookup retries
            self._write(env, drop, full_ok=True)

    def _prefix(self, partition: str) -> bytes:
        prefix = self._prefixes.get(partition)
        if prefix is None:
            prefix = self._prefixes[partition] = partition_prefix(partition)
        return prefix

    def _live_env(self) -> Env:
        """The open environment; reopened in a forked child (LMDB handles do not survive fork)."""
        env = self._env
        if env is not None and not env.stale:
            return env
        with self._lock:
            if self._env is None:
                raise StoreError(f"cache store {self.directory} is closed")
            if self._env.stale:
                self._env = acquire(self.directory, map_size_for(self.max_size))
            return self._env

    def _failure(self, exc: lmdb.Error) -> StoreError:
        return failure(self.directory, exc)

    def acquire(self) -> Store:
        """One more holder of this Store (see :func:`open_store`); each holder calls close()."""
        with self._lock:
            if self._env is None:
                raise StoreError(f"cache store {self.directory} is closed")
            self._refs += 1
        return self

    def close(self) -> None:
        """Release this holder; the last close flushes queued LRU touches and closes the
        environment when no other Store of the process uses it. Idempotent per holder count."""
        with self._lock:
            self._refs -= 1
            env, done = self._env, self._refs <= 0
            if done:
                self._env = None
        if done and env is not None:
            release(env)


_stores: dict[tuple[str, int], Store] = {}
_stores_lock = threading.Lock()


def open_store(directory: str | os.PathLike[str], *, max_size: int, quotas: Mapping[str, int] = {}) -> Store:
    """The process's shared Store for ``directory``, with these limits (a reload may change them).

    Every caller holds one reference and calls ``close()`` when done with it.
    """
    key = (os.path.realpath(directory), os.getpid())
    with _stores_lock:
        store = _stores.get(key)
        if store is not None and store._env is not None:
            store.acquire()
            if (max_size, dict(quotas)) != (store.max_size, store.quotas):
                store.set_limits(max_size, quotas)
            return store
        store = Store(directory, max_size=max_size, quotas=quotas)
        _stores[key] = store
        return store

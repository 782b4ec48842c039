"""Rate-limit state shared by every worker process of one pod: a fixed-size table in a memory-mapped file.

The supervisor makes the table with :meth:`SharedTable.create` (under ``/dev/shm`` it is plain shared
memory); each worker opens the same file with :meth:`SharedTable.attach` (or, with no process in charge,
every process calls :meth:`SharedTable.open_or_create` and the first one makes it). A decision locks one
bucket of the table, reads the key's TAT, runs :meth:`sidegate.policy.gcra.Gcra.decide` and writes the
new TAT, so however many processes decide for one key, they hold one limit between them. Memory is
bounded by the size chosen at creation: a key that finds its bucket full takes over the slot whose TAT
is oldest (an expired TAT is worth nothing; an old one is the state closest to idle).

File layout (native byte order, i.e. little-endian on x86-64 and arm64; an app in another language may
read it)::

    offset 0    8 bytes   magic b"SGRLIM\\x00\\x01" (the last byte is the format version)
    offset 8    u64       number of slots (a multiple of 8)
    offset 16   u64       slots per bucket (8)
    offset 24   40 bytes  reserved, zero
    offset 64   slots     16 bytes each: u64 key hash (0 = never used), f64 TAT (seconds, callers' clock)

Bucket ``b`` is slots ``8b .. 8b+7`` (128 bytes at ``64 + 128 * b``, two cache lines); a key hashes
(BLAKE2b, 64 bits, the same in every process) to the bucket ``hash % buckets`` and lives in the first
slot of that bucket holding its hash, or the first never-used one. Slots are never emptied, so a scan
stops at the first never-used slot. Two keys with the same 64-bit hash would share a limit (odds 2**-64
for a pair of keys).

Atomicity: every read-modify-write holds a POSIX byte-range lock (``fcntl.lockf``) on its bucket's 128
bytes: buckets are decided in parallel, one bucket in one process at a time. The lock is released by
the kernel if its holder dies. POSIX locks belong to a process, not a thread: a table serves one thread
per process (a worker's event loop), and closing another descriptor of the same file in that process
would drop the locks it holds.

Clock: every process must pass the same clock: ``time.monotonic()`` is one clock for the whole host
(and all containers of a pod), where ``time.time()`` may step.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import sys
from types import TracebackType
from typing import SupportsIndex

from sidegate.policy.gcra import Decision, Gcra

__all__ = ["SharedTable"]

MAGIC = b"SGRLIM\x00\x01"
HEADER_BYTES = 64
SLOT_BYTES = 16
BUCKET_SLOTS = 8
BUCKET_BYTES = BUCKET_SLOTS * SLOT_BYTES
_HASH_MEMO = 4096  # keys whose hash each process remembers (a client sends many requests in a row)
_lockf = fcntl.lockf
_LOCK_EX = fcntl.LOCK_EX
_LOCK_UN = fcntl.LOCK_UN


def key_hash(key: bytes) -> int:
    """The 64-bit hash of ``key`` stored in the table, never 0 (0 marks a never-used slot)."""
    # Not hash(): str/bytes hashes are salted per process, and every process must agree.
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") or 1


class SharedTable:
    """GCRA state of many keys, bounded in memory, shared by the processes that map one file."""

    __slots__ = ("_buckets", "_d", "_fd", "_mm", "_q", "_where", "locking", "path", "slots")

    def __init__(self, path: str, fd: int, mm: mmap.mmap, slots: int) -> None:
        """Use :meth:`create` or :meth:`attach`."""
        self.path = path
        self.slots = slots
        # False when this process is the table's only user (one Sidegate process, no workers): the
        # two lock system calls per decision are then skipped.
        self.locking = True
        self._fd = fd
        self._mm = mm
        self._buckets = slots // BUCKET_SLOTS
        view = memoryview(mm)
        # One view as u64 and one as f64 over the whole file: a slot is word 2i (hash) and 2i+1 (TAT)
        # after the 8-word header. Indexing a cast memoryview costs no struct parsing.
        self._q = view.cast("Q")
        self._d = view.cast("d")
        view.release()
        self._where: dict[bytes, _Where] = {}  # key -> its hash and bucket

    @classmethod
    def create(cls, path: str, slots: int = 65536) -> SharedTable:
        """Make a new, empty table of at least ``slots`` slots (rounded up to whole buckets) at ``path``.

        An existing file is replaced atomically (a new file renamed over it): processes still attached
        to the old one keep working on it, undisturbed, until they attach again.
        """
        os.replace(_new_file(path, slots), path)
        return cls.attach(path)

    @classmethod
    def open_or_create(cls, path: str, slots: int = 65536) -> SharedTable:
        """Attach to the table at ``path``, or create it (``slots`` slots) when there is none.

        Safe when many processes start at once: the file appears whole or not at all (made aside, then
        hard-linked into place only if nothing is there yet), so all of them end up on one table. An
        existing table keeps its own size; a file at ``path`` that is not a table is a ValueError.
        """
        while True:
            try:
                return cls.attach(path)
            except FileNotFoundError:
                pass
            tmp = _new_file(path, slots)
            linked = False
            try:
                os.link(tmp, path)  # fails if another process got there first: then use its table
                linked = True
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
            if linked:
                return cls.attach(path)

    @classmethod
    def attach(cls, path: str) -> SharedTable:
        """Open the table another process made at ``path`` (ValueError if the file is not one)."""
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            header = os.pread(fd, HEADER_BYTES, 0)
            problem = _check_header(header, size)
            if problem:
                raise ValueError(f"{path} is not a Sidegate rate-limit table: {problem}")
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, mm, _u64(header, 8))

    def gcra(self, key: bytes, gcra: Gcra, now: float, cost: int = 1) -> Decision:
        """Decide a request of ``cost`` for ``key`` under ``gcra`` at ``now``, atomically for all processes.

        ``key`` names one limit's counter (e.g. route, limit and client): two limits given the same key
        share one TAT. ``now`` is the shared clock (``time.monotonic()``).
        """
        where = self._where.get(key)
        if where is None:
            where = self._locate(key)
        h = where.h
        offset = where.offset
        word = where.word
        fd = self._fd
        locking = self.locking
        if locking:
            _lockf(fd, _LOCK_EX, BUCKET_BYTES, offset)
        try:
            q = self._q
            d = self._d
            owned = q[where.hash_at] == h
            if owned:  # the common case: the key owns the first slot of its bucket
                slot = word
                tat = d[where.tat_at]
            else:
                slot = self._probe(word, h)
                owned = q[slot] == h
                tat = d[slot + 1] if owned else 0.0
            decision, new_tat = gcra.decide(tat, now, cost)
            if new_tat != tat:  # a refused request changes nothing, not even which key owns the slot
                if not owned:
                    q[slot] = h
                if slot == word:
                    d[where.tat_at] = new_tat
                else:
                    d[slot + 1] = new_tat
        finally:
            if locking:
                _lockf(fd, _LOCK_UN, BUCKET_BYTES, offset)
        return decision

    def _locate(self, key: bytes) -> _Where:
        """The key's hash and bucket, remembered for the next time."""
        h = key_hash(key)
        where = _Where(h, HEADER_BYTES + (h % self._buckets) * BUCKET_BYTES)
        if len(self._where) >= _HASH_MEMO:
            self._where.clear()
        self._where[key] = where
        return where

    def _probe(self, word: int, h: int) -> int:
        """The slot (word index) for hash ``h`` in the bucket at ``word``, under the bucket's lock: its
        own, else the first never-used one, else (bucket full) the one whose TAT is oldest."""
        q = self._q
        d = self._d
        oldest = word
        oldest_tat = d[word + 1]
        for i in range(word, word + 2 * BUCKET_SLOTS, 2):
            stored = q[i]
            if stored == h or not stored:  # never used: the key is in no later slot either
                return i
            tat = d[i + 1]
            if tat < oldest_tat:
                oldest_tat = tat
                oldest = i
        return oldest  # an expired TAT is worth nothing, and the oldest is the closest to expired

    def close(self) -> None:
        """Unmap the table and close its file (the file stays for the other processes). Idempotent."""
        if self._fd < 0:
            return
        self._q.release()
        self._d.release()
        self._mm.close()
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> SharedTable:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SharedTable({self.path!r}, slots={self.slots})"


class _Where:
    """Where a key lives: its hash, its bucket's byte offset and first word index.

    The indexes of the first slot's hash and TAT words are also kept as ready Python ints: the
    memoryviews take objects, and compiled code would box a new int at every use of a native one.
    """

    def __init__(self, h: int, offset: int) -> None:
        self.h = h
        self.offset = offset
        self.word = offset >> 3
        self.hash_at: SupportsIndex = self.word
        self.tat_at: SupportsIndex = self.word + 1


def _new_file(path: str, slots: int) -> str:
    """A complete, empty table of at least ``slots`` slots beside ``path``; returns its temporary name."""
    if slots < 1:
        raise ValueError(f"a rate-limit table needs at least one slot, not {slots}")
    slots = -(-slots // BUCKET_SLOTS) * BUCKET_SLOTS
    header = bytearray(HEADER_BYTES)
    header[0:8] = MAGIC
    header[8:16] = slots.to_bytes(8, sys.byteorder)
    header[16:24] = BUCKET_SLOTS.to_bytes(8, sys.byteorder)
    tmp = f"{path}.{os.getpid()}.{id(header):x}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, HEADER_BYTES + slots * SLOT_BYTES)  # zero-filled: every slot never used
        os.pwrite(fd, bytes(header), 0)
    except BaseException:
        os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    return tmp


def _u64(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 8], sys.byteorder)  # native, like the cast views


def _check_header(header: bytes, size: int) -> str:
    """Why ``header`` (of a file of ``size`` bytes) is not a table's, or "" when it is."""
    if len(header) < HEADER_BYTES or header[0:6] != MAGIC[0:6]:
        return "no table header"
    if header[0:8] != MAGIC:
        return f"format version {header[7]}, this Sidegate reads version {MAGIC[7]}"
    slots = _u64(header, 8)
    if _u64(header, 16) != BUCKET_SLOTS or slots == 0 or slots % BUCKET_SLOTS:
        return f"bad geometry ({slots} slots, {_u64(header, 16)} per bucket)"
    if size != HEADER_BYTES + slots * SLOT_BYTES:
        return f"size {size} bytes, {HEADER_BYTES + slots * SLOT_BYTES} expected for {slots} slots"
    return ""

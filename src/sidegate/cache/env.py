"""The LMDB environment of a cache directory: opened once per process, reopened after fork.

LMDB forbids opening one environment twice in a process (the second open shares the lock file
but not its fcntl locks, and closing either drops the other's; py-lmdb refuses it) and forbids
using an environment inherited through ``fork()``. So every
:class:`~sidegate.cache.store.Store` of a directory shares one :class:`Env` from the registry
here, keyed by the directory's real path and counted by reference.

After a fork the child's Stores reopen on their next call. The inherited handle must be closed
first (py-lmdb refuses a second open while it is open), and closing it is safe only when none
of its transactions was in flight at fork time: aborting one would release a reader slot of
the parent in the shared lock table, letting a writer reuse pages the parent is still reading.
Transactions are therefore counted (two C-level counters, no lock), no read transaction is kept
for reuse (``max_spare_txns=0``), and a child forked while another thread was inside a
transaction cannot reopen: it gets a StoreError saying to open the cache after forking.

The LRU touch of a cache hit is queued here and written by a small background thread, so a
lookup never waits for the write lock (another process may hold it for a large write).

The ``generation`` file beside the LMDB files holds 8 bytes that every writer replaces with new
random bytes after each committed change to the entries (:meth:`Env.bump`). A process that keeps
decoded entries between lookups (:class:`~sidegate.cache.store.Store` does, for the hit path)
may reuse them while those 8 bytes are the ones it saw when it read them: a hit then costs no
LMDB transaction at all. Random bytes rather than a counter, so two writers racing after their
commits can never leave the value one a reader already saw.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import lmdb

from sidegate.cache.layout import DB_NAMES, DUPSORT
from sidegate.cache.writer import apply_touches
from sidegate.errors import SidegateError

MiB: Final = 1 << 20
MIN_MAP_SIZE: Final = 256 * MiB  # sparse: only pages in use take memory on the tmpfs volume
MAX_READERS: Final = 1024  # read transactions at once over all processes (one per thread in use)
MAX_DBS: Final = 8
FILES: Final = ("data.mdb", "lock.mdb")
GENERATION_FILE: Final = "generation"
GENERATION_SIZE: Final = 8

# py-lmdb 3 can also create LMDB 1.0 files, which 0.9 readers (most other languages) cannot
# open: pin the 0.9 format where the binding offers the choice.
_PIN_ENGINE: Final = int(lmdb.__version__.split(".")[0]) >= 3


class StoreError(SidegateError):
    """The cache directory or environment cannot be used; the message says what and the fix."""


def failure(directory: str, exc: lmdb.Error) -> StoreError:
    """The StoreError for an LMDB failure during an operation: what happened and the fix."""
    if isinstance(exc, lmdb.MapFullError):
        return StoreError(
            f"cache directory {directory}: the LMDB map is full ({exc}); a process holding a read "
            "transaction open pins old pages: restart it, or give the cache a larger max_size"
        )
    return StoreError(
        f"cache directory {directory}: LMDB failed ({exc}); if this repeats, the file is damaged: "
        "stop Sidegate and the app, delete data.mdb and lock.mdb there (the cache starts empty)"
    )


def map_size_for(max_size: int) -> int:
    """A map comfortably larger than the data (copy-on-write needs room for old pages while
    readers hold them), rounded up to 64 MiB so processes with similar limits agree."""
    want = max(2 * max_size, MIN_MAP_SIZE)
    step = 64 * MiB
    return -(-want // step) * step


class Env:
    """One open environment: the py-lmdb handle (``lmdb``), its named databases (the
    :class:`~sidegate.cache.layout.Databases` a writer changes) and the queue of LRU touches."""

    def __init__(self, path: str, map_size: int) -> None:
        self.path = path
        self.pid = os.getpid()
        self.stale = False  # set in a forked child: this handle belongs to the parent
        self.busy_at_fork = False  # and a transaction of it was open when the process forked
        self.refs = 0
        # Transactions begun and ended; in flight = begun - ended (each next() is atomic).
        self.begin_count = itertools.count()
        self.end_count = itertools.count()
        self.lmdb = _open(path, map_size)
        try:
            with self.transaction(write=True) as txn:
                dbs = {name: self.lmdb.open_db(name, txn, dupsort=name in DUPSORT) for name in DB_NAMES}
        except lmdb.Error as exc:
            self.lmdb.close()
            raise StoreError(
                f"cache directory {path}: the LMDB file holds databases Sidegate cannot use ({exc}); "
                "delete data.mdb and lock.mdb there (the cache starts empty)"
            ) from None
        self.entries = dbs[b"entries"]
        self.variants = dbs[b"variants"]
        self.lru = dbs[b"lru"]
        self.access = dbs[b"access"]
        self.tags = dbs[b"tags"]
        self.meta = dbs[b"meta"]
        self.lmdb.reader_check()  # slots of readers that died (killed workers) hold old pages
        self.generation_map = _open_generation(path)
        self.pending: dict[bytes, int] = {}  # entry key -> access time (ms) to write
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def generation(self) -> bytes:
        """The 8 bytes writers change after each committed change to the entries."""
        return self.generation_map[:GENERATION_SIZE]

    def bump(self) -> None:
        """After a committed change: new bytes, so that every process's kept entries are re-read."""
        self.generation_map[:GENERATION_SIZE] = os.urandom(GENERATION_SIZE)

    def grow(self, map_size: int) -> None:
        """Use a bigger map when a later Store of this process wants one (best effort: LMDB
        refuses while a transaction is open, and the old map still works)."""
        if map_size > self.lmdb.info()["map_size"]:
            with contextlib.suppress(lmdb.Error):
                self.lmdb.set_mapsize(map_size)

    def adopt_map_size(self) -> None:
        """Another process grew the map (MDB_MAP_RESIZED): map the size recorded in the file."""
        with contextlib.suppress(lmdb.Error):
            self.lmdb.set_mapsize(0)

    # LRU touches -------------------------------------------------------------------------

    def touch(self, key: bytes, ms: int) -> None:
        """Queue "entry ``key`` was read at ``ms``"; the flusher thread writes it soon after."""
        with self._lock:
            first = not self.pending
            self.pending[key] = ms
            if first and self._thread is None:
                self._start_flusher()
        if first:
            self._wake.set()

    def take_touches(self) -> dict[bytes, int]:
        """The queued touches, which the caller writes (a store() takes them into its txn)."""
        with self._lock:
            pending, self.pending = self.pending, {}
        return pending

    def _start_flusher(self) -> None:
        self._thread = threading.Thread(target=self._flush_loop, name="sidegate-cache-lru", daemon=True)
        self._thread.start()

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            self.flush_touches()

    def flush_touches(self) -> None:
        """Write the queued touches in one transaction. They are taken once the write transaction
        is open: a store() that began first takes them into its own (and evicts knowing them);
        one that begins after waits for this commit. Taken before, they would be in neither."""
        if not self.pending:
            return
        # A failed flush only loses recency hints; the entries themselves are intact.
        with contextlib.suppress(lmdb.Error), self.transaction(write=True) as txn:
            pending = self.take_touches()
            if pending:
                apply_touches(self, txn, pending)

    @contextlib.contextmanager
    def transaction(self, *, write: bool) -> Iterator[lmdb.Transaction[memoryview]]:
        """A transaction (values as buffers, valid until the next write or the end), committed
        when the block ends normally and aborted when it raises."""
        next(self.begin_count)
        try:
            try:
                txn = self.lmdb.begin(write=write, buffers=True)
            except lmdb.MapResizedError:
                self.adopt_map_size()
                txn = self.lmdb.begin(write=write, buffers=True)
            try:
                yield txn
            except BaseException:
                txn.abort()
                raise
            txn.commit()
        finally:
            next(self.end_count)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush_touches()
        self.lmdb.close()
        self.generation_map.close()


_registry: dict[str, Env] = {}
_registry_lock = threading.Lock()
_inherited: dict[str, Env] = {}  # in a forked child: the parent's handles, by path


def acquire(directory: str | os.PathLike[str], map_size: int) -> Env:
    """The process's environment for ``directory`` (created and opened on first use)."""
    path = prepare_directory(directory)
    with _registry_lock:
        env = _registry.get(path)
        if env is None:
            _close_inherited(path)
            env = Env(path, map_size)
            _registry[path] = env
        else:
            env.grow(map_size)
        env.refs += 1
        return env


def _close_inherited(path: str) -> None:
    inherited = _inherited.get(path)
    if inherited is None:
        return
    if inherited.busy_at_fork:
        raise StoreError(
            f"cache directory {path}: this process was forked while another thread was using the "
            "cache, so the handle it inherited cannot be closed safely; open the cache (Store or "
            "SharedCache) in each process after it is forked"
        )
    inherited.lmdb.close()  # no transaction of it was in flight: nothing of the parent's is touched
    del _inherited[path]


def release(env: Env) -> None:
    """Drop one reference; the last one closes the environment (in the process that opened it)."""
    with _registry_lock:
        env.refs -= 1
        if env.refs > 0 or env.pid != os.getpid():
            return
        if _registry.get(env.path) is env:
            del _registry[env.path]
    env.close()


def _open_generation(path: str) -> mmap.mmap:
    """The directory's generation file, created with random bytes if missing, mapped shared."""
    name = os.path.join(path, GENERATION_FILE)
    fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size < GENERATION_SIZE:
            os.pwrite(fd, os.urandom(GENERATION_SIZE), 0)
        return mmap.mmap(fd, GENERATION_SIZE)
    except OSError as exc:
        raise StoreError(f"cache directory {path}: cannot use {name} ({exc}); check the volume") from None
    finally:
        os.close(fd)


def prepare_directory(directory: str | os.PathLike[str]) -> str:
    """Create ``directory`` if missing and check it is a writable directory; its real path."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StoreError(
            f"cache directory {path} exists but is not a directory; point the cache at a directory "
            "(CACHE_DIR, the shared volume)"
        ) from None
    except OSError as exc:
        raise StoreError(
            f"cache directory {path} cannot be created ({exc.strerror}); create it, or mount the "
            "shared cache volume there, writable by this user"
        ) from None
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise StoreError(f"cache directory {path} is not a directory; point the cache at a directory")
    # LMDB writes the lock file even to read, so the directory (and both files) must be writable.
    for name in ("", *FILES):
        target = os.path.join(real, name)
        if (name == "" or os.path.exists(target)) and not os.access(target, os.R_OK | os.W_OK):
            raise StoreError(
                f"cache directory {path} is not writable by uid {os.geteuid()} ({target}); make the "
                "volume read-write for this user (fsGroup / chown), or set another cache directory"
            )
    return real


def _open(path: str, map_size: int) -> lmdb.Environment:
    # lib_version exists from py-lmdb 3 on; older bindings only write the 0.9 format anyway.
    engine: dict[str, Any] = {"lib_version": 0} if _PIN_ENGINE else {}
    try:
        return lmdb.open(
            path,
            map_size=map_size,
            subdir=True,
            sync=False,  # a cache on a tmpfs volume: durability is not worth an fsync per write
            metasync=False,
            readahead=False,  # random reads of a memory-mapped file: readahead only evicts pages
            lock=True,
            max_dbs=MAX_DBS,
            max_readers=MAX_READERS,
            max_spare_txns=0,  # a kept read slot would be freed by a forked child (see above)
            mode=0o660,  # the app may run as another user of the volume's group (fsGroup)
            **engine,
        )
    except lmdb.Error as exc:
        raise StoreError(
            f"cache directory {path} cannot be opened as an LMDB environment ({exc}); if data.mdb "
            "there is damaged or not a Sidegate cache, delete data.mdb and lock.mdb (the cache "
            "starts empty), else check the volume is writable and not full"
        ) from None


def _before_fork() -> None:
    for env in _registry.values():  # both counters move by one: the difference is what is open
        env.busy_at_fork = next(env.begin_count) != next(env.end_count)


def _after_fork_in_child() -> None:
    """Set the parent's environments aside: each Store of the child reopens on its next call."""
    global _registry_lock
    _registry_lock = threading.Lock()  # another thread may have held it at fork time
    for path, env in _registry.items():
        env.stale = True
        _inherited[path] = env
    _registry.clear()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)

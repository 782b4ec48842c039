"""The shared store on a real LMDB environment in tmp_path: what is found, what is evicted, what
is purged, and what happens with keys, values and directories that cannot be used."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidegate.cache.entry import Entry
from sidegate.cache.env import acquire, release
from sidegate.cache.store import Store, StoreError, open_store

URL = b"http://api.local/items/7"
GZIP = [(b"Accept-Encoding", b"gzip")]
BR = [(b"accept-encoding", b"br")]


def entry(
    body: bytes = b"x" * 100, t: float = 1000.0, tags: tuple[str, ...] = (), freshness: float = 60
) -> Entry:
    return Entry.build(
        200,
        [(b"Content-Type", b"text/plain")],
        body,
        response_time=t,
        initial_age=0.0,
        freshness=freshness,
        tags=tags,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "cache", max_size=1 << 20)
    yield s
    s.close()


def body_of(found: Entry | None) -> bytes | None:
    return None if found is None else found.body


def test_stored_entry_is_found_with_every_field(store: Store) -> None:
    stored = entry(b"payload", tags=("a", "b"))
    assert store.store("", URL, (), [], stored)
    assert store.lookup("", URL, [(b"Accept", b"*/*")], 1001.0) == stored
    assert store.lookup("", URL + b"?other", [], 1001.0) is None
    assert store.lookup("other-partition", URL, [], 1001.0) is None
    stats = store.stats()
    assert (stats.entries, stats.partitions) == (1, {"": stats.bytes})


def test_storing_again_replaces_and_counts_once(store: Store) -> None:
    assert store.store("", URL, (), [], entry(b"old"))
    assert store.store("", URL, (), [], entry(b"new"))
    assert body_of(store.lookup("", URL, [], 1000.0)) == b"new"
    assert store.stats().entries == 1


def test_two_variants_of_a_url_coexist(store: Store) -> None:
    vary = (b"Accept-Encoding",)
    assert store.store("", URL, vary, GZIP, entry(b"gzipped"))
    assert store.store("", URL, vary, BR, entry(b"brotli"))
    assert body_of(store.lookup("", URL, [(b"ACCEPT-ENCODING", b"  gzip ")], 1000.0)) == b"gzipped"
    assert body_of(store.lookup("", URL, BR, 1000.0)) == b"brotli"
    assert store.lookup("", URL, [], 1000.0) is None  # absent header: a third variant, not stored
    assert store.lookup("", URL, [(b"Accept-Encoding", b"")], 1000.0) is None  # empty differs from absent


def test_a_header_sent_on_several_lines_selects_by_all_of_them(store: Store) -> None:
    vary = (b"accept-language",)
    assert store.store(
        "", URL, vary, [(b"Accept-Language", b"de"), (b"Accept-Language", b"en ")], entry(b"de,en")
    )
    assert (
        body_of(store.lookup("", URL, [(b"accept-language", b"de"), (b"accept-language", b"en")], 0))
        == b"de,en"
    )
    assert store.lookup("", URL, [(b"accept-language", b"de")], 0) is None


def test_new_vary_names_replace_every_old_variant(store: Store) -> None:
    assert store.store("", URL, (b"accept-encoding",), GZIP, entry(b"gzipped"))
    assert store.store("", URL, (b"accept-encoding",), BR, entry(b"brotli"))
    assert store.store("", URL, (b"accept-language",), [(b"Accept-Language", b"fr")], entry(b"french"))
    assert store.lookup("", URL, [*GZIP, (b"Accept-Language", b"fr")], 0) is not None  # by language now
    assert store.lookup("", URL, GZIP, 0) is None
    assert store.stats().entries == 1


def test_invalidate_removes_every_variant(store: Store) -> None:
    store.store("", URL, (b"accept-encoding",), GZIP, entry())
    store.store("", URL, (b"accept-encoding",), BR, entry())
    store.store("", URL + b"/other", (), [], entry())
    assert store.invalidate("", URL) == 2
    assert store.lookup("", URL, GZIP, 0) is None
    assert store.lookup("", URL, BR, 0) is None
    assert store.lookup("", URL + b"/other", [], 0) is not None
    assert store.invalidate("", URL) == 0


def test_purge_by_tag_removes_tagged_entries_of_that_partition_only(store: Store) -> None:
    store.store("", b"http://api.local/users/1", (), [], entry(tags=("users", "user-1")))
    store.store("", b"http://api.local/users/2", (), [], entry(tags=("users",)))
    store.store("", b"http://api.local/orders/1", (), [], entry(tags=("orders",)))
    store.store("tenant-b", b"http://api.local/users/1", (), [], entry(tags=("users",)))
    assert store.purge_tag("", "users") == 2
    assert store.lookup("", b"http://api.local/users/1", [], 0) is None
    assert store.lookup("", b"http://api.local/orders/1", [], 0) is not None
    assert store.lookup("tenant-b", b"http://api.local/users/1", [], 0) is not None
    assert store.purge_tag("", "users") == 0
    assert store.purge_tag("", "user-1") == 0  # its entry went with the first purge


def test_purge_by_prefix_removes_urls_starting_with_it(store: Store) -> None:
    for path in (b"/users/1", b"/users/2?full=1", b"/usersettings", b"/orders/1"):
        store.store("", b"http://api.local" + path, (), [], entry())
    assert store.purge_prefix("", b"http://api.local/users/") == 2
    assert store.lookup("", b"http://api.local/usersettings", [], 0) is not None
    assert store.lookup("", b"http://api.local/orders/1", [], 0) is not None
    assert store.stats().entries == 2


def test_purge_all_of_a_partition_or_everything(store: Store) -> None:
    store.store("a", URL, (), [], entry(tags=("t",)))
    store.store("b", URL, (), [], entry())
    store.store("b", URL + b"/2", (), [], entry())
    assert store.purge_all("b") == 2
    assert store.stats().partitions.keys() == {"a"}
    store.store("b", URL, (), [], entry())
    assert store.purge_all() == 2
    stats = store.stats()
    assert (stats.entries, stats.bytes, stats.partitions) == (0, 0, {})
    assert store.lookup("a", URL, [], 0) is None


def test_least_recently_read_entry_is_evicted_first(tmp_path: Path) -> None:
    probe = Store(tmp_path / "probe", max_size=1 << 20)
    probe.store("", b"http://api.local/0", (), [], entry())
    size = probe.stats().bytes  # every entry below has this size (same URL length and body)
    probe.close()
    store = Store(tmp_path / "cache", max_size=int(size * 4.5))  # room for four
    for i in range(4):  # stored at t = 0, 1, 2, 3: 0 is the oldest
        assert store.store("", b"http://api.local/%d" % i, (), [], entry(t=float(i)))
    assert store.lookup("", b"http://api.local/0", [], 10.0) is not None  # 0 is now the most recent
    assert store.store("", b"http://api.local/4", (), [], entry(t=11.0))
    present = [store.lookup("", b"http://api.local/%d" % i, [], 12.0) is not None for i in range(5)]
    assert present == [True, False, True, True, True]
    stats = store.stats()
    assert (stats.entries, stats.evictions) == (4, 1)
    assert stats.bytes <= stats.max_size
    store.close()


def test_a_new_entry_is_never_its_own_eviction_victim(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache", max_size=2000)
    assert store.store("", b"http://api.local/recent", (), [], entry(b"r" * 1200, t=500.0))
    assert store.store("", b"http://api.local/backdated", (), [], entry(b"b" * 1200, t=1.0))
    assert store.lookup("", b"http://api.local/backdated", [], 600.0) is not None
    assert store.lookup("", b"http://api.local/recent", [], 600.0) is None
    store.close()


def test_a_partition_over_its_quota_evicts_only_its_own_entries(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache", max_size=1 << 20, quotas={"small": 3000})
    for i in range(3):
        assert store.store("big", b"http://api.local/big/%d" % i, (), [], entry(b"B" * 900, t=float(i)))
    for i in range(6):
        assert store.store("small", b"http://api.local/s/%d" % i, (), [], entry(b"s" * 900, t=10.0 + i))
    stats = store.stats()
    assert stats.partitions["small"] <= 3000
    assert stats.partition_entries == {"big": 3, "small": 2}
    assert store.lookup("small", b"http://api.local/s/5", [], 20.0) is not None
    assert store.lookup("small", b"http://api.local/s/0", [], 20.0) is None
    assert all(store.lookup("big", b"http://api.local/big/%d" % i, [], 20.0) for i in range(3))
    store.close()


def test_an_entry_bigger_than_the_cache_or_its_quota_is_not_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache", max_size=10_000, quotas={"tiny": 1000})
    assert not store.store("", URL, (), [], entry(b"x" * 10_000))
    assert not store.store("tiny", URL, (), [], entry(b"x" * 1000))
    assert store.store("", URL, (), [], entry(b"x" * 1000))
    assert store.stats().entries == 1
    store.close()


def test_keys_longer_than_lmdb_allows_are_refused_not_raised(store: Store) -> None:
    long_url = b"http://api.local/" + b"a" * 600
    assert not store.store("", long_url, (), [], entry())
    assert store.lookup("", long_url, [], 0) is None
    assert store.invalidate("", long_url) == 0
    long_vary = [(b"Cookie", b"c" * 500)]
    assert not store.store("", URL, (b"cookie",), long_vary, entry())
    assert not store.store("", URL, (), [], entry(tags=("t" * 600,)))
    assert store.stats().entries == 0


def test_a_corrupt_value_is_a_miss_and_is_deleted(store: Store, tmp_path: Path) -> None:
    assert store.store("", URL, (), [], entry())
    env = acquire(tmp_path / "cache", 1 << 20)  # the process's one environment, as any writer sees it
    try:
        with env.lmdb.begin(write=True) as txn:
            txn.put(b"\x1f" + URL + b"\x00", b"garbage, not an entry", db=env.entries)
        assert store.lookup("", URL, [], 1000.0) is None
        with env.lmdb.begin() as txn:
            assert txn.get(b"\x1f" + URL + b"\x00", db=env.entries) is None
            assert txn.get(b"\x1f" + URL, db=env.variants) is None
    finally:
        release(env)
    stats = store.stats()
    assert (stats.corrupt, stats.entries) == (1, 0)
    assert store.store("", URL, (), [], entry(b"fresh again"))
    assert body_of(store.lookup("", URL, [], 1000.0)) == b"fresh again"


def test_one_environment_per_directory_and_process(tmp_path: Path) -> None:
    first = open_store(tmp_path / "cache", max_size=1 << 20)
    second = open_store(str(tmp_path / "cache") + "/", max_size=1 << 20)
    (tmp_path / "alias").symlink_to(tmp_path / "cache")
    other = Store(tmp_path / "alias", max_size=1 << 20)  # keyed by real path: the same environment
    assert first is second
    assert first._env is other._env
    first.close()
    other.store("", URL, (), [], entry())
    assert second.lookup("", URL, [], 0) is not None  # still open: one holder left
    second.close()
    other.close()
    with pytest.raises(StoreError, match="closed"):
        second.lookup("", URL, [], 0)


def test_a_forked_child_reopens_and_both_see_each_others_writes(store: Store) -> None:
    store.store("", URL, (), [], entry(b"from the parent"))
    pid = os.fork()
    if pid == 0:  # the child uses the Store it inherited: it must reopen, not reuse the parent's handle
        code = 1
        try:
            if body_of(store.lookup("", URL, [], 1000.0)) == b"from the parent":
                code = 0 if store.store("", URL + b"/child", (), [], entry(b"from the child")) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert body_of(store.lookup("", URL + b"/child", [], 1000.0)) == b"from the child"


def test_a_child_forked_while_another_thread_reads_does_not_reopen(store: Store, tmp_path: Path) -> None:
    store.store("", URL, (), [], entry(b"parent's"))
    env = acquire(tmp_path / "cache", 1 << 20)
    reading, done = threading.Event(), threading.Event()

    def read_slowly() -> None:
        with env.transaction(write=False) as txn:
            assert txn.get(b"\x1f" + URL + b"\x00", db=env.entries) is not None
            reading.set()
            done.wait(10)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    assert reading.wait(5)
    pid = os.fork()
    if pid == 0:  # closing the inherited handle would abort the parent's read: the child must refuse
        code = 1
        try:
            store.lookup("", URL, [], 1000.0)
        except StoreError as exc:
            code = 0 if "open the cache" in str(exc) and "after it is forked" in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    done.set()
    reader.join()
    release(env)
    assert os.waitstatus_to_exitcode(status) == 0
    assert body_of(store.lookup("", URL, [], 1000.0)) == b"parent's"


def test_a_path_that_is_a_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError, match=r"file.*not a directory"):
        Store(tmp_path / "file", max_size=1 << 20)


def test_a_damaged_data_file_is_a_store_error_that_says_what_to_delete(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "data.mdb").write_bytes(b"\x00not lmdb" * 2000)
    with pytest.raises(StoreError, match=r"delete data\.mdb and lock\.mdb"):
        Store(tmp_path / "cache", max_size=1 << 20)


def _open_unprivileged(directory: str) -> str:
    """Try to open a Store in a forked child running as nobody (root writes anywhere)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                Store(directory, max_size=1 << 20).close()
                message = "opened"
            except StoreError as exc:
                message = f"StoreError: {exc}"
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def test_an_unwritable_directory_is_a_store_error_naming_it_and_the_fix() -> None:
    with tempfile.TemporaryDirectory() as top:  # under /tmp: nobody may traverse it
        os.chmod(top, 0o755)
        locked = os.path.join(top, "cache")
        os.mkdir(locked)
        os.chmod(locked, 0o555)  # readable, not writable, by anyone but root
        message = _open_unprivileged(locked)
        assert message.startswith("StoreError: ")
        assert locked in message and "not writable" in message and "read-write" in message
        missing = _open_unprivileged(os.path.join(locked, "sub"))
        assert missing.startswith("StoreError: ") and "cannot be created" in missing
        os.chmod(locked, 0o755)
